//! HTTP routes of the hub: thin handlers that parse, call a `store` function on the database
//! thread, and answer JSON (every response, including errors, 404 and 405).

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use chrono::Utc;
use serde_json::{Value, json};
use tower::ServiceBuilder;
use tower_http::timeout::TimeoutLayer;

use super::HubConfig;
use super::api_error::ApiError;
use super::guard::{self, Guard, HostPolicy, OriginPolicy, TokenPolicy};
use super::state::AppState;
use super::store::{self, Action, HubActor, Scope, StoreError};
use crate::types::{TaskId, format_timestamp};

/// Longest excerpt of a framework error body carried into the JSON error.
const MAX_ERROR_EXCERPT: usize = 4096;

type ApiResult = Result<Response, ApiError>;

fn ok(status: StatusCode, v: Value) -> ApiResult {
    Ok((status, Json(v)).into_response())
}

/// Reads a header as Latin-1 text (what the `ats` CLI's runtime sends).
fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    let v = headers.get(name)?;
    let s: String = v.as_bytes().iter().map(|&b| char::from(b)).collect();
    let s = s.trim().to_owned();
    (!s.is_empty()).then_some(s)
}

fn actor(headers: &HeaderMap) -> HubActor {
    HubActor {
        actor_type: header_text(headers, "x-actor-type"),
        id: header_text(headers, "x-actor-id"),
        name: header_text(headers, "x-actor-name"),
    }
}

type Params = Option<Path<HashMap<String, String>>>;

fn scope(params: &Params) -> Scope {
    match params {
        Some(Path(p)) => match (p.get("org"), p.get("project")) {
            (Some(org), Some(project)) => Scope::Named {
                org: org.clone(),
                project: project.clone(),
            },
            _ => Scope::Default,
        },
        None => Scope::Default,
    }
}

fn param(params: &Params, key: &str) -> String {
    params
        .as_ref()
        .and_then(|Path(p)| p.get(key).cloned())
        .unwrap_or_default()
}

/// The task id of the path: decimal, else 404.
fn task_id(params: &Params) -> Result<TaskId, ApiError> {
    let raw = param(params, "id");
    raw.parse::<TaskId>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("task {raw:?} not found")))
}

