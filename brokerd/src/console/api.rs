//! The console's routes: pages, the JSON the dashboard polls, its actions, and `/metrics`.
//!
//! Every route but `/login`, the assets and `/metrics` needs a session ([`session`]); actions
//! (POST) also need the session's CSRF token and a same-origin request.

use super::session::{self, Session};
use super::{cluster, core_calls, metrics, pages, Shared};
use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use shared_proto::control::FromBroker;
use shared_proto::destinations::Destination;
use std::sync::Arc;

/// Scheduled jobs listed on the dashboard, at most.
const SCHEDULES_SHOWN: u32 = 50;

type Handle = State<Arc<Shared>>;

/// A JSON answer that is never cached.
fn json(status: StatusCode, value: &impl Serialize) -> Response {
    let body = serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    pages::with_headers(status, "application/json", body)
}

fn failed(status: StatusCode, message: impl Into<String>) -> Response {
    #[derive(Serialize)]
    struct Failure {
        error: String,
    }
    json(
        status,
        &Failure {
            error: message.into(),
        },
    )
}

/// The request's session, or the answer for a request without one.
fn session_of(shared: &Shared, headers: &HeaderMap) -> Result<Session, Response> {
    shared
        .sessions
        .current(headers, &shared.parts.group)
        .ok_or_else(|| failed(StatusCode::UNAUTHORIZED, "log in first (/login)"))
}

/// [`session_of`] for a POST: also its CSRF token and origin.
fn acting_session(shared: &Shared, headers: &HeaderMap) -> Result<Session, Response> {
    let session = session_of(shared, headers)?;
    if !session::same_origin(headers, Some(&session)) {
        return Err(failed(
            StatusCode::FORBIDDEN,
            "refused: the request lacks this session's token or comes from another origin",
        ));
    }
    Ok(session)
}

/// `GET /`: the dashboard, or the way to the login page.
pub async fn index(State(shared): Handle, headers: HeaderMap) -> Response {
    match shared.sessions.current(&headers, &shared.parts.group) {
        Some(session) => pages::html(
            StatusCode::OK,
            pages::dashboard(
                &shared.parts.node,
                shared.parts.epoch,
                &session.user,
                &session.csrf,
            ),
        ),
        None => Redirect::to("/login").into_response(),
    }
}

/// `GET /login`.
pub async fn login_page(State(shared): Handle) -> Response {
    pages::html(
        StatusCode::OK,
        pages::login(&shared.parts.node, &shared.parts.group, None),
    )
}

/// The login form's fields.
#[derive(Deserialize)]
pub struct Credentials {
    user: String,
    password: String,
}

