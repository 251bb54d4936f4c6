//! Scopes: what one playbook may touch, compiled from its grants.
//!
//! Checked twice: at load, against the capabilities the playbook declares
//! in `describe()` ([`Scope::check_declared`]); and on every call. An
//! interface the playbook imports but holds no grant for needs no special
//! linking: every call on it fails its scope check and returns
//! `not-granted`, journaled like any other call. This module only answers
//! yes or no, with a message that names the missing grant.

use std::collections::{BTreeMap, BTreeSet};

use globset::GlobSet;

use crate::backends::SqlDialect;
use crate::backends::http_path::NormalPath;
use crate::bindings::Capability;
use crate::config::{Config, Grants, glob_set};
use crate::gate::Effect;
use crate::sql_names;

/// A refused call or declaration: names the missing grant and the config
/// key that would grant it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} is not granted to playbook `{playbook}`; to allow it, add {hint}")]
pub struct NotGranted {
    pub playbook: String,
    pub what: String,
    pub hint: String,
}

/// One granted HTTP route: `METHOD /path/glob` and its class.
#[derive(Debug, Clone)]
struct Route {
    text: String,
    verb: String,
    path: globset::GlobMatcher,
    effect: Effect,
    /// Whether the request may carry a query string (route ends in `?*`).
    query: bool,
}

#[derive(Debug, Clone)]
struct DbScope {
    write: bool,
    tables: BTreeSet<String>,
}

/// The compiled grants of one playbook.
#[derive(Debug, Clone)]
pub struct Scope {
    playbook: String,
    db: BTreeMap<String, DbScope>,
    /// endpoint -> granted method -> its class (from the endpoint config).
    rpc: BTreeMap<String, BTreeMap<String, Effect>>,
    /// endpoint -> granted HTTP routes.
    http: BTreeMap<String, Vec<Route>>,
    flag_read: GlobSet,
    flag_write: GlobSet,
    targets: BTreeSet<String>,
    channels: BTreeSet<String>,
}

impl Scope {
    /// A scope that grants nothing (a component run by path, `describe`).
    pub fn none(playbook: &str) -> Scope {
        Scope::new(
            playbook,
            &Grants::default(),
            &Config::empty(std::path::Path::new(".")),
        )
    }

    pub fn new(playbook: &str, grants: &Grants, config: &Config) -> Scope {
        let rpc = grants
            .rpc
            .iter()
            .map(|(endpoint, grant)| {
                let classes = config.rpc.get(endpoint).map(|r| &r.methods);
                let methods = grant
                    .methods
                    .iter()
                    .map(|m| {
                        // Unclassed methods are rejected at config load;
                        // if one slips through, treat it as the riskier class.
                        let class = classes
                            .and_then(|c| c.get(m))
                            .copied()
                            .unwrap_or(Effect::Write);
                        (m.clone(), class)
                    })
                    .collect();
                (endpoint.clone(), methods)
            })
            .collect();
        let http = grants
            .rpc
            .iter()
            .map(|(endpoint, grant)| {
                let routes = config
                    .rpc
                    .get(endpoint)
                    .map(|r| r.routes.as_slice())
                    .unwrap_or_default()
                    .iter()
                    .filter(|r| grant.routes.iter().any(|g| g == r.route()))
                    .filter_map(|r| {
                        // Bad routes are refused at config load.
                        let (verb, path, effect, query) = r.parts().ok()?;
                        // `*` stays inside one path segment; `**` crosses
                        // segments, as the route says when it means to.
                        let path = globset::GlobBuilder::new(&path)
                            .literal_separator(true)
                            .build()
                            .ok()?
                            .compile_matcher();
                        Some(Route {
                            text: r.route().to_owned(),
                            verb,
                            path,
                            effect,
                            query,
                        })
                    })
                    .collect();
                (endpoint.clone(), routes)
            })
            .collect();
        Scope {
            playbook: playbook.to_owned(),
            http,
            db: grants
                .db
                .iter()
                .map(|(name, g)| {
                    let scope = DbScope {
                        write: g.write,
                        tables: g.tables.iter().cloned().collect(),
                    };
                    (name.clone(), scope)
                })
                .collect(),
            rpc,
            flag_read: glob_set(&grants.flags.read),
            flag_write: glob_set(&grants.flags.write),
            targets: grants.pager.targets.iter().cloned().collect(),
            channels: grants.pager.channels.iter().cloned().collect(),
        }
    }

    fn refuse(&self, what: String, hint: String) -> NotGranted {
        NotGranted {
            playbook: self.playbook.clone(),
            what,
            hint,
        }
    }

