//! A hostile playbook for the host's tests. The alert's `mode` label picks
//! the misbehaviour; every mode must end only this run, with a clear error.

use std::hint::black_box;

use stepgate_sdk::prelude::*;

struct Hostile;

impl Playbook for Hostile {
    fn describe() -> Description {
        Description::new("hostile", "0.0.1")
            .summary("Misbehaves on purpose: loops, allocates, recurses, floods, oversteps its grants.")
            .answers("Hostile")
            .db_read("plaza")
    }

    fn run(alert: Alert) -> Result<Outcome> {
        match alert.label("mode").unwrap_or("") {
            "spin" => {
                let mut n: u64 = 0;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            }
            "memory-bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(vec![0xAB; 1 << 20]));
                }
            }
            "recurse" => Ok(Outcome::new(format!("{}", recurse(black_box(u64::MAX))))),
            "call-flood" => loop {
                black_box(runbook::now_millis());
            },
            "ungranted-call" => {
                // Not granted in any test config: the host says not-granted.
                pager::page("ceo", Severity::Critical, "hostile", "should never arrive")?;
                Ok(Outcome::new("paged"))
            }
            "write-in-query" => {
                db::query("plaza", "DELETE FROM escrow_holds", params![])?;
                Ok(Outcome::new("deleted"))
            }
            "huge-result" => {
                // About 100 MiB of rows, far past the 4 MiB per-call limit.
                let rows = db::query(
                    "plaza",
                    "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r LIMIT 1000000) \
                     SELECT i, printf('%.100d', i) AS pad FROM r",
                    params![],
                )?;
                Ok(Outcome::new(format!("{} rows", rows.len())))
            }
            "panic" => panic!("the playbook panicked on purpose"),
            "give-up" => Err(Error::failed("nothing to be done")),
            "fine" => Ok(Outcome::new("all good")),
            other => Err(Error::failed(format!("unknown mode `{other}`"))),
        }
    }
}

#[inline(never)]
fn recurse(n: u64) -> u64 {
    if n == 0 {
        0
    } else {
        black_box(recurse(black_box(n - 1))).wrapping_add(1)
    }
}

stepgate_sdk::playbook!(Hostile);
