-- The hub's schema on PostgreSQL: the SQLite schema's columns and types, so the same store
-- functions run on both. Timestamps are RFC 3339 text in the "C" collation, which orders them
-- as time whatever the database's locale. Events keep their frame: every hub instance reads
-- the table in id order and forwards the frames to its WebSockets.
CREATE TABLE orgs (
    id BIGSERIAL PRIMARY KEY,
    slug TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL,
    updated_at TEXT COLLATE "C" NOT NULL
);
CREATE TABLE projects (
    id BIGSERIAL PRIMARY KEY,
    org_id BIGINT NOT NULL REFERENCES orgs(id),
    slug TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT,
    created_at TEXT COLLATE "C" NOT NULL,
    updated_at TEXT COLLATE "C" NOT NULL,
    UNIQUE (org_id, slug)
);
CREATE TABLE tasks (
    id BIGSERIAL PRIMARY KEY,
    project_id BIGINT NOT NULL REFERENCES projects(id),
    title TEXT NOT NULL,
    description TEXT,
    status TEXT NOT NULL,
    priority BIGINT NOT NULL,
    type TEXT NOT NULL,
    channel TEXT NOT NULL,
    payload TEXT NOT NULL,
    outputs TEXT NOT NULL,
    source_type TEXT, source_id TEXT, source_name TEXT,
    assignee_type TEXT, assignee_id TEXT, assignee_name TEXT,
    lease_expires TEXT COLLATE "C",
    created_at TEXT COLLATE "C" NOT NULL,
    updated_at TEXT COLLATE "C" NOT NULL,
    completed_at TEXT COLLATE "C",
    reason TEXT
);
CREATE INDEX tasks_project_status ON tasks (project_id, status);
CREATE INDEX tasks_updated ON tasks (updated_at);
CREATE INDEX tasks_lease ON tasks (status, lease_expires);
CREATE TABLE messages (
    id BIGSERIAL PRIMARY KEY,
    task_id BIGINT NOT NULL REFERENCES tasks(id),
    actor_type TEXT, actor_id TEXT, actor_name TEXT,
    parts TEXT NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL
);
CREATE INDEX messages_task ON messages (task_id);
CREATE TABLE events (
    id BIGSERIAL PRIMARY KEY,
    type TEXT NOT NULL,
    task_id BIGINT,
    channel TEXT NOT NULL,
    task_type TEXT NOT NULL,
    frame TEXT NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL
);
