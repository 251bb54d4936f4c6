//! Builds every guest component (playbooks and hostile test guests) for
//! `wasm32-wasip2`, once, into `target/guests/`, and writes their paths as
//! constants for tests, benches and the demo.
//!
//! The guests are members of this workspace but not default members, so a
//! plain `cargo test` never builds them for the host target; this script
//! runs a nested cargo for the right target with its own target directory
//! (so it never waits on the outer build's lock).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (package, constant name)
const GUESTS: &[(&str, &str)] = &[
    ("plaza-reconciliation-drift", "PLAZA_RECONCILIATION_DRIFT"),
    ("plaza-rpc-outage", "PLAZA_RPC_OUTAGE"),
    ("plaza-notify-saturation", "PLAZA_NOTIFY_SATURATION"),
    ("plaza-hot-wallet-compromise", "PLAZA_HOT_WALLET_COMPROMISE"),
    ("plaza-backup-restore", "PLAZA_BACKUP_RESTORE"),
    ("plaza-platform-alerts", "PLAZA_PLATFORM_ALERTS"),
    ("plaza-hot-wallet-alerts", "PLAZA_HOT_WALLET_ALERTS"),
    (
        "plaza-resolver-key-compromise",
        "PLAZA_RESOLVER_KEY_COMPROMISE",
    ),
    ("rgs-stuck-rollbacks", "RGS_STUCK_ROLLBACKS"),
    ("rgs-credential-leak", "RGS_CREDENTIAL_LEAK"),
    ("rgs-db-connections", "RGS_DB_CONNECTIONS"),
    ("rgs-pending-queue", "RGS_PENDING_QUEUE"),
    ("rgs-clock-skew", "RGS_CLOCK_SKEW"),
    ("rgs-rng-recert", "RGS_RNG_RECERT"),
    ("rgs-reconciliation-drift", "RGS_RECONCILIATION_DRIFT"),
    ("fiatrails-rpc-failover", "FIATRAILS_RPC_FAILOVER"),
    ("fiatrails-dlq", "FIATRAILS_DLQ"),
    ("fiatrails-no-mints", "FIATRAILS_NO_MINTS"),
    ("fiatrails-slow-rpc", "FIATRAILS_SLOW_RPC"),
    ("fiatrails-hmac-rotation", "FIATRAILS_HMAC_ROTATION"),
    ("fiatrails-upgrade-rollback", "FIATRAILS_UPGRADE_ROLLBACK"),
    ("loafinn-treasury-compromise", "LOAFINN_TREASURY_COMPROMISE"),
    ("loafinn-dlq-overflow", "LOAFINN_DLQ_OVERFLOW"),
    ("loafinn-gate-rollback", "LOAFINN_GATE_ROLLBACK"),
    ("loafinn-conservation-guard", "LOAFINN_CONSERVATION_GUARD"),
    ("exchange-ledger-invariant", "EXCHANGE_LEDGER_INVARIANT"),
    ("exchange-settlement-lag", "EXCHANGE_SETTLEMENT_LAG"),
    ("exchange-split-brain", "EXCHANGE_SPLIT_BRAIN"),
    ("exchange-postgres-failover", "EXCHANGE_POSTGRES_FAILOVER"),
    ("exchange-ws-overload", "EXCHANGE_WS_OVERLOAD"),
    ("exchange-kafka-outage", "EXCHANGE_KAFKA_OUTAGE"),
    ("exchange-routine-checks", "EXCHANGE_ROUTINE_CHECKS"),
    ("guest-hostile", "HOSTILE"),
    ("guest-unknown-import", "UNKNOWN_IMPORT"),
    ("guest-drift", "DRIFT"),
    ("guest-drift-threshold", "DRIFT_THRESHOLD_MOVED"),
    ("guest-drift-reorder", "DRIFT_WRITES_SWAPPED"),
    ("guest-drift-extra-write", "DRIFT_WRITE_ADDED"),
];

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .expect("artifacts/ lives in the workspace root")
        .to_owned();
    for watched in ["wit", "sdk/rust", "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    // Each Rust guest crate's manifest and sources, not the whole folders
    // (a new crate is also a new line in GUESTS, so this script changes):
    // a Python or JavaScript playbook beside them writes its build's files
    // (`__pycache__`, `target/`) into its own folder, which must not make
    // every later cargo command build the guests and the tests again.
    for folder in ["playbooks", "tests/guests"] {
        for crate_dir in rust_crates_in(&root.join(folder)) {
            // (A path that does not exist would make cargo run this
            // script every time.)
            for watched in ["Cargo.toml", "src", "build.rs"] {
                let path = crate_dir.join(watched);
                if path.exists() {
                    println!("cargo:rerun-if-changed={}", path.display());
                }
            }
        }
    }
    let target_dir = root.join("target").join("guests");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());

    let mut command = Command::new(cargo);
    command
        .current_dir(&root)
        .arg("build")
        .arg("--release")
        .arg("--target")
        .arg(TARGET)
        .arg("--target-dir")
        .arg(&target_dir);
    for (package, _) in GUESTS {
        command.arg("-p").arg(package);
    }
    // Nothing of the outer build's configuration belongs in the guest build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        command.env_remove(var);
    }
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the guests: {e}"));
    if !status.success() {
        panic!(
            "building the guest components failed (see above). If the error says the \
             `{TARGET}` target may not be installed, run: rustup target add {TARGET}"
        );
    }

    let mut consts = String::new();
    for (package, name) in GUESTS {
        let file = target_dir
            .join(TARGET)
            .join("release")
            .join(format!("{}.wasm", package.replace('-', "_")));
        assert!(
            Path::new(&file).exists(),
            "{} was not built",
            file.display()
        );
        consts.push_str(&format!(
            "/// The `{package}` component.\npub const {name}: &str = {:?};\n",
            file.display().to_string()
        ));
    }
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("artifacts.rs");
    std::fs::write(&out, consts).unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
}

/// The folders directly in `folder` that hold a cargo crate.
fn rust_crates_in(folder: &Path) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(folder)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", folder.display()));
    let mut crates: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|dir| dir.join("Cargo.toml").is_file())
        .collect();
    crates.sort();
    crates
}
