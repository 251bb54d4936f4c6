//! The `stepgate` command line: parse arguments, load the config, hand the
//! work to the library, turn the result into output and an exit code.
//! The binary's own modules sit beside this file: the clap definitions
//! (`args`), deciding and listing approvals (`decisions`), history, a
//! server's client (`remote`), `stepgate test` (`testing`) and logging.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;

use stepgate::approvals::StoredApprover;
use stepgate::config::Config;
use stepgate::gate::Mode;
use stepgate::inert::line;
use stepgate::journal::Quiet;
use stepgate::report::exit;
use stepgate::run::RunRequest;
use stepgate::runtime::Runtime;
use stepgate::terminal::{TerminalProgress, TtyApprover, summary};
use stepgate::{errln, out, outln};

mod args;
mod decisions;
mod history;
mod logging;
mod remote;
mod testing;

use args::*;

/// A failure that maps to exit code 2 (config, usage, input).
struct UsageError(anyhow::Error);

impl<E: Into<anyhow::Error>> From<E> for UsageError {
    fn from(e: E) -> Self {
        UsageError(e.into())
    }
}

fn main() -> ExitCode {
    logging::init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            errln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let outcome = runtime.block_on(async {
        let outcome = dispatch(cli.command).await;
        logging::flush().await;
        outcome
    });
    // Whatever is still blocked (a collector's DNS lookup) does not hold
    // the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(UsageError(e)) => {
            errln!("error: {}", said_once(&e));
            ExitCode::from(exit::USAGE)
        }
    }
}

