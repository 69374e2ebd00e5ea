//! Organizations and projects.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::sql::{Sql, SqlRow, query_opt, vals};
use super::*;

fn check_slug(slug: &str) -> Result<(), StoreError> {
    let ok = !slug.is_empty()
        && slug.len() <= MAX_SLUG_LEN
        && slug
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(bad(format!(
            "invalid slug {slug:?}: use 1 to {MAX_SLUG_LEN} letters, digits, '-', '_' or '.'"
        )))
    }
}

fn org_json(row: &SqlRow) -> Result<Value, StoreError> {
    Ok(json!({
        "id": row.int(0)?,
        "slug": row.text(1)?,
        "name": row.text(2)?,
        "created_at": row.text(3)?,
        "updated_at": row.text(4)?,
    }))
}

const ORG_COLS: &str = "id, slug, name, created_at, updated_at";

/// `GET /orgs`.
pub fn list_orgs(conn: &dyn Sql) -> Result<Vec<Value>, StoreError> {
    conn.query(&format!("SELECT {ORG_COLS} FROM orgs ORDER BY id"), &[])?
        .iter()
        .map(org_json)
        .collect()
}

/// `GET /orgs/{org}`.
pub fn get_org(conn: &dyn Sql, slug: &str) -> Result<Value, StoreError> {
    query_opt(
        conn,
        &format!("SELECT {ORG_COLS} FROM orgs WHERE slug = ?1"),
        vals![slug],
    )?
    .map(|r| org_json(&r))
    .transpose()?
    .ok_or_else(|| StoreError::NotFound(format!("organization {slug} not found")))
}

/// `POST /orgs` `{"slug", "name"}` (409 when the slug exists).
pub fn create_org(
    conn: &dyn Sql,
    body: &Map<String, Value>,
    now: DateTime<Utc>,
) -> Result<Value, StoreError> {
    let slug = opt_string(body, "slug")?.ok_or_else(|| bad("`slug` is required"))?;
    check_slug(&slug)?;
    let name = opt_string(body, "name")?.unwrap_or_else(|| slug.clone());
    if get_org(conn, &slug).is_ok() {
        return Err(StoreError::Conflict(format!(
            "organization {slug} already exists"
        )));
    }
    let ts = format_timestamp(&now);
    conn.execute(
        "INSERT INTO orgs (slug, name, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)",
        vals![slug.as_str(), name, ts],
    )?;
    get_org(conn, &slug)
}

/// `PATCH /orgs/{org}` `{"slug"?, "name"?}`.
pub fn update_org(
    conn: &dyn Sql,
    slug: &str,
    body: &Map<String, Value>,
    now: DateTime<Utc>,
) -> Result<Value, StoreError> {
    get_org(conn, slug)?;
    let new_slug = opt_string(body, "slug")?;
    let name = opt_string(body, "name")?;
    if new_slug.is_none() && name.is_none() {
        return Err(bad("nothing to update: give slug or name"));
    }
    let ts = format_timestamp(&now);
    if let Some(n) = &name {
        conn.execute(
            "UPDATE orgs SET name = ?2, updated_at = ?3 WHERE slug = ?1",
            vals![slug, n, ts.as_str()],
        )?;
    }
    let mut current = slug.to_owned();
    if let Some(ns) = new_slug {
        check_slug(&ns)?;
        if ns != slug && get_org(conn, &ns).is_ok() {
            return Err(StoreError::Conflict(format!(
                "organization {ns} already exists"
            )));
        }
        conn.execute(
            "UPDATE orgs SET slug = ?2, updated_at = ?3 WHERE slug = ?1",
            vals![slug, ns.as_str(), ts],
        )?;
        current = ns;
    }
    get_org(conn, &current)
}

fn org_id(conn: &dyn Sql, slug: &str) -> Result<i64, StoreError> {
    query_opt(conn, "SELECT id FROM orgs WHERE slug = ?1", vals![slug])?
        .map(|r| r.int(0))
        .transpose()?
        .ok_or_else(|| StoreError::NotFound(format!("organization {slug} not found")))
}

const PROJECT_COLS: &str = "p.id, p.slug, p.name, p.description, p.created_at, p.updated_at, \
     o.slug, (SELECT COUNT(*) FROM tasks t WHERE t.project_id = p.id AND t.status = 'pending'), \
     (SELECT COUNT(*) FROM tasks t WHERE t.project_id = p.id AND t.status = 'in_progress'), \
     (SELECT COUNT(*) FROM tasks t WHERE t.project_id = p.id)";