    fn grants_key(&self) -> String {
        format!("[playbooks.{}.grants", self.playbook)
    }

    pub fn db_read(&self, conn: &str) -> Result<(), NotGranted> {
        if self.db.contains_key(conn) {
            Ok(())
        } else {
            Err(self.refuse(
                format!("database connection `{conn}`"),
                format!("{}.db.{conn}]", self.grants_key()),
            ))
        }
    }

    /// `tables` are every table the statement changes (CTEs included), in
    /// their canonical form (see [`sql_names`]); each grant is read the same
    /// way for the connection's `dialect`, so `escrow_holds` covers
    /// `public.escrow_holds` and never `archive.escrow_holds`.
    pub fn db_write(
        &self,
        conn: &str,
        dialect: SqlDialect,
        tables: &[String],
    ) -> Result<(), NotGranted> {
        self.db_read(conn)?;
        let grant = &self.db[conn];
        if !grant.write {
            return Err(self.refuse(
                format!("writing on database connection `{conn}`"),
                format!("`write = true` under {}.db.{conn}]", self.grants_key()),
            ));
        }
        let granted: BTreeSet<String> = grant
            .tables
            .iter()
            .filter_map(|t| sql_names::parse_config(dialect, t).ok())
            .collect();
        for table in tables {
            if !granted.contains(table) {
                return Err(self.refuse(
                    format!("writing table `{table}` on connection `{conn}`"),
                    format!(
                        "\"{table}\" to `tables` under {}.db.{conn}]",
                        self.grants_key()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The class of an HTTP request on `endpoint`, if a granted route
    /// matches its method, its path and its query (a route allows a query
    /// string only if it ends in `?*`). `path` is in normal form (see
    /// [`http_path`](crate::backends::http_path)): the form that is sent.
    pub fn http(
        &self,
        endpoint: &str,
        verb: &str,
        path: &NormalPath,
    ) -> Result<Effect, NotGranted> {
        let verb = verb.to_ascii_uppercase();
        let target = path.target();
        self.http
            .get(endpoint)
            .into_iter()
            .flatten()
            .find(|r| {
                r.verb == verb && r.path.is_match(&path.path) && (r.query || path.query.is_none())
            })
            .map(|r| r.effect)
            .ok_or_else(|| {
                let query_hint = if path.query.is_some() {
                    " ending in `?*` (the request carries a query string)"
                } else {
                    ""
                };
                self.refuse(
                    format!("`{verb} {target}` on HTTP endpoint `{endpoint}`"),
                    format!(
                        "a matching route{query_hint} to `routes` under {}.rpc.{endpoint}] (and to the endpoint's own `routes`)",
                        self.grants_key()
                    ),
                )
            })
    }

    /// The class of `method` on `endpoint`, if granted.
    pub fn rpc(&self, endpoint: &str, method: &str) -> Result<Effect, NotGranted> {
        let Some(methods) = self.rpc.get(endpoint) else {
            return Err(self.refuse(
                format!("RPC endpoint `{endpoint}`"),
                format!(
                    "{}.rpc.{endpoint}] with `methods = [\"{method}\"]`",
                    self.grants_key()
                ),
            ));
        };
        methods.get(method).copied().ok_or_else(|| {
            self.refuse(
                format!("method `{method}` on RPC endpoint `{endpoint}`"),
                format!(
                    "\"{method}\" to `methods` under {}.rpc.{endpoint}]",
                    self.grants_key()
                ),
            )
        })
    }

    pub fn flag_read(&self, name: &str) -> Result<(), NotGranted> {
        // Whoever may set a flag may also read it.
        if self.flag_read.is_match(name) || self.flag_write.is_match(name) {
            Ok(())
        } else {
            Err(self.refuse(
                format!("reading flag `{name}`"),
                format!(
                    "a matching glob to `read` under {}.flags]",
                    self.grants_key()
                ),
            ))
        }
    }

    pub fn flag_write(&self, name: &str) -> Result<(), NotGranted> {
        if self.flag_write.is_match(name) {
            Ok(())
        } else {
            Err(self.refuse(
                format!("setting flag `{name}`"),
                format!(
                    "a matching glob to `write` under {}.flags]",
                    self.grants_key()
                ),
            ))
        }
    }

    pub fn page(&self, target: &str) -> Result<(), NotGranted> {
        if self.targets.contains(target) {
            Ok(())
        } else {
            Err(self.refuse(
                format!("paging target `{target}`"),
                format!(
                    "\"{target}\" to `targets` under {}.pager]",
                    self.grants_key()
                ),
            ))
        }
    }

    pub fn notify(&self, channel: &str) -> Result<(), NotGranted> {
        if self.channels.contains(channel) {
            Ok(())
        } else {
            Err(self.refuse(
                format!("posting to channel `{channel}`"),
                format!(
                    "\"{channel}\" to `channels` under {}.pager]",
                    self.grants_key()
                ),
            ))
        }
    }

    /// Load-time check of one capability from `describe()`.
    pub fn check_declared(&self, capability: &Capability) -> Result<(), NotGranted> {
        match capability {
            Capability::DbRead(conn) => self.db_read(conn),
            Capability::DbWrite(conn) => {
                self.db_read(conn)?;
                if self.db[conn].write {
                    Ok(())
                } else {
                    Err(self.refuse(
                        format!("writing on database connection `{conn}`"),
                        format!("`write = true` under {}.db.{conn}]", self.grants_key()),
                    ))
                }
            }
            Capability::Rpc(m) => {
                let route_granted = self
                    .http
                    .get(&m.endpoint)
                    .is_some_and(|routes| routes.iter().any(|r| r.text == m.method));
                if route_granted {
                    Ok(())
                } else {
                    self.rpc(&m.endpoint, &m.method).map(|_| ())
                }
            }
            Capability::FlagRead(glob) => self.flag_read(glob),
            Capability::FlagWrite(glob) => self.flag_write(glob),
            Capability::Page(target) => self.page(target),
            Capability::Notify(channel) => self.notify(channel),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::http_path;
    use crate::bindings::RpcMethod;
    use std::path::Path;

    fn scope() -> Scope {
        let config = Config::parse(
            r#"
[db.ledger]
url = "sqlite::memory:"
[db.other]
url = "sqlite::memory:"
[rpc.base]
kind = "json-rpc"
urls = ["http://127.0.0.1:1"]
methods = { eth_call = "read", eth_sendRawTransaction = "write" }
[pager.targets.ceo]
kind = "file"
path = "pages.jsonl"
[pager.channels.incident]
kind = "file"
path = "pages.jsonl"
[playbooks.p]
component = "p.wasm"
grants.db.ledger = { write = true, tables = ["Escrow_Holds"] }
grants.db.other = {}
grants.rpc.base.methods = ["eth_call", "eth_sendRawTransaction"]
grants.flags = { read = ["PLAZA_*"], write = ["PLAZA_CUSTODIED_MODE_DISABLED"] }
grants.pager = { targets = ["ceo"], channels = ["incident"] }
"#,
            Path::new("t.toml"),
            Path::new("."),
        )
        .unwrap();
        Scope::new("p", &config.playbooks["p"].grants, &config)
    }

    /// Asserts `result` is a refusal that names `needle`: what was asked
    /// for, so the author knows which grant is missing.
    fn refused<T: std::fmt::Debug>(result: Result<T, NotGranted>, needle: &str) {
        match result {
            Err(e) => assert!(e.to_string().contains(needle), "{needle:?} not in: {e}"),
            Ok(v) => panic!("granted ({v:?}); expected a refusal naming {needle:?}"),
        }
    }

    #[test]
    fn db_grants_by_connection_write_flag_and_table() {
        let s = scope();
        assert_eq!(s.db_read("ledger"), Ok(()));
        assert_eq!(s.db_read("other"), Ok(()));
        let e = s.db_read("payments").unwrap_err();
        assert!(
            e.to_string().contains("[playbooks.p.grants.db.payments]"),
            "{e}"
        );
        let t = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let d = SqlDialect::Postgres;
        assert_eq!(s.db_write("ledger", d, &t(&["escrow_holds"])), Ok(()));
        // A table of the same name in another schema is another table.
        refused(
            s.db_write("ledger", d, &t(&["archive.escrow_holds"])),
            "archive.escrow_holds",
        );
        // A statement that also changes an unlisted table (a CTE) is refused.
        refused(
            s.db_write("ledger", d, &t(&["escrow_holds", "ledger_entries"])),
            "ledger_entries",
        );
        assert!(
            s.db_write("ledger", d, &t(&["ledger_entries"]))
                .unwrap_err()
                .to_string()
                .contains("tables")
        );
        assert!(
            s.db_write("other", d, &t(&["x"]))
                .unwrap_err()
                .to_string()
                .contains("write = true")
        );
    }

    #[test]
    fn rpc_methods_carry_the_endpoint_class() {
        let s = scope();
        assert_eq!(s.rpc("base", "eth_call"), Ok(Effect::Read));
        assert_eq!(s.rpc("base", "eth_sendRawTransaction"), Ok(Effect::Write));
        refused(s.rpc("base", "eth_getBalance"), "eth_getBalance");
        refused(s.rpc("backup", "eth_call"), "backup");
    }

    #[test]
    fn http_routes_match_method_and_path_glob() {
        let config = Config::parse(
            r#"
[rpc.admin]
kind = "http"
urls = ["http://127.0.0.1:1"]
routes = ["GET /api/v1/admin/feature-flags?*", "POST /api/v1/admin/feature-flags", { route = "POST /graphql", effect = "read" }, "GET /health/*", "POST /admin/pods/restart"]
[playbooks.p]
component = "p.wasm"
grants.rpc.admin.routes = ["GET /api/v1/admin/feature-flags?*", "POST /graphql", "GET /health/*", "POST /admin/pods/restart"]
"#,
            Path::new("t.toml"),
            Path::new("."),
        )
        .unwrap();
        let s = Scope::new("p", &config.playbooks["p"].grants, &config);
        let http =
            |e: &str, verb: &str, path: &str| s.http(e, verb, &http_path::normalise(path).unwrap());
        assert_eq!(
            http("admin", "get", "/api/v1/admin/feature-flags?x=1"),
            Ok(Effect::Read)
        );
        assert_eq!(http("admin", "POST", "/graphql"), Ok(Effect::Read));
        assert_eq!(http("admin", "GET", "/health/db"), Ok(Effect::Read));
        // Listed on the endpoint but not granted to this playbook.
        let e = http("admin", "POST", "/api/v1/admin/feature-flags").unwrap_err();
        assert!(e.to_string().contains("routes"), "{e}");
        refused(http("admin", "DELETE", "/graphql"), "DELETE /graphql");
        refused(http("other", "GET", "/health/db"), "other");
        // `*` is one segment: a glob never reaches a deeper, other path.
        refused(
            http("admin", "GET", "/health/db/extra"),
            "GET /health/db/extra",
        );
        refused(
            http("admin", "GET", "/health/x/admin/pods/restart"),
            "GET /health/x/admin/pods/restart",
        );
        // A query string needs a route that allows one.
        assert_eq!(
            http("admin", "POST", "/admin/pods/restart"),
            Ok(Effect::Write)
        );
        let e = http("admin", "POST", "/admin/pods/restart?all=true").unwrap_err();
        assert!(e.to_string().contains("?*"), "{e}");
        // The normal form is what is matched: no way out of the route.
        assert_eq!(
            http("admin", "POST", "/graphql/../admin/pods/restart"),
            Ok(Effect::Write)
        );
        refused(
            http("admin", "POST", "/admin/pods/restart/../stop"),
            "POST /admin/pods/stop",
        );
    }

    #[test]
    fn flags_by_glob_and_writers_may_read() {
        let s = scope();
        assert_eq!(s.flag_read("PLAZA_AUTO_ACCEPT_DISABLED"), Ok(()));
        refused(s.flag_read("LOA_FINN_CREDITS"), "LOA_FINN_CREDITS");
        assert_eq!(s.flag_write("PLAZA_CUSTODIED_MODE_DISABLED"), Ok(()));
        refused(
            s.flag_write("PLAZA_AUTO_ACCEPT_DISABLED"),
            "PLAZA_AUTO_ACCEPT_DISABLED",
        );
    }

    #[test]
    fn pager_targets_and_channels() {
        let s = scope();
        assert_eq!(s.page("ceo"), Ok(()));
        refused(s.page("board"), "board");
        assert_eq!(s.notify("incident"), Ok(()));
        refused(s.notify("general"), "general");
    }

    #[test]
    fn nothing_is_granted_by_default() {
        let s = Scope::none("bare");
        refused(s.db_read("ledger"), "ledger");
        refused(s.rpc("base", "eth_call"), "eth_call");
        refused(s.flag_read("X"), "X");
        refused(s.page("ceo"), "ceo");
        refused(s.notify("incident"), "incident");
    }

    #[test]
    fn declared_capabilities_are_checked() {
        let s = scope();
        assert!(
            s.check_declared(&Capability::DbWrite("ledger".into()))
                .is_ok()
        );
        let e = s
            .check_declared(&Capability::DbWrite("other".into()))
            .unwrap_err();
        assert!(e.to_string().contains("write = true"), "{e}");
        let e = s
            .check_declared(&Capability::Rpc(RpcMethod {
                endpoint: "base".into(),
                method: "eth_getBalance".into(),
            }))
            .unwrap_err();
        assert!(e.to_string().contains("eth_getBalance"), "{e}");
        assert!(
            s.check_declared(&Capability::FlagWrite(
                "PLAZA_CUSTODIED_MODE_DISABLED".into()
            ))
            .is_ok()
        );
    }
}
