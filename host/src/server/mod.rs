//! `stepgate serve`: alerts in over HTTP, runs out. Alertmanager (or any
//! sender) posts to a hook; the alert is stored before the hook answers, so
//! a restart loses nothing accepted; routes pick the playbook; a repeat of
//! an alert whose run is still open joins that run instead of starting
//! another; runs go at most `max_runs` at once, with a bounded queue in
//! front (full: 503, and the sender retries). Approvers decide over the
//! REST API with their bearer tokens, and parked runs resume at once.
//!
//! Split by concern: [`hooks`] (accepting alerts), [`dispatch`] (routing,
//! dedup, starting and resuming runs), [`slots`] (how many runs execute at
//! once, in all and per playbook), [`schedule`] (routine runs on cron
//! schedules), [`api`] (the REST API and its auth), [`console`] (the web
//! console under `/ui/`), [`slack`] (approvals in Slack), [`metrics`]. Every face decides approvals
//! through [`decide`]: it records the decision and resumes a settled run.

pub mod api;
pub mod console;
pub mod dispatch;
pub mod edge;
pub mod hooks;
pub mod lanes;
pub mod metrics;
pub mod schedule;
pub mod slack;
pub mod slots;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use axum::Router;
use axum::routing::{get, post};
use tokio::sync::mpsc;

use crate::playbook::Playbook;
use crate::routing::Route;
use crate::runtime::Runtime;
use crate::state::inbox::Accepted;

/// A playbook and the runtime (engine) that loaded it.
type Loaded = (Arc<Runtime>, Arc<Playbook>);

/// The runs this process executes now, by id.
type ExecutingSet = Arc<Mutex<HashSet<String>>>;

/// This process executes a run (started or resumed); dropped when the task
/// ends, however it ends.
pub struct Executing {
    set: ExecutingSet,
    run_id: String,
}

impl Drop for Executing {
    fn drop(&mut self) {
        match self.set.lock() {
            Ok(mut set) => set.remove(&self.run_id),
            Err(poisoned) => poisoned.into_inner().remove(&self.run_id),
        };
    }
}

/// What every handler and the dispatcher share.
pub struct Shared {
    /// The runtime and routes in force; a reload swaps them, and what runs
    /// keeps the ones it started with.
    current: RwLock<(Arc<Runtime>, Arc<Vec<Route>>)>,
    /// The config file, for reloads.
    config_path: Option<PathBuf>,
    /// The hooks' bearer token, resolved (SHA-256 of it), if one is set.
    hook_token: RwLock<Option<[u8; 32]>>,
    /// Whether the server listens beyond loopback: then no reload may
    /// take the hook token away.
    exposed: std::sync::atomic::AtomicBool,
    /// Accepted notifications (their alerts) waiting for the dispatcher.
    pub queue: mpsc::Sender<Vec<Accepted>>,
    /// Runs executing at once, in all and per playbook.
    pub slots: slots::Slots,
    /// Runs this process executes now: a trigger to resume one of them
    /// (an approval, a sweep) is left to that execution. The lease cannot
    /// tell two executions in one process apart.
    executing: ExecutingSet,
    pub metrics: metrics::Metrics,
    /// Loaded playbooks, by name (loading is describe() and grant checks).
    playbooks: Mutex<HashMap<String, Loaded>>,
}

impl Shared {
    /// The runtime in force.
    pub fn runtime(&self) -> Arc<Runtime> {
        match self.current.read() {
            Ok(current) => current.0.clone(),
            Err(poisoned) => poisoned.into_inner().0.clone(),
        }
    }

    /// The routes in force.
    pub fn routes(&self) -> Arc<Vec<Route>> {
        match self.current.read() {
            Ok(current) => current.1.clone(),
            Err(poisoned) => poisoned.into_inner().1.clone(),
        }
    }