/// An error and its causes, each said once: a cause whose text the
/// message already holds (a wrapper that shows its source) is not
/// repeated.
fn said_once(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        // Repeated: a wrapper that ends with its source's text.
        if cause.is_empty() || !text.ends_with(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

async fn dispatch(command: Command) -> Result<u8, UsageError> {
    let approving = matches!(command, Command::Approve { .. });
    match command {
        Command::Run {
            playbook,
            alert,
            live,
            json,
            step,
            record,
            token_file,
            config,
        } => {
            let options = RunOptions {
                live,
                json,
                step,
                record,
                token_file,
            };
            run(&playbook, &alert, options, &config).await
        }
        Command::Inspect { component, config } => inspect(&component, &config).await,
        Command::New {
            name,
            lang,
            dir,
            rust_sdk,
            config,
            kill_switch,
        } => new_playbook(&name, lang, &dir, rust_sdk, &config, kill_switch),
        Command::Build { dir, out } => build_playbook(&dir, out.as_deref()),
        Command::Resume { run, json, config } => resume(&run, json, &config).await,
        Command::Approvals { json, config } => decisions::list(&load_config(&config)?, json).await,
        Command::Approve {
            run,
            plan: Some(plan),
            all: true,
            reason,
            server,
            wait,
            token_file,
            config,
            ..
        } => {
            let whole = decisions::WholePlan {
                run_id: &run,
                digest: &plan,
                reason: &reason,
            };
            match server {
                Some(server) => {
                    decisions::approve_plan_remote(&server, whole, token_file.as_ref(), wait).await
                }
                None => {
                    decisions::approve_plan(load_config(&config)?, whole, token_file.as_ref(), wait)
                        .await
                }
            }
        }
        Command::Approve {
            run,
            seq: Some(seq),
            reason,
            plan,
            server,
            wait,
            token_file,
            config,
            ..
        }
        | Command::Deny {
            run,
            seq,
            reason,
            plan,
            server,
            wait,
            token_file,
            config,
        } => {
            let decision = decisions::Decision {
                run_id: &run,
                seq,
                approve: approving,
                reason: &reason,
                plan: plan.as_deref(),
            };
            match server {
                Some(server) => {
                    decisions::decide_remote(&server, decision, token_file.as_ref(), wait).await
                }
                None => {
                    decisions::decide(load_config(&config)?, decision, token_file.as_ref(), wait)
                        .await
                }
            }
        }
        Command::Approve { .. } => Err(anyhow::anyhow!(
            "approve needs SEQ (one write), or --all --plan DIGEST (the whole plan)"
        )
        .into()),
        Command::Cancel {
            run,
            reason,
            server,
            token_file,
            config,
        } => match server {
            Some(server) => {
                decisions::cancel_remote(&server, &run, &reason, token_file.as_ref()).await
            }
            None => {
                decisions::cancel(load_config(&config)?, &run, &reason, token_file.as_ref()).await
            }
        },
        Command::Resolve {
            run,
            seq,
            resolution,
            reason,
            result,
            token_file,
            config,
        } => {
            let mark_done = matches!(resolution, ResolutionArg::MarkDone);
            decisions::resolve(
                load_config(&config)?,
                &run,
                seq,
                mark_done.then_some(result),
                &reason,
                token_file.as_ref(),
            )
            .await
        }
        Command::Sweep { json, config } => sweep(json, &config).await,
        Command::Serve {
            listen,
            instance,
            config,
        } => serve(listen, instance, &config).await,
        Command::Test {
            paths,
            junit,
            update,
            filter,
            show,
            config,
        } => {
            let options = testing::TestOptions {
                paths,
                junit,
                update,
                filter,
                show,
            };
            testing::test(load_config(&config)?, options).await
        }
        Command::Replay {
            file,
            playbook,
            json,
            config,
        } => testing::replay(load_config(&config)?, &file, playbook.as_deref(), json).await,
        Command::Export { run, out, config } => {
            testing::export(load_config(&config)?, &run, out.as_deref()).await
        }
        Command::Scenario { action, config } => match action {
            ScenarioAction::FromJournal { file, out } => {
                testing::scenario_from_journal(load_config(&config)?, &file, out.as_deref()).await
            }
        },
        Command::Continue {
            run,
            reason,
            token_file,
            config,
        } => {
            decisions::step(
                load_config(&config)?,
                &run,
                true,
                &reason,
                token_file.as_ref(),
            )
            .await
        }
        Command::Abort {
            run,
            reason,
            token_file,
            config,
        } => {
            decisions::step(
                load_config(&config)?,
                &run,
                false,
                &reason,
                token_file.as_ref(),
            )
            .await
        }
        Command::Principal { action, config } => {
            let config = load_config(&config)?;
            match action {
                PrincipalAction::Add { name, role, groups } => {
                    decisions::add_principal(&config, &name, &role, &groups).await
                }
                PrincipalAction::Revoke { name } => {
                    decisions::revoke_principal(&config, &name).await
                }
            }
        }
        Command::Runs {
            status,
            limit,
            json,
            server,
            token_file,
            config,
        } => {
            let config = load_config(&config)?;
            let source = source(&config, server, token_file.as_ref())?;
            history::runs(source, status.as_deref(), limit, json).await
        }
        Command::Show {
            run,
            json,
            server,
            token_file,
            config,
        } => {
            let config = load_config(&config)?;
            let source = source(&config, server, token_file.as_ref())?;
            history::show(source, &run, json).await
        }
        Command::Audit { action, config } => {
            let config = load_config(&config)?;
            match action {
                AuditAction::Verify => history::audit_verify(&config).await,
                AuditAction::Export => history::audit_export(&config).await,
            }
        }
        Command::Policy {
            action: PolicyAction::Test { runs, last, json },
            config,
        } => policy_test(&load_config(&config)?, &runs, last, json).await,
        Command::Doctor { config, json } => doctor(&load_config(&config)?, json).await,
    }
}

/// `stepgate doctor`: one line per check; 1 if any failed.
async fn doctor(config: &Config, json: bool) -> Result<u8, UsageError> {
    let checks = stepgate::doctor::doctor(config).await;
    let width = checks.iter().map(|c| c.what.len()).max().unwrap_or(0);
    for check in &checks {
        if json {
            outln!("{}", serde_json::to_string(check)?);
        } else {
            outln!(
                "{:<4}  {:<width$}  {}",
                check.verdict.as_str(),
                check.what,
                check.detail
            );
        }
    }
    Ok(u8::from(stepgate::doctor::failed(&checks)))
}

/// Where `runs` and `show` read: a server if one is named, else the store.
fn source<'a>(
    config: &'a Config,
    server: Option<String>,
    token_file: Option<&PathBuf>,
) -> Result<history::Source<'a>, UsageError> {
    Ok(match server {
        Some(url) => {
            history::Source::Server(remote::Remote::new(&url, decisions::token(token_file)?))
        }
        None => history::Source::Local(config),
    })
}

