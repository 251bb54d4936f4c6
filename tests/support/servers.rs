//! Real servers for the backend tests, each started on loopback in a temp
//! dir and stopped when dropped: PostgreSQL (Debian's packages) and a
//! ganache Ethereum node (from the npm registry, installed by `.ci/run`).
//! A test binary's PostgreSQL tests share one cluster, each in a database
//! of its own, and it stops when the process exits.
//!
//! A server that is not installed fails the test with what to install; it
//! never skips silently.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A free TCP port on loopback (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on loopback")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// The directory holding `initdb` and `pg_ctl`: `$PG_BIN`, the newest
/// `/usr/lib/postgresql/*/bin`, or whatever `PATH` has.
fn pg_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .unwrap_or_else(|| PathBuf::from(""))
}

/// A throwaway PostgreSQL cluster on 127.0.0.1, in a temp dir.
struct Cluster {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
}

impl Cluster {
    /// initdb + pg_ctl start (as the `postgres` user when running as root,
    /// since PostgreSQL refuses to run as root), fsync off for speed.
    fn start(max_connections: u32) -> Cluster {
        let bin = pg_bin();
        let dir = tempfile::Builder::new()
            .prefix("stepgate-pg-")
            .tempdir()
            .expect("temp dir");
        let data = dir.path().join("data");
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success(), "chown of the PostgreSQL temp dir failed");
        }
        let port = free_port();
        let out = run_pg(
            &bin,
            "initdb",
            &[
                "-D",
                path(&data),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        assert!(out.0, "initdb failed: {}", out.1);
        let options = format!(
            "-c listen_addresses=127.0.0.1 -c port={port} -c max_connections={max_connections} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -k {}",
            path(dir.path())
        );
        let log = dir.path().join("server.log");
        let out = run_pg(
            &bin,
            "pg_ctl",
            &[
                "-D",
                path(&data),
                "-o",
                &options,
                "-l",
                path(&log),
                "-w",
                "-t",
                "30",
                "start",
            ],
        );
        assert!(
            out.0,
            "pg_ctl start failed: {}\n{}",
            out.1,
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Cluster { dir, bin, port }
    }

    fn stop(&self) {
        let data = self.dir.path().join("data");
        let _ = run_pg(
            &self.bin,
            "pg_ctl",
            &["-D", path(&data), "-m", "immediate", "-w", "stop"],
        );
    }

    /// Creates `database` (empty, from template0) as the superuser.
    fn create_database(&self, database: &str) {
        let port = self.port.to_string();
        let out = run_pg(
            &self.bin,
            "createdb",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-T",
                "template0",
                database,
            ],
        );
        assert!(out.0, "createdb {database} failed: {}", out.1);
    }
}

/// The cluster the tests of this process share: started by the first
/// test that asks, stopped when the process exits (the test harness
/// calls `exit`, which runs `atexit` handlers; statics are never dropped).
/// Starting a cluster costs a second or two of the two cores, and one
/// test binary holds about fifteen tests that need one.
fn shared_cluster() -> &'static Cluster {
    static SHARED: OnceLock<Cluster> = OnceLock::new();
    SHARED.get_or_init(|| {
        let cluster = Cluster::start(300);
        extern "C" fn stop_shared() {
            if let Some(cluster) = SHARED.get() {
                cluster.stop();
                let _ = std::fs::remove_dir_all(cluster.dir.path());
            }
        }
        // SAFETY: atexit takes a plain function that runs once at exit.
        let registered = unsafe { libc_atexit(stop_shared) };
        assert_eq!(registered, 0, "cannot register the cluster's stop at exit");
        cluster
    })
}

unsafe extern "C" {
    #[link_name = "atexit"]
    fn libc_atexit(f: extern "C" fn()) -> i32;
}

enum Owner {
    /// A database of its own in the process's shared cluster.
    Shared(&'static Cluster),
    /// A whole cluster, stopped on drop.
    Own(Cluster),
}

/// A test's PostgreSQL: a fresh database in the cluster this test process
/// shares ([`PgServer::start`]), or a cluster of its own
/// ([`PgServer::own_cluster`]). [`PgServer::url`] and [`PgServer::exec`]
/// take database names as the test knows them: `postgres` is the test's
/// own database, and [`PgServer::create_database`] makes others, whose
/// real names carry the test's prefix so that tests running side by side
/// never meet.
pub struct PgServer {
    owner: Owner,
    /// The prefix of this test's databases (empty with a cluster of its own).
    prefix: String,
    pub port: u16,
}

impl PgServer {
    /// A fresh, empty database in the process's shared cluster (started on
    /// first use), as this test's `postgres`.
    pub fn start() -> PgServer {
        static NEXT: AtomicUsize = AtomicUsize::new(1);
        let cluster = shared_cluster();
        let prefix = format!("t{}", NEXT.fetch_add(1, Ordering::Relaxed));
        cluster.create_database(&prefix);
        PgServer {
            owner: Owner::Shared(cluster),
            prefix,
            port: cluster.port,
        }
    }

