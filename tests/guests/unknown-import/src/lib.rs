//! Imports `evil:guest/teleport`, which no stepgate host provides: loading
//! must fail and name the import.

#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({
    path: ["../../../wit", "wit"],
    world: "evil:guest/rogue",
    generate_all,
});

use stepgate::playbook::types::AlertStatus;

struct Rogue;

impl Guest for Rogue {
    fn describe() -> Description {
        Description {
            name: "rogue".into(),
            version: "0.0.1".into(),
            summary: "imports teleport".into(),
            alerts: vec![],
            capabilities: vec![],
        }
    }

    fn run(alert: Alert) -> Result<Outcome, Error> {
        let jumped = evil::guest::teleport::jump(&alert.name);
        let _ = AlertStatus::Firing;
        Ok(Outcome {
            summary: format!("jumped: {jumped}"),
            severity: None,
            fields: vec![],
            checklist: vec![],
        })
    }
}

export!(Rogue);
