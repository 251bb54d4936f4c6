//! Routine runs on cron schedules (UTC): each tick becomes an alert named
//! after its schedule, stored and dispatched like any other (a tick whose
//! dispatch fails stays in the inbox and the sweeper dispatches it again),
//! on the schedule's own route, never on the alert routes. Its fingerprint is the schedule's, so a tick while
//! the last run is still open joins it instead of starting another: a
//! schedule never overlaps itself. Ticks missed while no server ran are
//! recorded at start, and run once then if the schedule says `catch_up`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Shared;
use crate::bindings::{Alert, AlertStatus};
use crate::config::{Config, ScheduleConfig};
use crate::routing::Route;
use crate::state::inbox::SCHEDULE;

/// The most missed ticks counted after downtime.
const MAX_COUNTED: usize = 100_000;

struct Schedule {
    config: ScheduleConfig,
    cron: croner::Cron,
}

fn alert(schedule: &ScheduleConfig, at: DateTime<Utc>) -> Alert {
    let mut labels: Vec<(String, String)> = schedule.labels.clone().into_iter().collect();
    labels.retain(|(k, _)| k != "alertname" && k != "schedule");
    labels.push(("alertname".into(), schedule.name.clone()));
    labels.push(("schedule".into(), schedule.name.clone()));
    labels.sort();
    Alert {
        name: schedule.name.clone(),
        status: AlertStatus::Firing,
        labels,
        annotations: vec![("cron".into(), schedule.cron.clone())],
        starts_at: Some(at.to_rfc3339()),
        fingerprint: Some(format!("schedule:{}", schedule.name)),
    }
}

/// The route the ticks of the `i`th schedule go by.
fn route(i: usize, config: &ScheduleConfig) -> Route {
    Route {
        index: 1000 + i,
        matchers: Vec::new(),
        playbook: config.playbook.clone(),
        mode: config.mode,
        continue_matching: false,
        cancel_on_resolved: false,
        step_mode: false,
    }
}

/// The route of schedule `name` in `config`, if it still has one.
pub fn route_of(config: &Config, name: &str) -> Option<Route> {
    config
        .schedules
        .iter()
        .enumerate()
        .find(|(_, s)| s.name == name)
        .map(|(i, s)| route(i, s))
}

/// Whether a tick of schedule `name` (`alert`) was superseded: the
/// schedule's next tick after it is due already, and the schedule does not
/// catch up. Such a tick is recorded as missed, not run late.
pub fn superseded(config: &Config, name: &str, alert: &Alert) -> bool {
    let Some(schedule) = config.schedules.iter().find(|s| s.name == name) else {
        return false;
    };
    if schedule.catch_up {
        return false;
    }
    let (Ok(cron), Some(at)) = (
        schedule.parsed(),
        alert
            .starts_at
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok()),
    ) else {
        return false;
    };
    cron.find_next_occurrence(&at.with_timezone(&Utc), false)
        .is_ok_and(|next| next <= Utc::now())
}

/// Runs the schedules of the config in force when the server started.
pub async fn scheduler(shared: Arc<Shared>) {
    let schedules: Vec<Schedule> = shared
        .runtime()
        .config
        .schedules
        .iter()
        .filter_map(|config| {
            Some(Schedule {
                config: config.clone(),
                cron: config.parsed().ok()?,
            })
        })
        .collect();
    if schedules.is_empty() {
        return;
    }
    let now = Utc::now();
    for schedule in &schedules {
        catch_up(&shared, schedule, now).await;
    }
    loop {
        let now = Utc::now();
        let next = schedules
            .iter()
            .filter_map(|s| {
                s.cron
                    .find_next_occurrence(&now, false)
                    .ok()
                    .map(|at| (at, s))
            })
            .min_by_key(|(at, _)| *at);
        let Some((at, _)) = next else { return };
        let wait = (at - now).to_std().unwrap_or(Duration::ZERO);
        tokio::time::sleep(wait).await;
        for schedule in &schedules {
            if schedule.cron.is_time_matching(&at).unwrap_or(false) {
                fire(&shared, schedule, at).await;
            }
        }
    }
}