fn query_map(q: Option<String>) -> HashMap<String, String> {
    url::form_urlencoded::parse(q.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

async fn health() -> ApiResult {
    ok(
        StatusCode::OK,
        json!({ "status": "ok", "timestamp": format_timestamp(&Utc::now()) }),
    )
}

async fn stats(State(st): State<AppState>) -> ApiResult {
    let now = Utc::now();
    let s = st
        .db
        .call(move |c| Ok((store::stats(c, now)?, vec![])))
        .await?;
    ok(StatusCode::OK, json!(s))
}

async fn create_task(
    State(st): State<AppState>,
    params: Params,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let scope = scope(&params);
    let actor = actor(&headers);
    let body = store::parse_body(&body)?;
    let now = Utc::now();
    let task = st
        .db
        .call(move |c| {
            let ch = store::create_task(c, &scope, &actor, &body, now)?;
            Ok((ch.task, ch.events))
        })
        .await?;
    ok(StatusCode::CREATED, json!({ "task": task }))
}

async fn list_tasks(
    State(st): State<AppState>,
    params: Params,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let scope = scope(&params);
    let q = query_map(q);
    let (tasks, count) = st
        .db
        .call(move |c| Ok((store::list_tasks(c, &scope, &q)?, vec![])))
        .await?;
    ok(StatusCode::OK, json!({ "tasks": tasks, "count": count }))
}

/// `GET /tasks/{id}`: the task with its newest [`store::TASK_MESSAGES_SHOWN`] messages (oldest
/// first) and `message_count`, the number it has in all.
async fn get_task(State(st): State<AppState>, params: Params) -> ApiResult {
    let scope = scope(&params);
    let id = task_id(&params)?;
    let (task, message_count) = st
        .db
        .call(move |c| Ok((store::get_task(c, &scope, id)?, vec![])))
        .await?;
    let mut task = json!(task);
    if let Some(obj) = task.as_object_mut() {
        obj.insert("message_count".to_owned(), json!(message_count));
    }
    ok(StatusCode::OK, json!({ "task": task }))
}

/// The shape shared by every request that changes one task (update, claim, the transitions):
/// scope, id, actor and JSON body from the request, `op` on the database thread, the task after
/// the change in the response (its events are broadcast by the database thread).
async fn change_task<F>(
    st: AppState,
    params: Params,
    headers: HeaderMap,
    body: Bytes,
    op: F,
) -> ApiResult
where
    F: FnOnce(
            &dyn store::sql::Sql,
            &Scope,
            TaskId,
            &HubActor,
            &serde_json::Map<String, Value>,
            chrono::DateTime<Utc>,
        ) -> Result<store::Change, StoreError>
        + Send
        + 'static,
{
    let scope = scope(&params);
    let id = task_id(&params)?;
    let actor = actor(&headers);
    let body = store::parse_body(&body)?;
    let now = Utc::now();
    let task = st
        .db
        .call(move |c| {
            let ch = op(c, &scope, id, &actor, &body, now)?;
            Ok((ch.task, ch.events))
        })
        .await?;
    ok(StatusCode::OK, json!({ "task": task }))
}

async fn update_task(
    State(st): State<AppState>,
    params: Params,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    change_task(st, params, headers, body, store::update_task).await
}

async fn claim(
    State(st): State<AppState>,
    params: Params,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    change_task(st, params, headers, body, store::claim).await
}

async fn transition(
    st: AppState,
    params: Params,
    headers: HeaderMap,
    body: Bytes,
    action: Action,
) -> ApiResult {
    change_task(
        st,
        params,
        headers,
        body,
        move |c, scope, id, actor, body, now| {
            store::transition(c, scope, id, action, actor, body, now)
        },
    )
    .await
}

macro_rules! transition_handler {
    ($name:ident, $action:expr) => {
        async fn $name(
            State(st): State<AppState>,
            params: Params,
            headers: HeaderMap,
            body: Bytes,
        ) -> ApiResult {
            transition(st, params, headers, body, $action).await
        }
    };
}

transition_handler!(complete, Action::Complete);
transition_handler!(fail, Action::Fail);
transition_handler!(reject, Action::Reject);
transition_handler!(cancel, Action::Cancel);
transition_handler!(reopen, Action::Reopen);

async fn post_message(
    State(st): State<AppState>,
    params: Params,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let scope = scope(&params);
    let id = task_id(&params)?;
    let actor = actor(&headers);
    let body = store::parse_body(&body)?;
    let now = Utc::now();
    let msg = st
        .db
        .call(move |c| store::post_message(c, &scope, id, &actor, &body, now))
        .await?;
    ok(StatusCode::CREATED, json!({ "message": msg }))
}

/// `GET /tasks/{id}/messages[?limit=&offset=]`: oldest first, all of them by default (a task
/// holds at most [`store::MAX_MESSAGES_PER_TASK`]); `count` is the total.
async fn list_messages(
    State(st): State<AppState>,
    params: Params,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let scope = scope(&params);
    let id = task_id(&params)?;
    let q = query_map(q);
    let (msgs, count) = st
        .db
        .call(move |c| Ok((store::list_messages(c, &scope, id, &q)?, vec![])))
        .await?;
    ok(StatusCode::OK, json!({ "messages": msgs, "count": count }))
}

async fn list_orgs(State(st): State<AppState>) -> ApiResult {
    let orgs = st.db.call(|c| Ok((store::list_orgs(c)?, vec![]))).await?;
    ok(StatusCode::OK, json!({ "organizations": orgs }))
}

async fn create_org(State(st): State<AppState>, body: Bytes) -> ApiResult {
    let body = store::parse_body(&body)?;
    let now = Utc::now();
    let org = st
        .db
        .call(move |c| Ok((store::create_org(c, &body, now)?, vec![])))
        .await?;
    ok(StatusCode::CREATED, json!({ "organization": org }))
}

async fn get_org(State(st): State<AppState>, params: Params) -> ApiResult {
    let org = param(&params, "org");
    let org = st
        .db
        .call(move |c| Ok((store::get_org(c, &org)?, vec![])))
        .await?;
    ok(StatusCode::OK, json!({ "organization": org }))
}

async fn update_org(State(st): State<AppState>, params: Params, body: Bytes) -> ApiResult {
    let org = param(&params, "org");
    let body = store::parse_body(&body)?;
    let now = Utc::now();
    let org = st
        .db
        .call(move |c| Ok((store::update_org(c, &org, &body, now)?, vec![])))
        .await?;
    ok(StatusCode::OK, json!({ "organization": org }))
}

async fn list_projects(State(st): State<AppState>, params: Params) -> ApiResult {
    let org = param(&params, "org");
    let projects = st
        .db
        .call(move |c| Ok((store::list_projects(c, &org)?, vec![])))
        .await?;
    ok(StatusCode::OK, json!({ "projects": projects }))
}

async fn create_project(State(st): State<AppState>, params: Params, body: Bytes) -> ApiResult {
    let org = param(&params, "org");
    let body = store::parse_body(&body)?;
    let now = Utc::now();
    let p = st
        .db
        .call(move |c| Ok((store::create_project(c, &org, &body, now)?, vec![])))
        .await?;
    ok(StatusCode::CREATED, json!({ "project": p }))
}

async fn get_project(State(st): State<AppState>, params: Params) -> ApiResult {
    let org = param(&params, "org");
    let project = param(&params, "project");
    let p = st
        .db
        .call(move |c| Ok((store::get_project(c, &org, &project)?, vec![])))
        .await?;
    ok(StatusCode::OK, json!({ "project": p }))
}

async fn update_project(State(st): State<AppState>, params: Params, body: Bytes) -> ApiResult {
    let org = param(&params, "org");
    let project = param(&params, "project");
    let body = store::parse_body(&body)?;
    let now = Utc::now();
    let p = st
        .db
        .call(move |c| {
            Ok((
                store::update_project(c, &org, &project, &body, now)?,
                vec![],
            ))
        })
        .await?;
    ok(StatusCode::OK, json!({ "project": p }))
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route for {}", uri.path()),
    )
}

/// Task routes, mounted unscoped and under `/orgs/{org}/projects/{project}`.
fn task_routes(prefix: &str) -> Router<AppState> {
    Router::new()
        .route(
            &format!("{prefix}/tasks"),
            get(list_tasks).post(create_task),
        )
        .route(
            &format!("{prefix}/tasks/{{id}}"),
            get(get_task).patch(update_task),
        )
        .route(&format!("{prefix}/tasks/{{id}}/claim"), post(claim))
        .route(&format!("{prefix}/tasks/{{id}}/complete"), post(complete))
        .route(&format!("{prefix}/tasks/{{id}}/fail"), post(fail))
        .route(&format!("{prefix}/tasks/{{id}}/reject"), post(reject))
        .route(&format!("{prefix}/tasks/{{id}}/cancel"), post(cancel))
        .route(&format!("{prefix}/tasks/{{id}}/reopen"), post(reopen))
        .route(
            &format!("{prefix}/tasks/{{id}}/messages"),
            get(list_messages).post(post_message),
        )
}

/// The whole application, outside in: path normalization, JSON errors, the request timeout
/// (408), the concurrency limit (503 when every slot is taken), the host, origin and
/// content-type guard (403, 415), the body limit (413), the routes.
pub(crate) fn app(state: AppState, config: &HubConfig, listen: std::net::SocketAddr) -> Router {
    let inner = Router::new()
        .route("/health", get(health))
        // Static segments win over `{id}` in axum's router, so this is matched first.
        .route("/tasks/stats", get(stats))
        .merge(task_routes(""))
        .merge(task_routes("/orgs/{org}/projects/{project}"))
        .route("/orgs", get(list_orgs).post(create_org))
        .route("/orgs/{org}", get(get_org).patch(update_org))
        .route(
            "/orgs/{org}/projects",
            get(list_projects).post(create_project),
        )
        .route(
            "/orgs/{org}/projects/{project}",
            get(get_project).patch(update_project),
        )
        .route("/ws", get(super::ws::upgrade))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(state);
    Router::new()
        .fallback_service(inner)
        .layer(middleware::from_fn_with_state(
            Guard {
                origins: OriginPolicy::new(&config.allowed_origins),
                hosts: HostPolicy::new(listen.ip().is_loopback(), &config.allowed_hosts),
                token: TokenPolicy::new(config.token.clone()),
            },
            guard::guard,
        ))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the hub is busy: too many requests in progress; retry",
                    )
                }))
                .load_shed()
                .concurrency_limit(config.max_concurrent_requests.max(1)),
        )
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            config.request_timeout,
        ))
        .layer(middleware::map_response(json_errors))
        .layer(middleware::map_request(normalize_path))
}

