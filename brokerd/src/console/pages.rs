//! The console's HTML: the login page and the dashboard, rendered on the server with every
//! value escaped; the dashboard's tables are filled and kept live by `assets/console.js`, which
//! writes text nodes only. Static assets are compiled into the binary.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use shared_proto::html::escape;

/// The dashboard's script.
pub const SCRIPT: &str = include_str!("assets/console.js");
/// The console's style sheet.
pub const STYLE: &str = include_str!("assets/console.css");

/// Scripts and styles from the console itself only, and never in a frame: an injected value
/// could not run a script even if it escaped escaping.
const POLICY: &str =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                      frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

/// An HTML response with the console's security headers.
pub fn html(status: StatusCode, body: String) -> Response {
    with_headers(status, "text/html; charset=utf-8", body)
}

/// A static asset.
pub fn asset(content_type: &'static str, body: &'static str) -> Response {
    with_headers(StatusCode::OK, content_type, body.to_owned())
}

/// A response of `content_type` that is never cached, sniffed or framed.
pub fn with_headers(status: StatusCode, content_type: &str, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    let set = |headers: &mut axum::http::HeaderMap, name, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set(headers, header::CONTENT_TYPE, content_type);
    set(headers, header::CACHE_CONTROL, "no-store");
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::CONTENT_SECURITY_POLICY, POLICY);
    // Same-origin requests keep their Origin (no-referrer would make a form's Origin "null").
    set(headers, header::REFERRER_POLICY, "same-origin");
    response
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><link rel=\"icon\" href=\"data:,\">\
         <link rel=\"stylesheet\" href=\"/assets/console.css\"></head>\
         <body>{body}</body></html>\n",
        title = escape(title),
    )
}

/// The login form, with `error` (if any) above it.
pub fn login(node: &str, group: &str, error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=\"error\" id=\"login-error\">{}</p>", escape(e)))
        .unwrap_or_default();
    page(
        &format!("brokerd console: {node}"),
        &format!(
            "<main class=\"login\"><h1>brokerd console</h1><p>Node <b>{node}</b>. Log in as a \
             user of the users file in group <b>{group}</b>.</p>{error}\
             <form method=\"post\" action=\"/login\">\
             <label>User <input name=\"user\" id=\"user\" autocomplete=\"username\" required></label>\
             <label>Password <input name=\"password\" id=\"password\" type=\"password\" \
             autocomplete=\"current-password\" required></label>\
             <button type=\"submit\" id=\"login\">Log in</button></form></main>",
            node = escape(node),
            group = escape(group),
        ),
    )
}

/// The dashboard: its sections, which the script fills from `/api/overview`.
pub fn dashboard(node: &str, epoch: u64, user: &str, csrf: &str) -> String {
    page(
        &format!("brokerd console: {node}"),
        &format!(
            "<header><h1>brokerd console</h1>\
             <span>active node <b id=\"active-node\">{node}</b>, epoch <b>{epoch}</b></span>\
             <span class=\"user\">{user} <button id=\"logout\">Log out</button></span></header>\
             <meta name=\"csrf\" content=\"{csrf}\">\
             <p id=\"status\" class=\"status\">loading…</p>\
             <section><h2>Cluster</h2><p id=\"cluster-stale\" class=\"stale\"></p>\
             <ul id=\"warnings\" class=\"warnings\"></ul>\
             <p id=\"holder\"></p>\
             <table id=\"nodes\"><thead><tr><th>node</th><th>host</th><th>role</th><th>epoch</th>\
             <th>heartbeat age</th><th>since</th><th>reason</th></tr></thead><tbody></tbody></table>\
             </section>\
             <section><h2>Broker</h2><p id=\"broker\"></p></section>\
             <section><h2>Destinations</h2>\
             <table id=\"destinations\"><thead><tr><th>name</th><th>kind</th><th>depth</th>\
             <th>consumers</th><th>enqueued</th><th>dequeued</th><th>in/s</th><th>out/s</th>\
             <th>paged out</th><th>oldest</th><th></th></tr></thead><tbody></tbody></table>\
             </section>\
             <section><h2>Send a test message</h2><form id=\"send\">\
             <label>Destination <input id=\"send-destination\" value=\"/queue/test\" required></label>\
             <label>Body <textarea id=\"send-body\" rows=\"2\">hello from the console</textarea></label>\
             <button type=\"submit\" id=\"send-button\">Send</button>\
             <span id=\"send-result\"></span></form></section>\
             <section id=\"browse\" hidden><h2>Messages on <span id=\"browse-queue\"></span></h2>\
             <p id=\"browse-note\"></p>\
             <table id=\"messages\"><thead><tr><th>id</th><th>time</th><th>persistent</th>\
             <th>priority</th><th>redeliveries</th><th>headers</th><th>body</th></tr></thead>\
             <tbody></tbody></table></section>\
             <section><h2>Scheduled jobs</h2><p id=\"schedules-note\"></p>\
             <table id=\"schedules\"><thead><tr><th>id</th><th>destination</th><th>next due</th>\
             <th>remaining</th><th>cron</th></tr></thead><tbody></tbody></table></section>\
             <script src=\"/assets/console.js\"></script>",
            node = escape(node),
            user = escape(user),
            csrf = escape(csrf),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_values_is_escaped() {
        let page = dashboard("<b>", 3, "\"admin\"", "t");
        assert!(page.contains("&lt;b&gt;"));
        assert!(!page.contains("<b><"));
        assert!(page.contains("&quot;admin&quot;"));
    }
}