    /// Reads the config file again and, if it is valid and builds, puts it
    /// in force: routes, playbooks, backends, limits. A bad config changes
    /// nothing and says why. Runs in flight finish with what they started
    /// with; the state store cannot move without a restart.
    pub fn reload(&self) -> Result<(), String> {
        let path = self
            .config_path
            .as_ref()
            .ok_or("this server was not started from a config file")?;
        let config = crate::config::Config::load(path).map_err(|e| e.to_string())?;
        let old = self.runtime();
        if (&config.state.path, config.state.url.is_some())
            != (&old.config.state.path, old.config.state.url.is_some())
        {
            return Err(
                "the new config moves the state store; restart the server to do that".into(),
            );
        }
        let routes = config.routes().map_err(|e| e.to_string())?;
        pinned(&config).map_err(|e| e.to_string())?;
        // The same state store (and so the same host in its leases): runs
        // stored before the reload still belong to this host.
        let mut runtime =
            Runtime::with_state(config, old.state.clone()).map_err(|e| e.to_string())?;
        // Runs started before the reload park with those started after.
        runtime
            .engine
            .share_stop_token(old.engine.stop_token().clone());
        let hook_token = hook_token(&runtime)?;
        // Checked and swapped under the token's lock: `serve` marks the
        // server exposed before it reads the token, so either it sees the
        // new (missing) token and refuses to start, or this sees it exposed.
        let mut token = self
            .hook_token
            .write()
            .map_err(|_| "the hook token's lock is poisoned; restart the server")?;
        if hook_token.is_none() && self.exposed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err("the new config has no server.hook_token, and this server listens beyond loopback: anyone who reaches it could start runs. Keep `hook_token` under [server]".into());
        }
        if let Ok(mut current) = self.current.write() {
            *current = (Arc::new(runtime), Arc::new(routes));
        }
        *token = hook_token;
        drop(token);
        if let Ok(mut playbooks) = self.playbooks.lock() {
            playbooks.clear();
        }
        tracing::info!("config reloaded from {}", path.display());
        Ok(())
    }

    /// Waits for a slot to run playbook `name` in: its own limit (as the
    /// config in force says) and the server's.
    pub async fn slot(&self, name: &str) -> Result<slots::Slot, slots::Closed> {
        let limit = self
            .runtime()
            .config
            .playbooks
            .get(name)
            .and_then(|p| p.max_runs);
        self.slots.take(name, limit).await
    }

    /// Marks run `id` as executing in this process, until the mark is
    /// dropped; `None` if it already is.
    pub fn executing(&self, id: &str) -> Option<Executing> {
        let inserted = match self.executing.lock() {
            Ok(mut set) => set.insert(id.to_owned()),
            Err(poisoned) => poisoned.into_inner().insert(id.to_owned()),
        };
        inserted.then(|| Executing {
            set: self.executing.clone(),
            run_id: id.to_owned(),
        })
    }

    /// The runtime in force and playbook `name` loaded by it (once per
    /// runtime: a playbook is bound to the engine that compiled it).
    pub async fn playbook(&self, name: &str) -> Result<Loaded, String> {
        let runtime = self.runtime();
        let cached = self.playbooks.lock().ok().and_then(|m| {
            m.get(name)
                .filter(|(by, _)| Arc::ptr_eq(by, &runtime))
                .map(|(_, p)| p.clone())
        });
        if let Some(p) = cached {
            return Ok((runtime, p));
        }
        let loaded = Arc::new(runtime.playbook(name).await.map_err(|e| e.to_string())?);
        if let Ok(mut m) = self.playbooks.lock() {
            m.insert(name.to_owned(), (runtime.clone(), loaded.clone()));
        }
        Ok((runtime, loaded))
    }
}

/// One decision on an approval request by a principal already
/// authenticated: a bearer token (the REST API), a console session, a
/// Slack user mapped to a principal.
pub struct Decision<'a> {
    pub principal: &'a str,
    pub role: crate::state::approvals::Role,
    pub run_id: &'a str,
    pub seq: u64,
    pub approve: bool,
    pub reason: &'a str,
    /// The plan digest (8+ hex digits) the approver was shown.
    pub plan: Option<&'a str>,
}

/// The one path every face of the server decides through: the state
/// store's rules (role, groups, quorum, no self-approval, the plan digest)
/// decide whether it counts; a decision that settles the request resumes
/// the run here, in the background. The approver never executes anything.
pub async fn decide(
    shared: &Arc<Shared>,
    d: Decision<'_>,
) -> Result<crate::state::approvals::ApprovalStatus, crate::state::approvals::DecisionError> {
    let status = shared
        .runtime()
        .state
        .decide_approval_as(
            d.principal,
            d.role,
            d.run_id,
            d.seq,
            d.approve,
            d.reason,
            d.plan,
        )
        .await?;
    if !matches!(
        status,
        crate::state::approvals::ApprovalStatus::Pending { .. }
    ) {
        dispatch::resume(shared.clone(), d.run_id.to_owned());
    }
    // Slack's messages of the request say who decided, whatever the face.
    let (shared, run_id, seq) = (shared.clone(), d.run_id.to_owned(), d.seq);
    tokio::spawn(async move { slack::refresh(&shared, &run_id, seq).await });
    Ok(status)
}