/// `POST /login`: a session cookie and the dashboard, or the form again with why not.
pub async fn login(
    State(shared): Handle,
    headers: HeaderMap,
    Form(form): Form<Credentials>,
) -> Response {
    let parts = &shared.parts;
    let refuse =
        |status, why: &str| pages::html(status, pages::login(&parts.node, &parts.group, Some(why)));
    if !session::same_origin(&headers, None) {
        return refuse(
            StatusCode::FORBIDDEN,
            "refused: a login from another origin",
        );
    }
    match (shared.sessions)
        .login(&parts.security, &parts.group, &form.user, &form.password)
        .await
    {
        Ok((token, _)) => {
            tracing::info!(user = %form.user, "console login");
            let mut response = Redirect::to("/").into_response();
            if let Ok(cookie) = session::set_cookie(&token).parse() {
                response.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            response
        }
        Err(why) => {
            tracing::info!(user = %form.user, reason = %why, "console login refused");
            refuse(StatusCode::UNAUTHORIZED, &why.to_string())
        }
    }
}

/// `POST /logout`.
pub async fn logout(State(shared): Handle, headers: HeaderMap) -> Response {
    if let Err(refused) = acting_session(&shared, &headers) {
        return refused;
    }
    shared.sessions.logout(&headers);
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(cookie) = session::clear_cookie().parse() {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// What the dashboard polls.
#[derive(Serialize)]
struct Overview {
    node: String,
    epoch: u64,
    cluster: Option<cluster::Shown>,
    connections: u64,
    memory_bytes: u64,
    memory_limit_bytes: u64,
    destinations: Vec<Destination>,
    schedules: Option<shared_proto::schedules::Listing>,
    schedules_error: Option<String>,
    now_unix_ms: u64,
}

/// `GET /api/overview`: the cluster, the broker, its destinations and scheduled jobs.
pub async fn overview(State(shared): Handle, headers: HeaderMap) -> Response {
    if let Err(refused) = session_of(&shared, &headers) {
        return refused;
    }
    let parts = &shared.parts;
    let Some(figures) = core_calls::figures(&shared).await else {
        return failed(
            StatusCode::SERVICE_UNAVAILABLE,
            "the broker core did not answer: this node is stopping",
        );
    };
    let now_unix_ms = shared_proto::unix_ms();
    let cluster = shared.cluster.as_ref().map(|view| view.shown(now_unix_ms));
    let (schedules, schedules_error) = match parts.schedules.clone().list(0, SCHEDULES_SHOWN).await
    {
        FromBroker::Schedules { listing, .. } => (Some(listing), None),
        FromBroker::CallFailed { message, .. } => (None, Some(message)),
        other => (None, Some(format!("unexpected answer: {other:?}"))),
    };
    let mut destinations = figures.destinations;
    destinations.sort_by(|a, b| a.name.cmp(&b.name));
    json(
        StatusCode::OK,
        &Overview {
            node: parts.node.clone(),
            epoch: parts.epoch,
            cluster,
            connections: parts.stats.connections(),
            memory_bytes: figures.counts.memory_bytes,
            memory_limit_bytes: parts.memory_limit,
            destinations,
            schedules,
            schedules_error,
            now_unix_ms,
        },
    )
}

/// A queue named in a query or a body.
#[derive(Deserialize)]
pub struct QueueName {
    queue: String,
}

/// `GET /api/browse?queue=NAME`: its first messages.
pub async fn browse(
    State(shared): Handle,
    headers: HeaderMap,
    Query(query): Query<QueueName>,
) -> Response {
    let session = match session_of(&shared, &headers) {
        Ok(session) => session,
        Err(refused) => return refused,
    };
    #[derive(Serialize)]
    struct Browse {
        queue: String,
        limit: u32,
        messages: Vec<core_calls::Browsed>,
    }
    match core_calls::browse(&shared, &session.access, &query.queue).await {
        Ok(messages) => json(
            StatusCode::OK,
            &Browse {
                queue: query.queue,
                limit: core_calls::BROWSE_LIMIT,
                messages,
            },
        ),
        Err(why) => failed(StatusCode::CONFLICT, why),
    }
}

/// `POST /api/purge` `{"queue": NAME}`.
pub async fn purge(
    State(shared): Handle,
    headers: HeaderMap,
    Json(body): Json<QueueName>,
) -> Response {
    let session = match acting_session(&shared, &headers) {
        Ok(session) => session,
        Err(refused) => return refused,
    };
    match core_calls::purge(&shared, &body.queue).await {
        Ok(removed) => {
            tracing::info!(user = %session.user, queue = %body.queue, removed, "console purged a queue");
            json(StatusCode::OK, &serde_json::json!({ "removed": removed }))
        }
        Err(why) => failed(StatusCode::CONFLICT, why),
    }
}

/// A test message.
#[derive(Deserialize)]
pub struct TestMessage {
    destination: String,
    body: String,
}

/// `POST /api/send` `{"destination": D, "body": TEXT}`: answered once the message is durable.
pub async fn send(
    State(shared): Handle,
    headers: HeaderMap,
    Json(message): Json<TestMessage>,
) -> Response {
    let session = match acting_session(&shared, &headers) {
        Ok(session) => session,
        Err(refused) => return refused,
    };
    let sent = core_calls::send(
        &shared,
        &session.access,
        &message.destination,
        &message.body,
    );
    match sent.await {
        Ok(()) => {
            tracing::info!(user = %session.user, destination = %message.destination, "console sent a test message");
            json(StatusCode::OK, &serde_json::json!({ "sent": true }))
        }
        Err(why) => failed(StatusCode::CONFLICT, why),
    }
}

/// `GET /metrics`: open, numbers only (README: Metrics).
pub async fn scrape(State(shared): Handle) -> Response {
    match metrics::scrape(&shared).await {
        Ok(text) => pages::with_headers(StatusCode::OK, metrics::CONTENT_TYPE, text),
        Err(why) => failed(StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

/// `GET /assets/console.js`.
pub async fn script() -> Response {
    pages::asset("text/javascript; charset=utf-8", pages::SCRIPT)
}

/// `GET /assets/console.css`.
pub async fn style() -> Response {
    pages::asset("text/css; charset=utf-8", pages::STYLE)
}
