//! What a playbook declares, in the words of the config that grants it:
//! `stepgate inspect` shows each capability as the grant line to write
//! under `[playbooks.NAME.grants]` (`rpc.base.methods = ["eth_call"]`),
//! and each write as the gate key it passes with the gate it meets there.
//! It reads the description and the config only; it resolves no secret
//! and opens no backend.

use std::collections::BTreeMap;

use crate::bindings::Capability;
use crate::config::Config;
use crate::gate::Effect;
use crate::gate::{Gates, Guarded, LiveGate};

/// The grant lines (relative to `[playbooks.NAME.grants]`) that give a
/// playbook `capabilities`, one per connection, endpoint and list.
pub fn grant_lines<'a>(capabilities: &'a [Capability]) -> Vec<String> {
    let mut db: BTreeMap<&str, bool> = BTreeMap::new();
    let mut lists: BTreeMap<String, Vec<&'a str>> = BTreeMap::new();
    let mut list = |key: String, value: &'a str| {
        let values = lists.entry(key).or_default();
        if !values.contains(&value) {
            values.push(value);
        }
    };
    for capability in capabilities {
        match capability {
            Capability::DbRead(conn) => {
                db.entry(conn).or_insert(false);
            }
            Capability::DbWrite(conn) => {
                db.insert(conn, true);
            }
            Capability::Rpc(m) if m.method.contains(' ') => {
                list(format!("rpc.{}.routes", key(&m.endpoint)), &m.method)
            }
            Capability::Rpc(m) => list(format!("rpc.{}.methods", key(&m.endpoint)), &m.method),
            Capability::FlagRead(glob) => list("flags.read".into(), glob),
            Capability::FlagWrite(glob) => list("flags.write".into(), glob),
            Capability::Page(target) => list("pager.targets".into(), target),
            Capability::Notify(channel) => list("pager.channels".into(), channel),
        }
    }
    let mut lines: Vec<String> = db
        .into_iter()
        .map(|(conn, write)| {
            let table = if write { "{ write = true }" } else { "{}" };
            format!("db.{} = {table}", key(conn))
        })
        .collect();
    for (name, values) in lists {
        let array = toml::Value::Array(
            values
                .into_iter()
                .map(|v| toml::Value::String(v.to_owned()))
                .collect(),
        );
        lines.push(format!("{name} = {array}"));
    }
    lines
}

/// Each write `capabilities` allow, as its gate key, with the gate it
/// meets under `gates` (guardrails aside: they judge each write as made).
/// An RPC method or route the config does not class as a write is left
/// out; a flag glob is keyed as written.
pub fn write_gates(
    capabilities: &[Capability],
    config: &Config,
    gates: &Gates,
) -> Vec<(String, LiveGate)> {
    let mut writes = Vec::new();
    let mut gate = |op: &str, target: &str, finer: Vec<String>| {
        let (policy, requirement) = gates.effective(op, target, &finer, &Guarded::default());
        let mut key = format!("{op}:{target}");
        if let Some(finer) = finer.first() {
            key.push_str(&format!("/{finer}"));
        }
        let entry = (key, LiveGate::of(policy, &requirement));
        if !writes.contains(&entry) {
            writes.push(entry);
        }
    };
    for capability in capabilities {
        match capability {
            Capability::DbWrite(conn) => {
                gate("db.execute", conn, Vec::new());
                // A table with a rule of its own meets that rule.
                for table in gates.finer_keys("db.execute", conn) {
                    gate("db.execute", conn, vec![table]);
                }
            }
            Capability::Rpc(m) => {
                let Some(endpoint) = config.rpc.get(&m.endpoint) else {
                    continue;
                };
                if m.method.contains(' ') {
                    let write = endpoint.routes.iter().any(|r| {
                        r.route() == m.method
                            && r.parts()
                                .is_ok_and(|(_, _, effect, _)| effect == Effect::Write)
                    });
                    if write {
                        gate("rpc.http", &m.endpoint, Vec::new());
                    }
                } else if endpoint.methods.get(&m.method) == Some(&Effect::Write) {
                    gate("rpc.call", &m.endpoint, vec![m.method.clone()]);
                }
            }
            Capability::FlagWrite(glob) => gate("flags.set", glob, Vec::new()),
            Capability::Page(target) => gate("pager.page", target, Vec::new()),
            Capability::Notify(channel) => gate("pager.notify", channel, Vec::new()),
            Capability::DbRead(_) | Capability::FlagRead(_) => {}
        }
    }
    writes
}