    /// A cluster of this test's own, for what sees the whole cluster: a
    /// playbook that counts every session in `pg_stat_activity` or reads a
    /// database by its real name. Databases keep the names given.
    pub fn own_cluster() -> PgServer {
        let cluster = Cluster::start(100);
        let port = cluster.port;
        PgServer {
            owner: Owner::Own(cluster),
            prefix: String::new(),
            port,
        }
    }

    fn cluster(&self) -> &Cluster {
        match &self.owner {
            Owner::Shared(cluster) => cluster,
            Owner::Own(cluster) => cluster,
        }
    }

    /// The real name of the test's database `database`.
    pub fn database(&self, database: &str) -> String {
        match (self.prefix.as_str(), database) {
            ("", name) => name.to_owned(),
            (prefix, "postgres") => prefix.to_owned(),
            (prefix, name) => format!("{prefix}_{name}"),
        }
    }

    /// A URL for `database` as the superuser (no password: trust auth on
    /// loopback in a throwaway cluster).
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{}",
            self.port,
            self.database(database)
        )
    }

    /// The URL of the test's databases without their name: appending a
    /// name gives [`PgServer::url`] of that name (other than `postgres`).
    pub fn url_of_databases(&self) -> String {
        match self.prefix.as_str() {
            "" => format!("postgres://postgres@127.0.0.1:{}/", self.port),
            prefix => format!("postgres://postgres@127.0.0.1:{}/{prefix}_", self.port),
        }
    }

    /// Creates the test's database `database` (empty).
    pub fn create_database(&self, database: &str) {
        self.cluster().create_database(&self.database(database));
    }

    /// Runs SQL as the superuser with psql-free sqlx.
    pub async fn exec(&self, database: &str, sql: &str) {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&self.url(database))
            .await
            .expect("connect to the test cluster");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut conn)
            .await
            .expect("setup SQL");
    }
}