/// Collapses repeated slashes (`//tasks` from a base URL with a trailing slash) and drops a
/// trailing slash.
async fn normalize_path(mut req: Request) -> Request {
    let uri = req.uri();
    let path = uri.path();
    if !path.contains("//") && (path.len() <= 1 || !path.ends_with('/')) {
        return req;
    }
    let mut clean = String::with_capacity(path.len());
    for c in path.chars() {
        if c == '/' && clean.ends_with('/') {
            continue;
        }
        clean.push(c);
    }
    if clean.len() > 1 && clean.ends_with('/') {
        clean.pop();
    }
    if let Some(q) = uri.query() {
        clean.push('?');
        clean.push_str(q);
    }
    let mut parts = uri.clone().into_parts();
    if let Ok(pq) = clean.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(new) = Uri::from_parts(parts) {
            *req.uri_mut() = new;
        }
    }
    req
}

/// Turns any non-JSON error answer of the framework (405, 413, rejected upgrade, ...) into
/// `{"error": "..."}` with the same status and headers.
async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = match axum::body::to_bytes(body, MAX_ERROR_EXCERPT).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_owned(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        match status {
            StatusCode::METHOD_NOT_ALLOWED => "method not allowed for this route".to_owned(),
            StatusCode::REQUEST_TIMEOUT => "the request took too long".to_owned(),
            s => s.canonical_reason().unwrap_or("error").to_owned(),
        }
    } else {
        text
    };
    let body = json!({ "error": message }).to_string();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}