/// A config key: bare when TOML allows, else quoted.
fn key(name: &str) -> String {
    toml_edit::Key::new(name).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::RpcMethod;

    fn rpc(endpoint: &str, method: &str) -> Capability {
        Capability::Rpc(RpcMethod {
            endpoint: endpoint.into(),
            method: method.into(),
        })
    }

    /// Capabilities read as the grants that give them, in config syntax,
    /// and each write as its gate key with the gate the config sets.
    #[test]
    fn capabilities_read_as_grants_and_writes_as_gates() {
        let capabilities = vec![
            Capability::DbRead("ledger".into()),
            Capability::DbWrite("ledger".into()),
            Capability::DbRead("read only".into()),
            rpc("base", "eth_call"),
            rpc("base", "eth_sendRawTransaction"),
            rpc("admin", "POST /v1/replay"),
            rpc("admin", "GET /v1/jobs"),
            Capability::FlagRead("PLAZA_*".into()),
            Capability::FlagWrite("PLAZA_KILL".into()),
            Capability::Page("ceo".into()),
            Capability::Notify("incident".into()),
        ];
        assert_eq!(
            grant_lines(&capabilities),
            [
                "db.ledger = { write = true }",
                "db.\"read only\" = {}",
                "flags.read = [\"PLAZA_*\"]",
                "flags.write = [\"PLAZA_KILL\"]",
                "pager.channels = [\"incident\"]",
                "pager.targets = [\"ceo\"]",
                "rpc.admin.routes = [\"POST /v1/replay\", \"GET /v1/jobs\"]",
                "rpc.base.methods = [\"eth_call\", \"eth_sendRawTransaction\"]",
            ]
        );
        let config = Config::parse(
            r#"
[db.ledger]
url = "sqlite::memory:"
[rpc.base]
kind = "json-rpc"
urls = ["http://127.0.0.1:8545"]
methods = { eth_call = "read", eth_sendRawTransaction = "write" }
[rpc.admin]
kind = "http"
urls = ["http://127.0.0.1:9"]
routes = ["POST /v1/replay", "GET /v1/jobs"]
[flags.main]
kind = "builtin"
names = ["PLAZA_*"]
[pager.targets.ceo]
kind = "file"
path = "pages.jsonl"
[pager.channels.incident]
kind = "file"
path = "pages.jsonl"
"#,
            std::path::Path::new("stepgate.toml"),
            std::path::Path::new("."),
        )
        .unwrap();
        let gates = Gates::from_config(&BTreeMap::from([
            (
                "default".to_owned(),
                crate::gate::GateRule::bare(crate::gate::Policy::Approve),
            ),
            (
                "pager.page".to_owned(),
                crate::gate::GateRule::bare(crate::gate::Policy::Auto),
            ),
            (
                "db.execute:ledger/holds".to_owned(),
                crate::gate::GateRule::bare(crate::gate::Policy::Deny),
            ),
            (
                "rpc.call:base/eth_sendRawTransaction".to_owned(),
                crate::gate::GateRule {
                    quorum: Some(2),
                    groups: vec!["treasury".into()],
                    ..crate::gate::GateRule::bare(crate::gate::Policy::Approve)
                },
            ),
        ]))
        .unwrap();
        let shown: Vec<(String, String)> = write_gates(&capabilities, &config, &gates)
            .into_iter()
            .map(|(key, gate)| (key, gate.to_string()))
            .collect();
        let pair = |k: &str, g: &str| (k.to_owned(), g.to_owned());
        assert_eq!(
            shown,
            [
                pair("db.execute:ledger", "approve (quorum 1)"),
                pair("db.execute:ledger/holds", "deny"),
                pair(
                    "rpc.call:base/eth_sendRawTransaction",
                    "approve (quorum 2, group treasury)"
                ),
                pair("rpc.http:admin", "approve (quorum 1)"),
                pair("flags.set:PLAZA_KILL", "approve (quorum 1)"),
                pair("pager.page:ceo", "auto"),
                pair("pager.notify:incident", "approve (quorum 1)"),
            ]
        );
    }
}
