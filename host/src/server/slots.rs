//! Run slots: how many runs execute at once, in all (`[server] max_runs`)
//! and per playbook (`[playbooks.NAME] max_runs`). Every run a server
//! starts or resumes (alert, schedule, API, approval, sweep) takes its
//! slot here first, its playbook's before the global one, and gives both
//! back when it ends or parks: a run parked on a human holds no slot.
//!
//! Slots bound one process. Replicas each have their own; the state store,
//! not the slots, keeps two replicas from running one run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The slots of one server.
pub struct Slots {
    all: Arc<Semaphore>,
    total: u32,
    /// Per playbook: its limit when the semaphore was made, and the
    /// semaphore. A reload that changes the limit makes a new one; runs
    /// holding the old one finish in it.
    per_playbook: Mutex<HashMap<String, (usize, Arc<Semaphore>)>>,
}

/// A run's right to execute; dropped when the run ends or parks.
pub struct Slot {
    _playbook: Option<OwnedSemaphorePermit>,
    _all: OwnedSemaphorePermit,
}

/// The slots are closed: the server is stopping.
#[derive(Debug, thiserror::Error)]
#[error("the server is stopping; no run starts now")]
pub struct Closed;

impl Slots {
    pub fn new(max_runs: usize) -> Slots {
        Slots {
            all: Arc::new(Semaphore::new(max_runs)),
            total: u32::try_from(max_runs).unwrap_or(u32::MAX),
            per_playbook: Mutex::new(HashMap::new()),
        }
    }

    /// Waits for a slot of `playbook` (limited to `limit` runs at once,
    /// if set) and one of the server's.
    pub async fn take(&self, playbook: &str, limit: Option<usize>) -> Result<Slot, Closed> {
        let own = match limit.map(|limit| self.playbook_semaphore(playbook, limit)) {
            Some(semaphore) => Some(semaphore.acquire_owned().await.map_err(|_| Closed)?),
            None => None,
        };
        let all = self.all.clone().acquire_owned().await.map_err(|_| Closed)?;
        Ok(Slot {
            _playbook: own,
            _all: all,
        })
    }

    fn playbook_semaphore(&self, playbook: &str, limit: usize) -> Arc<Semaphore> {
        let mut map = match self.per_playbook.lock() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        let entry = map
            .entry(playbook.to_owned())
            .or_insert_with(|| (limit, Arc::new(Semaphore::new(limit))));
        if entry.0 != limit {
            *entry = (limit, Arc::new(Semaphore::new(limit)));
        }
        entry.1.clone()
    }

    /// Runs executing now.
    pub fn busy(&self) -> usize {
        (self.total as usize).saturating_sub(self.all.available_permits())
    }

    /// Waits up to `grace` until no run executes; false if some still do.
    pub async fn drained(&self, grace: Duration) -> bool {
        tokio::time::timeout(grace, self.all.acquire_many(self.total))
            .await
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now_or_never<F: std::future::Future>(f: F) -> Option<F::Output> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(f);
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }

    #[test]
    fn a_playbook_at_its_limit_waits_while_others_still_start() {
        let slots = Slots::new(4);
        let first = now_or_never(slots.take("rollback", Some(1))).unwrap();
        assert!(first.is_ok());
        assert!(
            now_or_never(slots.take("rollback", Some(1))).is_none(),
            "a second rollback run waits for the first"
        );
        let other = now_or_never(slots.take("drift", None)).unwrap();
        assert!(other.is_ok(), "another playbook is not held up");
        assert_eq!(slots.busy(), 2);
        drop(first);
        assert!(now_or_never(slots.take("rollback", Some(1))).is_some());
    }

    #[test]
    fn the_global_limit_bounds_every_playbook() {
        let slots = Slots::new(2);
        let a = now_or_never(slots.take("a", None)).unwrap().unwrap();
        let _b = now_or_never(slots.take("b", Some(5))).unwrap().unwrap();
        assert!(now_or_never(slots.take("c", None)).is_none());
        drop(a);
        assert!(now_or_never(slots.take("c", None)).is_some());
    }

    #[test]
    fn a_new_limit_takes_effect_for_runs_started_after_it() {
        let slots = Slots::new(8);
        let _held = now_or_never(slots.take("p", Some(1))).unwrap().unwrap();
        assert!(now_or_never(slots.take("p", Some(1))).is_none());
        // A reload raised the limit: the next run starts.
        assert!(now_or_never(slots.take("p", Some(2))).is_some());
    }
}