/// The config at `path`; if it is the default name and absent, an empty one
/// (so a component can be run by path with no grants). Its `[telemetry]`,
/// if any, starts exporting spans.
fn load_config(path: &Path) -> Result<Config> {
    if !path.exists() && path == Path::new("stepgate.toml") {
        return Ok(Config::empty(Path::new(".")));
    }
    let config = Config::load(path)?;
    if let Some(telemetry) = &config.telemetry {
        logging::export(telemetry)?;
    }
    Ok(config)
}

fn read_alert(source: &str) -> Result<stepgate::bindings::Alert> {
    let text = if source == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the alert from stdin")?;
        text
    } else {
        std::fs::read_to_string(source)
            .with_context(|| format!("cannot read alert file {source}"))?
    };
    let alerts = stepgate::alert::parse(&text).with_context(|| format!("alert {source}"))?;
    let count = alerts.len();
    let alert = stepgate::alert::pick(alerts).context("the payload holds no alert")?;
    if count > 1 {
        errln!(
            "note: the payload holds {count} alerts; this run answers `{}`",
            line(&alert.name)
        );
    }
    Ok(alert)
}

/// How `stepgate run` was asked to run.
struct RunOptions {
    live: bool,
    json: bool,
    step: bool,
    record: Option<PathBuf>,
    token_file: Option<PathBuf>,
}

async fn run(
    playbook: &str,
    alert: &str,
    options: RunOptions,
    config: &Path,
) -> Result<u8, UsageError> {
    let RunOptions {
        live,
        json,
        step,
        record,
        token_file,
    } = options;
    let config = load_config(config)?;
    let alert_from_stdin = alert == "-";
    let at_terminal = !alert_from_stdin && std::io::stdin().is_terminal();
    let alert = read_alert(alert)?;
    let runtime = Runtime::for_one_run(config)?;
    let started_by = match decisions::given_token(token_file.as_ref())? {
        Some(token) => runtime.state.authorize_operator(&token).await?,
        None if live && !at_terminal => {
            return Err(anyhow::anyhow!(
                "a live run without a terminal files its approvals in the name of whoever started it: pass an operator's token with --token-file FILE or STEPGATE_TOKEN"
            )
            .into());
        }
        None => whoami(),
    };
    let playbook = testing::load_saying_so(&runtime, playbook).await?;
    let mode = if live { Mode::Live } else { Mode::DryRun };
    if !playbook.description.alerts.is_empty() && !playbook.description.alerts.contains(&alert.name)
    {
        errln!(
            "note: `{}` does not list alert `{}` among those it answers ({})",
            playbook.name,
            line(&alert.name),
            line(&playbook.description.alerts.join(", "))
        );
    }
    let progress: Box<dyn stepgate::journal::Progress> = if json {
        Box::new(Quiet)
    } else {
        errln!(
            "stepgate: {} v{} — {} for alert {}{}",
            playbook.name,
            line(&playbook.description.version),
            mode,
            line(&alert.name),
            if mode == Mode::DryRun {
                " (nothing will be written; add --live to act)"
            } else {
                ""
            }
        );
        Box::new(TerminalProgress::new(std::io::stderr()))
    };
    // At a terminal a human answers on the spot; otherwise the approval is
    // filed and the run parks until it is decided.
    let mut approver = StoredApprover::new(runtime.state.clone(), &started_by);
    if at_terminal {
        approver = approver.at_terminal(std::sync::Arc::new(TtyApprover));
    }
    let request = RunRequest {
        alert,
        mode,
        approver: std::sync::Arc::new(approver),
        progress,
        run_id: None,
        started_by,
        step_mode: step,
    };
    let alert = request.alert.clone();
    let report = runtime.run(&playbook, request).await;
    print_report(&report, json)?;
    if let Some(path) = record {
        let recording = stepgate::recording::Recording::of_report(&report, &alert, step);
        std::fs::write(&path, recording.to_text())
            .with_context(|| format!("cannot write the recording {}", path.display()))?;
    }
    Ok(report.exit_code())
}

