//! The state store's schema, as the migrations in `host/migrations/`,
//! compiled into the binary.
//!
//! Each is listed here by hand, with the version and description sqlx
//! derives from its file name, rather than by `sqlx::migrate!`: that macro
//! would build a second copy of sqlx and both database drivers (SQLite's C
//! library included) for the compiler, which is a minute of every cold
//! build. The test below checks this list against sqlx's own reading of
//! the directory, so a store migrated by either sees the same checksums,
//! and a migration added to the directory but not here fails it.

use std::borrow::Cow;

use sqlx::SqlStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// (version, description, SQL), oldest first.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "flags", include_str!("../../migrations/0001_flags.sql")),
    (
        2,
        "runs journal audit",
        include_str!("../../migrations/0002_runs_journal_audit.sql"),
    ),
    (
        3,
        "approvals",
        include_str!("../../migrations/0003_approvals.sql"),
    ),
    (
        4,
        "approval expiry",
        include_str!("../../migrations/0004_approval_expiry.sql"),
    ),
    (
        5,
        "rules and leases",
        include_str!("../../migrations/0005_rules_and_leases.sql"),
    ),
    (
        6,
        "step mode",
        include_str!("../../migrations/0006_step_mode.sql"),
    ),
    (7, "plans", include_str!("../../migrations/0007_plans.sql")),
    (8, "inbox", include_str!("../../migrations/0008_inbox.sql")),
    (
        9,
        "one open run",
        include_str!("../../migrations/0009_one_open_run.sql"),
    ),
    (
        10,
        "schedules",
        include_str!("../../migrations/0010_schedules.sql"),
    ),
    (
        11,
        "claims",
        include_str!("../../migrations/0011_claims.sql"),
    ),
    (
        12,
        "console",
        include_str!("../../migrations/0012_console.sql"),
    ),
    (
        13,
        "whole plans",
        include_str!("../../migrations/0013_whole_plans.sql"),
    ),
    (
        14,
        "claim leases",
        include_str!("../../migrations/0014_claim_leases.sql"),
    ),
];

/// The migrator that brings a state store up to this binary's schema.
pub fn migrator() -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    SqlStr::from_static(sql),
                    // sqlx's own marker for a migration run outside a
                    // transaction.
                    sql.starts_with("-- no-transaction"),
                )
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What sqlx reads from `host/migrations/` (as `sqlx::migrate!` does)
    /// is exactly what is compiled in: same versions, descriptions, kinds
    /// and checksums, none missing.
    #[tokio::test]
    async fn the_compiled_in_migrations_are_the_directory_s() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let read = Migrator::new(dir)
            .await
            .expect("sqlx reads host/migrations");
        let ours = migrator();
        let summary = |m: &Migrator| {
            m.iter()
                .map(|m| {
                    (
                        m.version,
                        m.description.to_string(),
                        m.migration_type,
                        m.checksum.to_vec(),
                        m.no_tx,
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(summary(&ours), summary(&read));
        assert!(ours.iter().count() >= 14);
    }
}