/// A principal's approval of a run's whole plan, from any face: recorded
/// (and audited); the write the run waits on is decided by it at once, and
/// a settled one resumes the run. Returns the plan and where that write
/// stands.
pub async fn approve_plan(
    shared: &Arc<Shared>,
    principal: &str,
    role: crate::state::approvals::Role,
    run_id: &str,
    digest: &str,
    reason: &str,
) -> Result<
    (
        crate::state::plans::RunPlan,
        crate::state::approvals::ApprovalStatus,
    ),
    crate::state::approvals::DecisionError,
> {
    let state = shared.runtime().state.clone();
    let plan = state
        .approve_plan(principal, role, run_id, digest, reason)
        .await?;
    let status = state
        .approval_status(run_id, plan.from_seq)
        .await?
        .ok_or_else(|| crate::state::approvals::DecisionError::Unknown {
            run_id: run_id.to_owned(),
            seq: plan.from_seq,
        })?;
    if !matches!(
        status,
        crate::state::approvals::ApprovalStatus::Pending { .. }
    ) {
        dispatch::resume(shared.clone(), run_id.to_owned());
    }
    let (shared, run, seq) = (shared.clone(), run_id.to_owned(), plan.from_seq);
    tokio::spawn(async move { slack::refresh(&shared, &run, seq).await });
    Ok((plan, status))
}

/// The token of an `Authorization: Bearer TOKEN` header, trimmed, if any.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The SHA-256 of the hooks' token of `runtime`'s config, if it sets one.
fn hook_token(runtime: &Runtime) -> Result<Option<[u8; 32]>, String> {
    let Some(secret) = &runtime.config.server.hook_token else {
        return Ok(None);
    };
    let token = secret
        .resolve(
            "server.hook_token",
            &runtime.config.base_dir,
            &runtime.backends.redactor(),
        )
        .map_err(|e| e.to_string())?;
    if token.trim().is_empty() {
        // An empty token would match a request without one.
        return Err("the token is empty; set a long random value".to_owned());
    }
    use sha2::Digest;
    Ok(Some(sha2::Sha256::digest(token.trim().as_bytes()).into()))
}

impl Shared {
    /// Whether a hook request carries the hooks' token (when one is set).
    pub fn hook_allowed(&self, headers: &axum::http::HeaderMap) -> bool {
        let expected = match self.hook_token.read() {
            Ok(token) => *token,
            Err(poisoned) => *poisoned.into_inner(),
        };
        let Some(expected) = expected else {
            return true;
        };
        let given = bearer(headers).unwrap_or("");
        use sha2::Digest;
        let given: [u8; 32] = sha2::Sha256::digest(given.trim().as_bytes()).into();
        given == expected
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
    #[error("server.hook_token: {0}")]
    HookToken(String),
    #[error(
        "refusing to serve: `[engine] require_pinned` is on and these playbooks pin no component digest: {0}. Add `sha256 = \"…\"` under each [playbooks.NAME] (`stepgate inspect NAME` prints it)"
    )]
    Unpinned(String),
    #[error(
        "refusing to listen on {addr} without a hook token: anyone who reaches this address could start runs. Set `hook_token` under [server] (e.g. hook_token = {{ env = \"STEPGATE_HOOK_TOKEN\" }}), or listen on 127.0.0.1"
    )]
    HookTokenRequired { addr: String },
}

/// With `[engine] require_pinned`, every playbook must pin its component.
fn pinned(config: &crate::config::Config) -> Result<(), ServeError> {
    if !config.engine.require_pinned {
        return Ok(());
    }
    let unpinned: Vec<&str> = config
        .playbooks
        .iter()
        .filter(|(_, pb)| pb.sha256.is_none())
        .map(|(name, _)| name.as_str())
        .collect();
    if unpinned.is_empty() {
        Ok(())
    } else {
        Err(ServeError::Unpinned(unpinned.join(", ")))
    }
}

/// A server ready to serve: its router and the dispatcher behind it.
pub struct Server {
    pub shared: Arc<Shared>,
    router: Router,
    settings: crate::config::ServerConfig,
}