async fn resume(run_id: &str, json: bool, config: &Path) -> Result<u8, UsageError> {
    let runtime = Runtime::for_one_run(load_config(config)?)?;
    let progress: Box<dyn stepgate::journal::Progress> = if json {
        Box::new(Quiet)
    } else {
        errln!("stepgate: resuming run {run_id} (calls in its journal are answered from it)");
        Box::new(TerminalProgress::new(std::io::stderr()))
    };
    let report = runtime.resume(run_id, None, progress).await?;
    print_report(&report, json)?;
    Ok(report.exit_code())
}

async fn serve(
    listen: Option<String>,
    instance: Option<String>,
    config_path: &Path,
) -> Result<u8, UsageError> {
    let config = load_config(config_path)?;
    let addr = listen.unwrap_or_else(|| config.server.listen.clone());
    // The address first: while this process holds it, no other process of
    // the same instance is alive, so what an earlier one held is ours.
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or(addr);
    // Held until this process exits, past the graceful stop's parking of
    // runs: while it is, no successor of the same instance can start and
    // take back what this one still runs.
    let listener = listener.into_std()?;
    let _held = listener.try_clone()?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let instance = instance
        .or_else(|| config.server.instance.clone())
        .unwrap_or_else(|| format!("{}@{addr}", stepgate::state::host_name()));
    if !stepgate::config::valid_instance(&instance) {
        return Err(anyhow::anyhow!(
            "instance name `{}` is not 1 to 100 letters, digits and `.-_@:[]`",
            stepgate::inert::line(&instance)
        )
        .into());
    }
    let state = std::sync::Arc::new(config.state_store()?.with_instance(&instance));
    let runtime = std::sync::Arc::new(Runtime::with_state(config, state)?);
    let server =
        stepgate::server::Server::start_from(runtime, Some(config_path.to_owned())).await?;
    // SIGHUP: read the config again; a bad one is refused, the old one stays.
    let shared = server.shared.clone();
    tokio::spawn(async move {
        let Ok(mut hangups) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hangups.recv().await.is_some() {
            match shared.reload() {
                Ok(()) => errln!("stepgate: config reloaded"),
                Err(why) => errln!("stepgate: config NOT reloaded, the old one stays: {why}"),
            }
        }
    });
    errln!(
        "stepgate: serving on http://{addr} as `{instance}` (POST /hooks/alertmanager, /api/…, /metrics)"
    );
    let shutdown = async {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate => {}
        }
        errln!(
            "stepgate: stopping: no new requests; runs in flight keep their leases and resume on the next start"
        );
    };
    let shared = server.shared.clone();
    server.serve(listener, shutdown).await?;
    if stepgate::server::Server::park_runs(&shared, std::time::Duration::from_secs(30)).await {
        errln!("stepgate: every run is parked; they resume at the next start");
    } else {
        errln!(
            "stepgate: some runs were still busy after 30 s; another host (or the next start) takes them over when their leases lapse"
        );
    }
    Ok(exit::DONE)
}

async fn sweep(json: bool, config: &Path) -> Result<u8, UsageError> {
    let runtime = Runtime::for_one_run(load_config(config)?)?;
    let progress = |run_id: &str| -> Box<dyn stepgate::journal::Progress> {
        if json {
            Box::new(Quiet)
        } else {
            errln!("stepgate: resuming run {run_id}");
            Box::new(TerminalProgress::new(std::io::stderr()))
        }
    };
    let report = stepgate::sweep::sweep(&runtime, &progress).await?;
    if json {
        let resumed: Vec<_> = report.resumed.iter().map(|r| r.to_json()).collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "escalated": report.escalated,
                "resumed": resumed,
                "errors": report.errors,
            }))?
        );
    } else {
        for e in &report.escalated {
            outln!(
                "escalated run {} #{} (step {}): paged `{}`",
                e.run_id,
                e.seq,
                e.step,
                line(&e.paged)
            );
        }
        for r in &report.resumed {
            outln!(
                "resumed run {}: {} (exit code {})",
                r.run_id,
                stepgate::report::end_json(&r.end)["status"]
                    .as_str()
                    .unwrap_or("?"),
                r.exit_code()
            );
        }
        for e in &report.errors {
            errln!("error: {e}");
        }
        if report.escalated.is_empty() && report.resumed.is_empty() && report.errors.is_empty() {
            outln!("nothing to do");
        }
    }
    Ok(if report.errors.is_empty() {
        exit::DONE
    } else {
        exit::INCOMPLETE
    })
}

