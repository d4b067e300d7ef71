//! The console's listener and its lifetime: bound with the STOMP listeners once the node is
//! active ([`bind`]), served once the broker core runs ([`Bound::serve`]), and closed when the
//! [`Console`] is dropped, which the broker does as soon as it is asked to stop. Its
//! connections are served within [`Limits`] ([`connections`]).

use super::connections::{self, Limits};
use super::{api, cluster, session, Parts, Shared};
use crate::server::BindError;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tracing::{info, Instrument};

/// Largest request body the console takes (a test message, a login form).
const MAX_BODY: usize = 64 * 1024;

/// The console's listener, bound and not yet served.
#[derive(Debug)]
pub struct Bound {
    listener: TcpListener,
}

/// Binds the console's address; a failure is a configuration error, as for `--listen`.
pub async fn bind(addr: &str) -> Result<Bound, BindError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| BindError::Bind {
            addr: addr.to_owned(),
            source,
        })?;
    Ok(Bound { listener })
}

/// The console being served; dropping it closes the listener and ends its connections once
/// their current request is answered.
#[derive(Debug)]
pub struct Console {
    /// Its drop resolves the server's graceful shutdown.
    _stop: oneshot::Sender<()>,
}

impl Bound {
    /// The bound address (differs from the configured one when its port was 0).
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves the console from `parts`, its connections within `limits`, until the returned
    /// [`Console`] is dropped.
    pub fn serve(self, parts: Parts, limits: Limits) -> Console {
        let addr = self.listener.local_addr().ok();
        let shared = Arc::new(Shared {
            cluster: parts.shared.clone().map(cluster::follow),
            parts,
            sessions: session::Sessions::default(),
            next_conn: Default::default(),
        });
        let app = Router::new()
            .route("/", get(api::index))
            .route("/login", get(api::login_page).post(api::login))
            .route("/logout", post(api::logout))
            .route("/api/overview", get(api::overview))
            .route("/api/browse", get(api::browse))
            .route("/api/purge", post(api::purge))
            .route("/api/send", post(api::send))
            .route("/metrics", get(api::scrape))
            .route("/assets/console.js", get(api::script))
            .route("/assets/console.css", get(api::style))
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .with_state(shared);
        let (stop, stopped) = oneshot::channel::<()>();
        let stopped = async move {
            // Only ever dropped, with the Console.
            let _ = stopped.await;
        };
        tokio::spawn(
            async move {
                info!(
                    ?addr,
                    max_connections = limits.connections,
                    "console serving"
                );
                connections::serve(self.listener, app, limits, stopped).await;
                info!(?addr, "console closed");
            }
            .in_current_span(),
        );
        Console { _stop: stop }
    }
}