fn project_json(row: &SqlRow) -> Result<Value, StoreError> {
    Ok(json!({
        "id": row.int(0)?,
        "slug": row.text(1)?,
        "name": row.text(2)?,
        "description": row.opt_text(3)?,
        "created_at": row.text(4)?,
        "updated_at": row.text(5)?,
        "org_slug": row.text(6)?,
        "pending_count": row.int(7)?,
        "in_progress_count": row.int(8)?,
        "total_count": row.int(9)?,
    }))
}

/// `GET /orgs/{org}/projects` (counts always included).
pub fn list_projects(conn: &dyn Sql, org: &str) -> Result<Vec<Value>, StoreError> {
    let oid = org_id(conn, org)?;
    conn.query(
        &format!(
            "SELECT {PROJECT_COLS} FROM projects p JOIN orgs o ON o.id = p.org_id
             WHERE p.org_id = ?1 ORDER BY p.id"
        ),
        vals![oid],
    )?
    .iter()
    .map(project_json)
    .collect()
}

/// `GET /orgs/{org}/projects/{project}`.
pub fn get_project(conn: &dyn Sql, org: &str, project: &str) -> Result<Value, StoreError> {
    let oid = org_id(conn, org)?;
    query_opt(
        conn,
        &format!(
            "SELECT {PROJECT_COLS} FROM projects p JOIN orgs o ON o.id = p.org_id
             WHERE p.org_id = ?1 AND p.slug = ?2"
        ),
        vals![oid, project],
    )?
    .map(|r| project_json(&r))
    .transpose()?
    .ok_or_else(|| StoreError::NotFound(format!("project {org}/{project} not found")))
}

/// `POST /orgs/{org}/projects` `{"slug", "name", "description"?}` (409 when the slug exists).
pub fn create_project(
    conn: &dyn Sql,
    org: &str,
    body: &Map<String, Value>,
    now: DateTime<Utc>,
) -> Result<Value, StoreError> {
    let oid = org_id(conn, org)?;
    let slug = opt_string(body, "slug")?.ok_or_else(|| bad("`slug` is required"))?;
    check_slug(&slug)?;
    let name = opt_string(body, "name")?.unwrap_or_else(|| slug.clone());
    let description = opt_string(body, "description")?;
    if get_project(conn, org, &slug).is_ok() {
        return Err(StoreError::Conflict(format!(
            "project {org}/{slug} already exists"
        )));
    }
    let ts = format_timestamp(&now);
    conn.execute(
        "INSERT INTO projects (org_id, slug, name, description, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
        vals![oid, slug.as_str(), name, description, ts],
    )?;
    get_project(conn, org, &slug)
}

/// `PATCH /orgs/{org}/projects/{project}` `{"slug"?, "name"?, "description"?}`.
pub fn update_project(
    conn: &dyn Sql,
    org: &str,
    project: &str,
    body: &Map<String, Value>,
    now: DateTime<Utc>,
) -> Result<Value, StoreError> {
    let pid = project_id(
        conn,
        &Scope::Named {
            org: org.to_owned(),
            project: project.to_owned(),
        },
    )?;
    let new_slug = opt_string(body, "slug")?;
    let name = opt_string(body, "name")?;
    let description = opt_string(body, "description")?;
    if new_slug.is_none() && name.is_none() && description.is_none() {
        return Err(bad("nothing to update: give slug, name or description"));
    }
    let ts = format_timestamp(&now);
    if let Some(n) = &name {
        conn.execute(
            "UPDATE projects SET name = ?2, updated_at = ?3 WHERE id = ?1",
            vals![pid, n, ts.as_str()],
        )?;
    }
    if let Some(d) = &description {
        conn.execute(
            "UPDATE projects SET description = ?2, updated_at = ?3 WHERE id = ?1",
            vals![pid, d, ts.as_str()],
        )?;
    }
    let mut current = project.to_owned();
    if let Some(ns) = new_slug {
        check_slug(&ns)?;
        if ns != project && get_project(conn, org, &ns).is_ok() {
            return Err(StoreError::Conflict(format!(
                "project {org}/{ns} already exists"
            )));
        }
        conn.execute(
            "UPDATE projects SET slug = ?2, updated_at = ?3 WHERE id = ?1",
            vals![pid, ns.as_str(), ts.as_str()],
        )?;
        current = ns;
    }
    get_project(conn, org, &current)
}
