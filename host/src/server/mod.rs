//! `stepgate serve`: alerts in over HTTP, runs out. Alertmanager (or any
//! sender) posts to a hook; the alert is stored before the hook answers, so
//! a restart loses nothing accepted; routes pick the playbook; a repeat of
//! an alert whose run is still open joins that run instead of starting
//! another; runs go at most `max_runs` at once, with a bounded queue in
//! front (full: 503, and the sender retries). Approvers decide over the
//! REST API with their bearer tokens, and parked runs resume at once.
//!
//! Split by concern: [`hooks`] (accepting alerts), [`dispatch`] (routing,
//! dedup, starting and resuming runs), [`api`] (the REST API and its
//! auth), [`metrics`].

pub mod api;
pub mod dispatch;
pub mod hooks;
pub mod metrics;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::{get, post};
use tokio::sync::{Semaphore, mpsc};

use crate::playbook::Playbook;
use crate::routing::Route;
use crate::runtime::Runtime;
use crate::state::inbox::Accepted;

/// What every handler and the dispatcher share.
pub struct Shared {
    pub runtime: Arc<Runtime>,
    pub routes: Vec<Route>,
    /// Accepted alerts waiting for the dispatcher.
    pub queue: mpsc::Sender<Accepted>,
    /// Runs at once.
    pub runs: Arc<Semaphore>,
    pub metrics: metrics::Metrics,
    /// Loaded playbooks, by name (loading is describe() and grant checks).
    playbooks: Mutex<HashMap<String, Arc<Playbook>>>,
}

impl Shared {
    /// The playbook `name`, loaded once.
    pub async fn playbook(&self, name: &str) -> Result<Arc<Playbook>, String> {
        if let Some(p) = self
            .playbooks
            .lock()
            .ok()
            .and_then(|m| m.get(name).cloned())
        {
            return Ok(p);
        }
        let loaded = Arc::new(
            self.runtime
                .playbook(name)
                .await
                .map_err(|e| e.to_string())?,
        );
        if let Ok(mut m) = self.playbooks.lock() {
            m.insert(name.to_owned(), loaded.clone());
        }
        Ok(loaded)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("the server stopped: {0}")]
    Serve(std::io::Error),
}

/// A server ready to serve: its router and the dispatcher behind it.
pub struct Server {
    pub shared: Arc<Shared>,
    router: Router,
}

impl Server {
    /// Builds the server and starts its dispatcher and sweeper: alerts
    /// accepted before a restart are dispatched first.
    pub async fn start(runtime: Arc<Runtime>) -> Result<Server, ServeError> {
        let routes = runtime.config.routes()?;
        let settings = runtime.config.server.clone();
        let (queue, inbox) = mpsc::channel(settings.queue);
        let shared = Arc::new(Shared {
            runtime,
            routes,
            queue,
            runs: Arc::new(Semaphore::new(settings.max_runs)),
            metrics: metrics::Metrics::default(),
            playbooks: Mutex::new(HashMap::new()),
        });
        let leftover = shared.runtime.state.undispatched().await?;
        tokio::spawn(dispatch::dispatcher(shared.clone(), leftover, inbox));
        tokio::spawn(dispatch::sweeper(shared.clone(), settings.sweep_every));
        let router = Router::new()
            .route("/hooks/alertmanager", post(hooks::alertmanager))
            .route("/hooks/generic", post(hooks::generic))
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(api::ready))
            .route("/metrics", get(api::metrics))
            .route("/api/runs", get(api::runs).post(api::start_run))
            .route("/api/runs/{id}", get(api::show_run))
            .route("/api/approvals", get(api::approvals))
            .route("/api/runs/{id}/approvals/{seq}", post(api::decide))
            .route("/api/runs/{id}/resolve/{seq}", post(api::resolve))
            .with_state(shared.clone());
        Ok(Server { shared, router })
    }

    /// Serves on `listener` until `shutdown` completes, then stops taking
    /// requests; runs in flight keep their leases until they end.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        axum::serve(listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(ServeError::Serve)
    }
}
