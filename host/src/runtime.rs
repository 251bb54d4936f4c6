//! The runtime: a config turned into an engine, a linker, backends and
//! loaded playbooks. The CLI (and later the server) holds one of these.

use std::path::Path;
use std::sync::Arc;

use wasmtime::component::Linker;

use crate::backends::Backends;
use crate::config::{Config, Limits};
use crate::engine::Engine;
use crate::gate::Gates;
use crate::playbook::{self, LoadError, Playbook, PlaybookSpec};
use crate::run::{self, RunData, RunReport, RunRequest};
use crate::scope::Scope;
use crate::state::StateStore;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "no playbook `{name}` in {config}, and no component file at that path (configured playbooks: {known})"
    )]
    UnknownPlaybook {
        name: String,
        config: String,
        known: String,
    },
    #[error("playbook `{name}`: bad gate policy: {message}")]
    Gates { name: String, message: String },
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("config {config}: {source}")]
    Backends {
        config: String,
        source: crate::backends::BuildError,
    },
}

/// A run that could not be resumed.
#[derive(Debug, thiserror::Error)]
pub enum ResumeFailed {
    #[error(transparent)]
    Resume(#[from] run::ResumeError),
    #[error(transparent)]
    Load(#[from] RuntimeError),
}

/// The most writes a whole plan lists.
const MAX_PLANNED: usize = 100;
/// The largest arguments (JSON bytes) of a write a whole plan lists.
const MAX_PLANNED_BYTES: usize = 16 * 1024;

pub struct Runtime {
    pub config: Config,
    pub engine: Engine,
    linker: Linker<RunData>,
    pub backends: Arc<Backends>,
    /// Runs, journals, audit log, built-in flags.
    pub state: Arc<StateStore>,
}

impl Runtime {
    pub fn new(config: Config) -> Result<Runtime, RuntimeError> {
        Runtime::with_backends_from(config, None, Backends::from_config)
    }

    /// A runtime for a command that runs one playbook at a time and exits
    /// (`stepgate run`, `resume`, `sweep`, a decision's `--wait`):
    /// instances are allocated on demand. The pooling allocator pays where
    /// runs come and go in one long-lived process (`serve`); for a single
    /// run, reserving and guarding its slots (and the kernel walking the
    /// thousands of mappings that leaves) cost more than the run's calls.
    pub fn for_one_run(mut config: Config) -> Result<Runtime, RuntimeError> {
        config.engine.pooling = false;
        Runtime::new(config)
    }

    /// A runtime for `config` on an existing state store (a reload: the
    /// store, and the host its leases name, stay the same).
    pub fn with_state(config: Config, state: Arc<StateStore>) -> Result<Runtime, RuntimeError> {
        Runtime::with_backends_from(config, Some(state), Backends::from_config)
    }

    fn with_backends_from(
        config: Config,
        state: Option<Arc<StateStore>>,
        build: impl FnOnce(&Config, Arc<StateStore>) -> Result<Backends, crate::backends::BuildError>,
    ) -> Result<Runtime, RuntimeError> {
        let max_memory = config
            .playbooks
            .values()
            .map(|p| config.limits_for(p).memory)
            .chain([config.limits.over(Limits::default()).memory])
            .max()
            .unwrap_or(Limits::default().memory);
        let engine = Engine::new(&config.engine, max_memory).map_err(LoadError::from)?;
        let linker = playbook::linker(&engine)?;
        let state = match state {
            Some(state) => state,
            None => Arc::new(
                config
                    .state_store()
                    .map_err(|source| RuntimeError::Backends {
                        config: config.source.display().to_string(),
                        source: source.into(),
                    })?,
            ),
        };
        let backends =
            Arc::new(
                build(&config, state.clone()).map_err(|source| RuntimeError::Backends {
                    config: config.source.display().to_string(),
                    source,
                })?,
            );
        Ok(Runtime {
            config,
            engine,
            linker,
            backends,
            state,
        })
    }

    /// A runtime that reaches nothing: no backend is built (no secret is
    /// resolved, no connection made). Scenarios and replays bring their
    /// own answers.
    pub fn offline(config: Config) -> Result<Runtime, RuntimeError> {
        // Its state store is a scratch file, never opened unless used: no
        // state URL (a secret) is resolved.
        let scratch = Arc::new(StateStore::new(
            std::env::temp_dir().join(format!("stepgate-offline-{}.db", std::process::id())),
        ));
        let runtime =
            Runtime::with_backends_from(config, Some(scratch), |_, _| Ok(Backends::default()))?;
        Ok(runtime)
    }

    /// Replaces the backends (tests, embedders).
    pub fn with_backends(mut self, backends: Backends) -> Runtime {
        self.backends = Arc::new(backends);
        self
    }

    /// Loads a playbook by config name, or a bare component by path (with
    /// no grants and the default gates).
    pub async fn playbook(&self, name_or_path: &str) -> Result<Playbook, RuntimeError> {
        self.playbook_from(name_or_path, None).await
    }

    /// The component of playbook `name_or_path`, when loading it would
    /// compile it (it is not in the compile cache), so a caller can say
    /// why the first load takes seconds.
    pub fn needs_compiling(&self, name_or_path: &str) -> Option<std::path::PathBuf> {
        let path = self.spec(name_or_path).ok()?.path;
        let bytes = std::fs::read(&path).ok()?;
        (!self.engine.cache().holds(&bytes)).then_some(path)
    }

    /// [`Runtime::playbook`], with its component read from `component`
    /// instead (a new build of a configured playbook, with its grants).
    pub async fn playbook_from(
        &self,
        name_or_path: &str,
        component: Option<&Path>,
    ) -> Result<Playbook, RuntimeError> {
        let mut spec = self.spec(name_or_path)?;
        if let Some(component) = component {
            spec.path = component.to_owned();
        }
        Ok(playbook::load(&self.engine, &self.linker, spec).await?)
    }

    /// What every component must be, with `sha256` pinned for this one.
    fn pin(&self, sha256: Option<String>) -> crate::playbook::Pin {
        crate::playbook::Pin {
            sha256,
            required: self.config.engine.require_pinned,
            // Checked at config load.
            signing_keys: self
                .config
                .engine
                .signing_keys
                .iter()
                .filter_map(|(name, key)| {
                    Some((name.clone(), crate::config::verifying_key(key).ok()?))
                })
                .collect(),
        }
    }

    fn spec(&self, name_or_path: &str) -> Result<PlaybookSpec, RuntimeError> {
        let spec = match self.config.playbooks.get(name_or_path) {
            Some(pb) => PlaybookSpec {
                name: name_or_path.to_owned(),
                path: self.config.resolve(&pb.component),
                pin: self.pin(pb.sha256.clone()),
                scope: Scope::new(name_or_path, &pb.grants, &self.config),
                gates: Gates::from_config(&pb.gates)
                    .map_err(|message| RuntimeError::Gates {
                        name: name_or_path.to_owned(),
                        message,
                    })?
                    .with_quorum(pb.quorum)
                    .with_timeout(pb.approval_timeout),
                guard: self.config.guard.clone(),
                limits: self.config.limits_for(pb),
            },
            None if Path::new(name_or_path).is_file() => {
                let path = Path::new(name_or_path).to_owned();
                let name = playbook::name_from_path(&path);
                PlaybookSpec {
                    scope: Scope::none(&name),
                    name,
                    path,
                    pin: self.pin(None),
                    gates: Gates::default(),
                    guard: self.config.guard.clone(),
                    limits: self.config.limits.over(Limits::default()),
                }
            }
            None => {
                let known: Vec<&str> = self.config.playbooks.keys().map(String::as_str).collect();
                return Err(RuntimeError::UnknownPlaybook {
                    name: name_or_path.to_owned(),
                    config: self.config.source.display().to_string(),
                    known: if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    },
                });
            }
        };
        Ok(spec)
    }

    /// Continues a recorded run that is still `running` (the host that ran
    /// it stopped): see [`run::resume`].
    /// `approver: None` answers approvals from the state store's records
    /// (the run parks again on one still pending).
    pub async fn resume(
        &self,
        run_id: &str,
        approver: Option<Arc<dyn crate::gate::Approver>>,
        progress: Box<dyn crate::journal::Progress>,
    ) -> Result<RunReport, ResumeFailed> {
        let record = self
            .state
            .run(run_id)
            .await
            .map_err(run::ResumeError::from)?
            .ok_or_else(|| run::ResumeError::Unknown(run_id.to_owned()))?;
        let playbook = self.playbook(&record.playbook).await?;
        let approver = approver.unwrap_or_else(|| {
            Arc::new(crate::approvals::StoredApprover::new(
                self.state.clone(),
                &record.started_by,
            ))
        });
        let report = run::resume(
            &self.engine,
            &playbook,
            self.backends.clone(),
            self.state.clone(),
            run_id,
            approver,
            progress,
        )
        .await?;
        self.plan_ahead(&report).await;
        Ok(report)
    }

    /// Runs a loaded playbook once.
    pub async fn run(&self, playbook: &Playbook, request: RunRequest) -> RunReport {
        let report = run::run(
            &self.engine,
            playbook,
            self.backends.clone(),
            Some(self.state.clone()),
            request,
        )
        .await;
        self.plan_ahead(&report).await;
        report
    }

    /// When `report` is of a live run parked on a write: a dry run of the
    /// rest of it (its journal replayed, the parked write and every later
    /// one simulated, reads made for real) lists the writes it would go on
    /// to make, kept as the run's whole plan for approvers to approve as
    /// one. Once per request and plan; a step-mode run has none. A failure
    /// costs only the whole plan (logged): each write still asks.
    pub async fn plan_ahead(&self, report: &RunReport) {
        let run::RunEnd::Stopped(run::Stopped::Parked { seq, .. }) = &report.end else {
            return;
        };
        if report.mode != crate::gate::Mode::Live {
            return;
        }
        if let Err(why) = self.plan_ahead_of(&report.run_id, *seq).await {
            tracing::warn!(run = %report.run_id, "no whole plan for the write #{seq}: {why}");
        }
    }

    async fn plan_ahead_of(&self, run_id: &str, seq: u64) -> Result<(), String> {
        let state = &self.state;
        let record = state
            .run(run_id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the run is gone")?;
        if record.step_mode {
            return Ok(());
        }
        let Some(request) = state
            .approval_request(run_id, seq)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(());
        };
        if state
            .plan_at(run_id, seq, &request.plan_digest)
            .await
            .map_err(|e| e.to_string())?
            .is_some()
        {
            return Ok(());
        }
        let alert = serde_json::from_value(record.alert.clone()).map_err(|e| e.to_string())?;
        let playbook = self
            .playbook(&record.playbook)
            .await
            .map_err(|e| e.to_string())?;
        let journal = state.journal(run_id).await.map_err(|e| e.to_string())?;
        let parked_on = state.parked_on(run_id).await.map_err(|e| e.to_string())?;
        let request_run = RunRequest {
            alert,
            mode: crate::gate::Mode::DryRun,
            approver: Arc::new(crate::gate::NoApprover),
            progress: Box::new(crate::journal::Quiet),
            run_id: Some(run_id.to_owned()),
            started_by: record.started_by.clone(),
            step_mode: false,
        };
        // Unrecorded: nothing of the look-ahead reaches the state store.
        let (ahead, _) = run::execute(
            &self.engine,
            &playbook,
            self.backends.clone(),
            None,
            run_id.to_owned(),
            request_run,
            run::Journaled {
                replay: journal,
                parked_on,
                only: false,
                predicting: true,
            },
        )
        .await;
        // At most MAX_PLANNED writes, each at most MAX_PLANNED_BYTES of
        // arguments: past either, the list stops (and those writes ask).
        let writes: Vec<crate::state::plans::PlannedWrite> = ahead
            .journal
            .iter()
            .filter(|e| e.seq >= seq && e.is_write())
            .map(|e| crate::state::plans::PlannedWrite {
                op: e.name(),
                detail: e.args.to_string(),
            })
            .take_while(|w| w.detail.len() <= MAX_PLANNED_BYTES)
            .take(MAX_PLANNED)
            .collect();
        let plan = crate::state::plans::RunPlan {
            digest: crate::state::plans::plan_digest(run_id, seq, &request.plan_digest, &writes),
            run_id: run_id.to_owned(),
            from_seq: seq,
            request_digest: request.plan_digest,
            writes,
            ended: crate::report::end_json(&ahead.end),
            at: crate::state::now_ms(),
            approvals: Vec::new(),
        };
        state.put_run_plan(&plan).await.map_err(|e| e.to_string())
    }
}
