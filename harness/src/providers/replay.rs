//! The replay model: serves a recorded [`Cassette`] over real HTTP on loopback
//! ([`ReplayServer`]). A request whose normalised form was not recorded is answered with HTTP 400,
//! which the client does not retry: the run ends as `error`. There is no live fallback.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::json;

use crate::cassette::{match_key_scrubbed, Cassette};
use crate::transcript::Scrubber;

struct Shared {
    cassette: Cassette,
    /// The canary scrubber the cassette was recorded with (see `cassette`).
    scrubber: Option<Arc<Scrubber>>,
    misses: Mutex<Vec<String>>,
}

/// A running replay server. Dropping it stops the server.
pub struct ReplayServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl ReplayServer {
    pub async fn start(cassette: Cassette) -> std::io::Result<Self> {
        Self::start_scrubbed(cassette, None).await
    }

    /// Like [`start`](Self::start), scrubbing each request's canaries before matching it, as
    /// a recorder given the same scrubber did.
    pub async fn start_scrubbed(
        cassette: Cassette,
        scrubber: Option<Arc<Scrubber>>,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            cassette,
            scrubber,
            misses: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(handle))
            .route("/chat/completions", post(handle))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(Self {
            addr,
            shared,
            shutdown: Some(tx),
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Match keys of requests that had no recorded response.
    pub fn misses(&self) -> Vec<String> {
        match self.shared.misses.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

impl Drop for ReplayServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

async fn handle(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let scrubber = shared.scrubber.as_deref();
    if let Some(resp) = shared.cassette.lookup_scrubbed(&body, scrubber) {
        return axum::Json(resp.clone()).into_response();
    }
    let key = match_key_scrubbed(&body, scrubber).unwrap_or_else(|| "not a chat request".into());
    match shared.misses.lock() {
        Ok(mut g) => g.push(key.clone()),
        Err(p) => p.into_inner().push(key.clone()),
    }
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": {
            "message": format!("replay: no recorded response matches this request (key {}); re-record the cassette", &key[..key.len().min(16)]),
            "type": "replay_miss", "param": null, "code": "replay_miss"
        }})),
    )
        .into_response()
}