impl Server {
    /// Builds the server and starts its dispatcher and sweeper: alerts
    /// accepted before a restart are dispatched first.
    pub async fn start(runtime: Arc<Runtime>) -> Result<Server, ServeError> {
        Server::start_from(runtime, None).await
    }

    /// [`Server::start`] for a config read from `config_path`, which
    /// SIGHUP and `POST /-/reload` read again.
    pub async fn start_from(
        runtime: Arc<Runtime>,
        config_path: Option<PathBuf>,
    ) -> Result<Server, ServeError> {
        let routes = runtime.config.routes()?;
        pinned(&runtime.config)?;
        let settings = runtime.config.server.clone();
        let (queue, inbox) = mpsc::channel(settings.queue);
        let token = hook_token(&runtime).map_err(ServeError::HookToken)?;
        let shared = Arc::new(Shared {
            current: RwLock::new((runtime, Arc::new(routes))),
            config_path,
            hook_token: RwLock::new(token),
            exposed: std::sync::atomic::AtomicBool::new(false),
            queue,
            slots: slots::Slots::new(settings.max_runs),
            executing: Arc::new(Mutex::new(HashSet::new())),
            metrics: metrics::Metrics::default(),
            playbooks: Mutex::new(HashMap::new()),
        });
        let state = shared.runtime().state.clone();
        let (runs, alerts) = state.take_back().await?;
        if runs + alerts > 0 {
            tracing::info!(
                runs,
                alerts,
                "took back what this instance's previous process held; resuming and dispatching it now"
            );
        }
        let leftover = state.undispatched(std::time::Duration::ZERO).await?;
        tokio::spawn(dispatch::dispatcher(shared.clone(), leftover, inbox));
        tokio::spawn(dispatch::sweeper(shared.clone(), settings.sweep_every));
        tokio::spawn(schedule::scheduler(shared.clone()));
        let body_limit = usize::try_from(settings.body_limit).unwrap_or(usize::MAX);
        let router = Router::new()
            .route("/hooks/alertmanager", post(hooks::alertmanager))
            .route("/hooks/generic", post(hooks::generic))
            .route("/hooks/slack/interactions", post(slack::interactions))
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(api::ready))
            .route("/metrics", get(api::metrics))
            .route("/api/runs", get(api::runs).post(api::start_run))
            .route("/api/runs/{id}", get(api::show_run))
            .route("/api/approvals", get(api::approvals))
            .route("/api/runs/{id}/approvals/{seq}", post(api::decide))
            .route("/api/runs/{id}/plan", post(api::approve_plan))
            .route("/api/runs/{id}/resolve/{seq}", post(api::resolve))
            .route("/api/runs/{id}/cancel", post(api::cancel))
            .route("/-/reload", post(api::reload))
            .merge(console::routes())
            .layer(axum::extract::DefaultBodyLimit::max(body_limit))
            .layer(axum::middleware::from_fn_with_state(
                edge::BodyLimits {
                    timeout: settings.request_timeout,
                    limit: body_limit,
                },
                edge::whole_body,
            ))
            .with_state(shared.clone());
        Ok(Server {
            shared,
            router,
            settings,
        })
    }

    /// Serves on `listener` until `shutdown` completes, then stops taking
    /// requests.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let addr = listener.local_addr().map_err(ServeError::Serve)?;
        if !addr.ip().is_loopback() {
            // Marked before the token is looked at, so that a reload in
            // between cannot take the token away unseen.
            self.shared
                .exposed
                .store(true, std::sync::atomic::Ordering::SeqCst);
            let has_token = self
                .shared
                .hook_token
                .read()
                .map(|t| t.is_some())
                .unwrap_or(false);
            if !has_token {
                return Err(ServeError::HookTokenRequired {
                    addr: addr.to_string(),
                });
            }
        }
        let listener = edge::Guarded::new(
            listener,
            self.settings.max_connections,
            self.settings.idle_timeout,
        );
        edge::serve(
            listener,
            self.router,
            self.settings.request_timeout,
            shutdown,
        )
        .await;
        Ok(())
    }

    /// After [`Server::serve`] returned, for a process that stops: every
    /// run parks at its next call (and resumes from its journal at the
    /// next start); waits up to `grace` for them. A run still busy after
    /// it (a long backend call) keeps its lease until that lapses.
    pub async fn park_runs(shared: &Shared, grace: std::time::Duration) -> bool {
        shared.runtime().engine.stop_token().raise();
        shared.slots.drained(grace).await
    }
}