pub(crate) fn print_report(report: &stepgate::run::RunReport, json: bool) -> Result<()> {
    if json {
        outln!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        out!("{}", summary(report));
        errln!(
            "run {} ended with exit code {}",
            report.run_id,
            report.exit_code()
        );
    }
    Ok(())
}

/// Who is at the terminal, for the run record and the audit log.
fn whoami() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".to_owned());
    format!("cli:{user}")
}

/// `stepgate policy test`.
async fn policy_test(
    config: &Config,
    runs: &[String],
    last: i64,
    json: bool,
) -> Result<u8, UsageError> {
    use stepgate::policy_test::{Outcome, judge_runs};
    let state = config.state_store().context("the state store's location")?;
    let records = if runs.is_empty() {
        state.runs(None, last.max(1)).await?
    } else {
        let mut records = Vec::new();
        for id in runs {
            records.push(state.run(id).await?.ok_or_else(|| {
                anyhow::anyhow!("no run `{id}` in the state store; `stepgate runs` lists them")
            })?);
        }
        records
    };
    let judged = judge_runs(config, &state, &records).await?;
    if json {
        for write in &judged {
            outln!(
                "{}",
                serde_json::to_string(write).context("encoding a verdict")?
            );
        }
        return Ok(exit::DONE);
    }
    let (mut allowed, mut approve, mut denied) = (0, 0, 0);
    for w in &judged {
        let now = match &w.outcome {
            Outcome::Allowed => {
                allowed += 1;
                "allowed".to_owned()
            }
            Outcome::NeedsApproval { quorum } => {
                approve += 1;
                if *quorum > 1 {
                    format!("needs {quorum} approvers")
                } else {
                    "needs approval".to_owned()
                }
            }
            Outcome::Denied { .. } => {
                denied += 1;
                "denied".to_owned()
            }
        };
        outln!(
            "{}  #{:<3} {:<13} {:<24} was {:<9} now {}",
            line(&w.run_id),
            w.seq,
            line(&w.op),
            line(&w.target),
            w.recorded.as_str(),
            now
        );
        for finding in &w.findings {
            outln!("      ⚑ {}", line(&finding.to_string()));
        }
    }
    outln!(
        "{} writes in {} runs: {allowed} allowed, {approve} need approval, {denied} denied",
        judged.len(),
        records.len()
    );
    Ok(exit::DONE)
}

/// The name of the configured playbook whose component is the file at
/// `path`, if one is. Two playbooks sharing the component differ in grants
/// and gates: the author names one.
fn configured_as(
    config: &stepgate::config::Config,
    path: &str,
) -> Result<Option<String>, UsageError> {
    let Ok(file) = std::fs::canonicalize(path) else {
        return Ok(None);
    };
    let names: Vec<&String> = config
        .playbooks
        .iter()
        .filter(|(_, pb)| {
            std::fs::canonicalize(config.resolve(&pb.component)).ok() == Some(file.clone())
        })
        .map(|(name, _)| name)
        .collect();
    match names[..] {
        [] => Ok(None),
        [name] => Ok(Some(name.clone())),
        _ => Err(anyhow::anyhow!(
            "{path} is the component of playbooks {}: inspect one of them by name",
            names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(" and ")
        )
        .into()),
    }
}