/// The `[state]` section of a config: the test's database if there is
/// one, else `state.db` beside the config.
pub fn state_section(pg: Option<&PgServer>) -> String {
    match pg {
        Some(pg) => format!("[state]\nurl = \"{}\"\n", pg.url("postgres")),
        None => "[state]\npath = \"state.db\"\n".to_owned(),
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// Runs a PostgreSQL tool, as `postgres` when we are root.
fn run_pg(bin: &Path, tool: &str, args: &[&str]) -> (bool, String) {
    let exe = if bin.as_os_str().is_empty() {
        PathBuf::from(tool)
    } else {
        bin.join(tool)
    };
    let mut command = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    command.args(args).stdin(Stdio::null());
    match command.output() {
        Ok(out) => (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ),
        Err(e) => (
            false,
            format!(
                "cannot run {}: {e}; install PostgreSQL (apt-get install postgresql) or set PG_BIN",
                exe.display()
            ),
        ),
    }
}

/// A ganache Ethereum node on 127.0.0.1 with deterministic accounts.
pub struct Ganache {
    child: Child,
    /// The chain's database: in a temp dir of ours, not one ganache
    /// makes under /tmp and leaves behind.
    _chain: TempDir,
    pub url: String,
}

/// Where `.ci/run` installs ganache: `tests/node/node_modules/.bin`.
fn ganache_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("GANACHE") {
        return PathBuf::from(bin);
    }
    // The crate this is compiled into (host or tests) sits in the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .join("tests/node/node_modules/.bin/ganache")
}

impl Ganache {
    pub async fn start() -> Ganache {
        let bin = ganache_bin();
        assert!(
            bin.exists(),
            "ganache is not installed at {}; run `npm ci --prefix tests/node` (the CI script does)",
            bin.display()
        );
        let port = free_port();
        let chain = tempfile::Builder::new()
            .prefix("stepgate-ganache-")
            .tempdir()
            .expect("temp dir");
        let child = Command::new(&bin)
            .arg("--database.dbPath")
            .arg(chain.path())
            .args([
                "--server.host",
                "127.0.0.1",
                "--server.port",
                &port.to_string(),
                "--wallet.deterministic",
                "--logging.quiet",
                "--miner.instamine",
                "eager",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ganache");
        let url = format!("http://127.0.0.1:{port}");
        let node = Ganache {
            child,
            _chain: chain,
            url,
        };
        node.wait_ready().await;
        node
    }

    async fn wait_ready(&self) {
        let client = reqwest_client();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if self
                .rpc_with(&client, "eth_blockNumber", serde_json::json!([]))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("ganache did not answer within 60 s");
    }

    async fn rpc_with(
        &self,
        client: &reqwest::Client,
        method: &str,
        params: serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        let body =
            serde_json::json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
        let answer: serde_json::Value = client
            .post(&self.url)
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        match answer.get("result") {
            Some(result) => Ok(result.clone()),
            None => Err(answer.to_string()),
        }
    }

    /// A JSON-RPC call straight to the node (test setup and assertions).
    pub async fn rpc(&self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.rpc_with(&reqwest_client(), method, params)
            .await
            .unwrap_or_else(|e| panic!("{method} on ganache failed: {e}"))
    }

    /// The first deterministic account.
    pub async fn account(&self) -> String {
        let accounts = self.rpc("eth_accounts", serde_json::json!([])).await;
        accounts[0].as_str().expect("an account").to_owned()
    }

    /// Deploys a contract whose every call returns the 32-byte word 42,
    /// and returns its address.
    pub async fn deploy_answer_42(&self) -> String {
        // Runtime: PUSH1 42, PUSH1 0, MSTORE, PUSH1 32, PUSH1 0, RETURN.
        // Init: copy the 10 runtime bytes from offset 12 and return them.
        let code = "0x600a600c600039600a6000f3602a60005260206000f3";
        let from = self.account().await;
        let tx = self
            .rpc(
                "eth_sendTransaction",
                serde_json::json!([{ "from": from, "data": code, "gas": "0x100000" }]),
            )
            .await;
        let receipt = self
            .rpc("eth_getTransactionReceipt", serde_json::json!([tx]))
            .await;
        receipt["contractAddress"]
            .as_str()
            .expect("a contract address in the receipt")
            .to_owned()
    }
}

fn reqwest_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("reqwest client")
}

impl Drop for Ganache {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prometheus Alertmanager (Debian's `prometheus-alertmanager`, installed by
/// `scripts/test-servers`) on 127.0.0.1, clustering off, sending every
/// notification (resolved ones too) to one webhook.
pub struct Alertmanager {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

fn alertmanager_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("ALERTMANAGER_BIN") {
        return PathBuf::from(bin);
    }
    for candidate in [
        "/usr/bin/prometheus-alertmanager",
        "/usr/local/bin/alertmanager",
    ] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    panic!(
        "Alertmanager is not installed: run scripts/test-servers (apt-get install prometheus-alertmanager) or set ALERTMANAGER_BIN"
    );
}

impl Alertmanager {
    /// Groups by alert name and `hot_wallet`, waits `group_wait` before the
    /// first notification of a group.
    pub async fn start(webhook: &str) -> Alertmanager {
        let dir = tempfile::tempdir().expect("a temp dir");
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            format!(
                "route:\n  receiver: stepgate\n  group_by: ['alertname', 'hot_wallet']\n  group_wait: 200ms\n  group_interval: 500ms\n  repeat_interval: 1h\nreceivers:\n  - name: stepgate\n    webhook_configs:\n      - url: '{webhook}'\n        send_resolved: true\n"
            ),
        )
        .expect("write the Alertmanager config");
        let port = free_port();
        let child = Command::new(alertmanager_bin())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start Alertmanager");
        let am = Alertmanager {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let client = reqwest_client();
        let started = Instant::now();
        loop {
            let ready = client.get(format!("{}/-/ready", am.url)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "Alertmanager did not get ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        am
    }

    /// Posts alerts the way Prometheus does (`POST /api/v2/alerts`).
    pub async fn post(&self, alerts: &serde_json::Value) {
        let answer = reqwest_client()
            .post(format!("{}/api/v2/alerts", self.url))
            .json(alerts)
            .send()
            .await
            .expect("post to Alertmanager");
        assert!(
            answer.status().is_success(),
            "Alertmanager refused the alerts: {}",
            answer.status()
        );
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