/// Records ticks missed since the last one, and fires once if the
/// schedule catches up.
async fn catch_up(shared: &Arc<Shared>, schedule: &Schedule, now: DateTime<Utc>) {
    let state = shared.runtime().state.clone();
    let name = &schedule.config.name;
    let last = match state.schedule_last_tick(name).await {
        Ok(Some(ms)) => DateTime::from_timestamp_millis(ms),
        Ok(None) => {
            // A new schedule counts from now.
            let _ = state.set_schedule_tick(name, now.timestamp_millis()).await;
            return;
        }
        Err(e) => {
            tracing::warn!(schedule = %name, "cannot read the last tick: {e}");
            return;
        }
    };
    let Some(last) = last else { return };
    let missed = schedule
        .cron
        .iter_after(last)
        .take_while(|at| *at <= now)
        .take(MAX_COUNTED)
        .count();
    if missed == 0 {
        return;
    }
    tracing::warn!(schedule = %name, missed, "ticks missed while no server ran");
    let _ = state
        .append_audit(
            &format!("schedule:{name}"),
            &serde_json::json!({ "schedule": name, "missed_ticks": missed, "since": last.to_rfc3339(), "until": now.to_rfc3339(), "catch_up": schedule.config.catch_up }),
        )
        .await;
    shared.metrics.alert(&format!("schedule:{name}"), "missed");
    if schedule.config.catch_up {
        fire(shared, schedule, now).await;
    } else {
        let _ = state.set_schedule_tick(name, now.timestamp_millis()).await;
    }
}

/// One tick: stored (from then on it is not lost), then dispatched like
/// an alert: joined to the open run or started.
async fn fire(shared: &Arc<Shared>, schedule: &Schedule, at: DateTime<Utc>) {
    let state = shared.runtime().state.clone();
    let name = &schedule.config.name;
    let stored = state
        .accept_alerts(SCHEDULE, vec![alert(&schedule.config, at)])
        .await;
    let accepted = match stored {
        Ok(mut accepted) if !accepted.is_empty() => accepted.remove(0),
        Ok(_) => return,
        Err(e) => {
            tracing::error!(schedule = %name, "tick not stored: {e}");
            return;
        }
    };
    if let Err(e) = state.set_schedule_tick(name, at.timestamp_millis()).await {
        tracing::warn!(schedule = %name, "cannot record the tick: {e}");
    }
    // The dispatcher runs it (the scheduler waits for nothing); a full
    // queue leaves it to the sweeper, from the inbox.
    let _ = shared.queue.try_send(vec![accepted]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(catch_up: bool) -> Config {
        let text = format!(
            "[playbooks.p]\ncomponent = \"p.wasm\"\n[[schedules]]\nname = \"minutely\"\ncron = \"* * * * *\"\nplaybook = \"p\"\ncatch_up = {catch_up}\n"
        );
        Config::parse(
            &text,
            std::path::Path::new("t.toml"),
            std::path::Path::new("/"),
        )
        .unwrap()
    }

    fn tick(minutes_ago: i64) -> Alert {
        let mut schedule = config(false).schedules.remove(0);
        schedule.labels.clear();
        alert(
            &schedule,
            Utc::now() - chrono::Duration::minutes(minutes_ago),
        )
    }

    #[test]
    fn a_tick_a_later_one_superseded_is_missed_unless_the_schedule_catches_up() {
        assert!(superseded(&config(false), "minutely", &tick(10)));
        assert!(!superseded(&config(true), "minutely", &tick(10)));
        assert!(!superseded(&config(false), "minutely", &tick(0)));
        assert!(!superseded(&config(false), "gone", &tick(10)));
    }
}