async fn inspect(component: &str, config: &Path) -> Result<u8, UsageError> {
    let config = load_config(config)?;
    // A path to a configured playbook's component is that playbook: its
    // grants and gates apply, not the defaults of an unknown component.
    let component = configured_as(&config, component)?.unwrap_or_else(|| component.to_owned());
    let component = component.as_str();
    // The digest first: it is what a pin needs, and what a refused
    // (unpinned or swapped) component is named by.
    let path = match config.playbooks.get(component) {
        Some(pb) => config.resolve(&pb.component),
        None => PathBuf::from(component),
    };
    if let Ok(bytes) = std::fs::read(&path) {
        outln!("sha256:   {}", stepgate::playbook::component_sha256(&bytes));
    }
    // Offline: no secret is resolved and no backend opened, so an author
    // can inspect a playbook without the production credentials.
    let mut config = config;
    config.engine.pooling = false;
    let runtime = Runtime::offline(config)?;
    let playbook = testing::load_saying_so(&runtime, component).await?;
    let d = &playbook.description;
    outln!("name:     {}", line(&d.name));
    outln!("version:  {}", line(&d.version));
    outln!("summary:  {}", line(&d.summary));
    outln!("alerts:   {}", line(&d.alerts.join(", ")));
    outln!(
        "file:     {} ({} bytes, {:.1} MB)",
        playbook.path.display(),
        playbook.size,
        playbook.size as f64 / 1e6
    );
    let bytes = std::fs::read(&playbook.path)
        .with_context(|| format!("cannot read {}", playbook.path.display()))?;
    outln!(
        "language: {}",
        stepgate::authoring::Producers::of_component(&bytes).describe()
    );
    use stepgate::authoring::grants;
    let table = match runtime.config.playbooks.get(component) {
        Some(_) => format!("[playbooks.{component}.grants]"),
        None => "[playbooks.NAME.grants]".to_owned(),
    };
    outln!(
        "capabilities, as the grants that give them (under {}):",
        line(&table)
    );
    for grant in grants::grant_lines(&d.capabilities) {
        outln!("  {}", line(&grant));
    }
    let writes = grants::write_gates(&d.capabilities, &runtime.config, &playbook.gates);
    if !writes.is_empty() {
        outln!("writes, and the gate each meets under this config:");
        let width = writes.iter().map(|(key, _)| key.len()).max().unwrap_or(0);
        for (key, gate) in writes {
            outln!("  {:<width$}  {}", line(&key), line(&gate.to_string()));
        }
    }
    outln!("imports:");
    for import in &playbook.imports {
        outln!("  {import}");
    }
    Ok(exit::DONE)
}

fn new_playbook(
    name: &str,
    language: stepgate::authoring::Language,
    dir: &Path,
    rust_sdk: Option<PathBuf>,
    config: &Path,
    kill_switch: bool,
) -> Result<u8, UsageError> {
    use stepgate::authoring::Language;
    use stepgate::authoring::scaffold::{NewPlaybook, scaffold};
    // The SDK this binary was built from, when it is still there.
    let rust_sdk = rust_sdk.or_else(|| {
        let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk/rust");
        here.canonicalize().ok()
    });
    if language == Language::Rust && rust_sdk.is_none() {
        return Err(anyhow::anyhow!(
            "a Rust playbook needs stepgate's Rust SDK: pass --rust-sdk PATH/TO/stepgate/sdk/rust"
        )
        .into());
    }
    let made = scaffold(&NewPlaybook {
        name,
        language,
        parent: dir,
        config,
        rust_sdk: rust_sdk.as_deref(),
        kill_switch,
    })?;
    outln!("made {} ({language}):", made.dir.display());
    for file in &made.files {
        outln!("  {}", file.display());
    }
    outln!("registered `{name}` in {}", config.display());
    outln!("next:");
    outln!("  stepgate build {}", made.dir.display());
    outln!(
        "  stepgate test {} --config {}",
        made.dir.display(),
        config.display()
    );
    Ok(exit::DONE)
}

fn build_playbook(dir: &Path, out: Option<&Path>) -> Result<u8, UsageError> {
    let built = stepgate::authoring::toolchain::build(dir, out)?;
    outln!(
        "built {} ({}, {:.1} MB) in {:.1} s",
        built.component.display(),
        built.language,
        built.size as f64 / 1e6,
        built.took.as_secs_f64()
    );
    Ok(exit::DONE)
}
