//! Console logins: users of the users file in the console group, checked with the same
//! [`Access::authenticate`] as a STOMP CONNECT (argon2id), and sessions held by a random token
//! in an HttpOnly, SameSite=Strict cookie.
//!
//! Requests that change something (purge, send, logout) must carry the session's own CSRF token
//! in [`CSRF_HEADER`] (the page's script reads it from the page), and an `Origin`, when the
//! browser sends one, must name the host the request was sent to: SameSite already keeps other
//! sites' requests from carrying the cookie; the token holds where SameSite is not enforced.

use crate::auth::{Access, Security};
use crate::reload::Current;
use axum::http::{header, HeaderMap};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The session cookie's name.
pub const COOKIE: &str = "brokerd_console";

/// The header a state-changing request carries the session's CSRF token in.
pub const CSRF_HEADER: &str = "x-console-token";

/// How long a login lasts.
pub const LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// Sessions open at once, at most: a login past it is refused (expired ones are forgotten first).
pub const MAX_SESSIONS: usize = 1024;

/// A logged-in user.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    pub csrf: String,
    pub access: Access,
    expires: Instant,
}

/// The open sessions, by token. A mutex held for a map lookup only: the console's own state,
/// never the broker's.
#[derive(Debug, Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, Session>>,
}

/// Why a login failed, in words for the login page (which user exists is not told).
#[derive(Debug, thiserror::Error)]
pub enum LoginRefused {
    #[error("wrong user or password")]
    Credentials,
    #[error("user {0:?} is not in the console group {1:?}")]
    NotInGroup(String, String),
    #[error("too many console sessions are open ({MAX_SESSIONS}); try again later")]
    Full,
    #[error("the random source failed: {0}")]
    Random(String),
}

impl Sessions {
    /// Checks `user` and `password` against the users file and the console `group`; the new
    /// session's cookie token and its session.
    pub async fn login(
        &self,
        security: &Current<Security>,
        group: &str,
        user: &str,
        password: &str,
    ) -> Result<(String, Session), LoginRefused> {
        let access = Access::authenticate(security, Some(user), Some(password))
            .await
            .map_err(|_| LoginRefused::Credentials)?;
        if !access.in_group(group) {
            return Err(LoginRefused::NotInGroup(user.into(), group.into()));
        }
        let token = random_token()?;
        let session = Session {
            user: user.to_owned(),
            csrf: random_token()?,
            access,
            expires: Instant::now() + LIFETIME,
        };
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        open.retain(|_, s| s.expires > now);
        if open.len() >= MAX_SESSIONS {
            return Err(LoginRefused::Full);
        }
        open.insert(token.clone(), session.clone());
        Ok((token, session))
    }

    /// The session of a request's cookie, if it is open and its user still in `group` (a
    /// reload of the users file may have taken them out).
    pub fn current(&self, headers: &HeaderMap, group: &str) -> Option<Session> {
        let token = cookie(headers)?;
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let session = open.get(token)?;
        if session.expires <= Instant::now() || !session.access.in_group(group) {
            open.remove(token);
            return None;
        }
        Some(session.clone())
    }

    /// Ends the session of a request's cookie.
    pub fn logout(&self, headers: &HeaderMap) {
        if let Some(token) = cookie(headers) {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            open.remove(token);
        }
    }
}

/// The `Set-Cookie` value that holds `token`.
pub fn set_cookie(token: &str) -> String {
    format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        LIFETIME.as_secs()
    )
}

/// The `Set-Cookie` value that ends the session cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Whether a state-changing request may go on: the session's CSRF token in [`CSRF_HEADER`],
/// and an `Origin`, if any, naming the request's own host.
pub fn same_origin(headers: &HeaderMap, session: Option<&Session>) -> bool {
    let origin_ok = match (headers.get(header::ORIGIN), headers.get(header::HOST)) {
        (None, _) => true,
        (Some(origin), Some(host)) => {
            let origin = origin.to_str().unwrap_or("");
            let host = host.to_str().unwrap_or("");
            origin
                .split_once("://")
                .is_some_and(|(_, authority)| !host.is_empty() && authority == host)
        }
        (Some(_), None) => false,
    };
    let token_ok = session.is_none_or(|s| {
        headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| constant_time_eq(v.as_bytes(), s.csrf.as_bytes()))
    });
    origin_ok && token_ok
}

fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// 32 random bytes from the operating system, in hex.
fn random_token() -> Result<String, LoginRefused> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| LoginRefused::Random(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Compares tokens without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let map = headers(&[("cookie", "a=1; brokerd_console=abc; b=2")]);
        assert_eq!(cookie(&map), Some("abc"));
        assert_eq!(cookie(&headers(&[("cookie", "a=1")])), None);
    }

    #[test]
    fn another_origin_is_refused() {
        let ok = headers(&[
            ("host", "127.0.0.1:8161"),
            ("origin", "http://127.0.0.1:8161"),
        ]);
        assert!(same_origin(&ok, None));
        let evil = headers(&[
            ("host", "127.0.0.1:8161"),
            ("origin", "http://evil.example"),
        ]);
        assert!(!same_origin(&evil, None));
        assert!(same_origin(&headers(&[("host", "h:1")]), None));
    }

    #[test]
    fn tokens_are_random_hex() {
        let (a, b) = (random_token().unwrap(), random_token().unwrap());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(constant_time_eq(a.as_bytes(), a.as_bytes()));
        assert!(!constant_time_eq(a.as_bytes(), b.as_bytes()));
    }
}
