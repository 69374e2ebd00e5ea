-- The schema of the first hub releases. `IF NOT EXISTS` everywhere: databases created before
-- the schema was versioned (user_version 0) already have these tables and adopt version 1.
CREATE TABLE IF NOT EXISTS orgs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    slug TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS projects (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id INTEGER NOT NULL REFERENCES orgs(id),
    slug TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (org_id, slug)
);
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id INTEGER NOT NULL REFERENCES projects(id),
    title TEXT NOT NULL,
    description TEXT,
    status TEXT NOT NULL,
    priority INTEGER NOT NULL,
    type TEXT NOT NULL,
    channel TEXT NOT NULL,
    payload TEXT NOT NULL,
    outputs TEXT NOT NULL,
    source_type TEXT, source_id TEXT, source_name TEXT,
    assignee_type TEXT, assignee_id TEXT, assignee_name TEXT,
    lease_expires TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    completed_at TEXT,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS tasks_project_status ON tasks (project_id, status);
CREATE INDEX IF NOT EXISTS tasks_updated ON tasks (updated_at);
CREATE INDEX IF NOT EXISTS tasks_lease ON tasks (status, lease_expires);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id INTEGER NOT NULL REFERENCES tasks(id),
    actor_type TEXT, actor_id TEXT, actor_name TEXT,
    parts TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_task ON messages (task_id);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    type TEXT NOT NULL,
    task_id INTEGER,
    created_at TEXT NOT NULL
);
