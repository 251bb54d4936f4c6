//! The process exit codes every command and run record uses, so that a
//! script (CI, a cron job, a wrapper) can tell what happened without
//! reading output. A leaf: it names codes and knows nothing else.

/// The playbook finished.
pub const DONE: u8 = 0;
/// `stepgate test`: a scenario failed; `stepgate replay`: the playbook
/// no longer decides as recorded.
pub const CHECK_FAILED: u8 = 1;
/// Bad config, usage, alert, or a playbook that would not load.
pub const USAGE: u8 = 2;
/// The playbook returned an error or crashed.
pub const PLAYBOOK_ERROR: u8 = 3;
/// The run broke a limit.
pub const LIMIT: u8 = 4;
/// A write was denied and the playbook gave up.
pub const DENIED: u8 = 5;
/// `stepgate audit verify` found the chain broken.
pub const AUDIT_BROKEN: u8 = 6;
/// A resumed run stopped: a write in doubt, or the playbook diverged
/// from its journal.
pub const STOPPED: u8 = 7;
/// The run is parked on an approval.
pub const PARKED: u8 = 8;
/// `stepgate sweep` left work undone (a page failed, a run would not
/// resume); the next sweep tries again.
pub const INCOMPLETE: u8 = 9;
