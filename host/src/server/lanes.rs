//! Dispatch lanes: the alerts of one fingerprint are dispatched one at a
//! time, in the order they arrived (a `resolved` after its `firing`), while
//! alerts of different fingerprints go side by side. So an alert that waits
//! for a run slot (its playbook at its `max_runs`) holds up no other
//! incident, and none overtakes its own earlier notification.
//!
//! A lane is a task with a queue; it ends when its queue is empty. It
//! hands its dispatcher everything queued so far at once (in order, at
//! most [`MAX_TAKEN`]), so a burst of repeats of one incident can be
//! recorded together. At most `max` lanes are open at once; past that,
//! the dispatcher waits. An alert already queued (the sweeper hands over
//! again what waits too long) is not queued twice.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::state::inbox::Accepted;

type Open = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Accepted>>>>;
type Queued = Arc<Mutex<HashSet<String>>>;

/// The open lanes, by fingerprint.
pub struct Lanes<F> {
    open: Open,
    /// The ids of the alerts queued or being dispatched.
    queued: Queued,
    limit: Arc<Semaphore>,
    /// Dispatches the alerts of one fingerprint, in order.
    dispatch: F,
}

fn lock(open: &Open) -> MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<Accepted>>> {
    match open.lock() {
        Ok(map) => map,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// The alerts a lane hands its dispatcher at once, at most.
pub const MAX_TAKEN: usize = 256;

impl<F, Fut> Lanes<F>
where
    F: Fn(Vec<Accepted>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    pub fn new(max: usize, dispatch: F) -> Lanes<F> {
        Lanes {
            open: Arc::new(Mutex::new(HashMap::new())),
            queued: Arc::new(Mutex::new(HashSet::new())),
            limit: Arc::new(Semaphore::new(max.max(1))),
            dispatch,
        }
    }

    /// Queues `accepted` behind the earlier alerts of its fingerprint, or
    /// opens a lane for it.
    pub async fn push(&self, accepted: Accepted) {
        let fresh = match self.queued.lock() {
            Ok(mut ids) => ids.insert(accepted.id.clone()),
            Err(poisoned) => poisoned.into_inner().insert(accepted.id.clone()),
        };
        if !fresh {
            return;
        }
        let mut accepted = accepted;
        loop {
            {
                let mut open = lock(&self.open);
                if let Some(lane) = open.get(&accepted.fingerprint) {
                    match lane.send(accepted) {
                        Ok(()) => return,
                        // The lane just ended: open a new one.
                        Err(mpsc::error::SendError(back)) => {
                            open.remove(&back.fingerprint);
                            accepted = back;
                        }
                    }
                }
            }
            let Ok(permit) = self.limit.clone().acquire_owned().await else {
                return;
            };
            let (sender, receiver) = mpsc::unbounded_channel();
            {
                let mut open = lock(&self.open);
                if open.contains_key(&accepted.fingerprint) {
                    // Another push opened it while this one waited.
                    continue;
                }
                let fingerprint = accepted.fingerprint.clone();
                if sender.send(accepted).is_err() {
                    return;
                }
                open.insert(fingerprint.clone(), sender);
                tokio::spawn(lane(
                    self.open.clone(),
                    self.queued.clone(),
                    fingerprint,
                    receiver,
                    self.dispatch.clone(),
                    permit,
                ));
            }
            return;
        }
    }
}

/// Dispatches the lane's alerts in order, each time all those queued so
/// far; closes the lane once its queue is empty (checked under the map's
/// lock, so no alert is left behind).
async fn lane<F, Fut>(
    open: Open,
    queued: Queued,
    fingerprint: String,
    mut queue: mpsc::UnboundedReceiver<Accepted>,
    dispatch: F,
    _permit: OwnedSemaphorePermit,
) where
    F: Fn(Vec<Accepted>) -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        let mut taken = Vec::new();
        while taken.len() < MAX_TAKEN {
            match queue.try_recv() {
                Ok(next) => taken.push(next),
                Err(_) => break,
            }
        }
        if taken.is_empty() {
            let mut map = lock(&open);
            match queue.try_recv() {
                Ok(next) => taken.push(next),
                Err(_) => {
                    map.remove(&fingerprint);
                    return;
                }
            }
        }
        let ids: Vec<String> = taken.iter().map(|a| a.id.clone()).collect();
        dispatch(taken).await;
        let mut queued = match queued.lock() {
            Ok(ids) => ids,
            Err(poisoned) => poisoned.into_inner(),
        };
        for id in &ids {
            queued.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::{Alert, AlertStatus};
    use std::time::Duration;

    fn accepted(id: &str, fingerprint: &str) -> Accepted {
        Accepted {
            id: id.into(),
            alert: Alert {
                name: "A".into(),
                status: AlertStatus::Firing,
                labels: Vec::new(),
                annotations: Vec::new(),
                starts_at: None,
                fingerprint: Some(fingerprint.into()),
            },
            received_at: 0,
            fingerprint: fingerprint.into(),
            source: "test".into(),
        }
    }

    #[tokio::test]
    async fn one_fingerprint_in_order_while_another_is_not_held_up() {
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let gate = Arc::new(tokio::sync::Notify::new());
        let (s, g) = (seen.clone(), gate.clone());
        let lanes = Lanes::new(8, move |taken: Vec<Accepted>| {
            let (seen, gate) = (s.clone(), g.clone());
            async move {
                for a in taken {
                    // The first alert of `slow` waits (as for a run slot).
                    if a.id == "slow-1" {
                        gate.notified().await;
                    }
                    seen.lock().unwrap().push(a.id);
                }
            }
        });
        lanes.push(accepted("slow-1", "slow")).await;
        lanes.push(accepted("slow-2", "slow")).await;
        // Handed over again while it waits: queued once.
        lanes.push(accepted("slow-2", "slow")).await;
        lanes.push(accepted("fast-1", "fast")).await;
        // slow-1 waits for the gate, so fast-1 is all that can be seen.
        until(|| !seen.lock().unwrap().is_empty()).await;
        assert_eq!(*seen.lock().unwrap(), ["fast-1"], "fast is not held up");
        gate.notify_one();
        until(|| seen.lock().unwrap().len() == 3).await;
        assert_eq!(*seen.lock().unwrap(), ["fast-1", "slow-1", "slow-2"]);
        // Both lanes close once empty; a new alert opens a lane again.
        until(|| lock(&lanes.open).is_empty()).await;
        lanes.push(accepted("slow-3", "slow")).await;
        until(|| seen.lock().unwrap().len() == 4).await;
        assert_eq!(seen.lock().unwrap()[3], "slow-3");
    }

    /// Lets the lanes' tasks run until `done` holds; panics after 10 s.
    async fn until(done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "waited 10 s");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// A lane hands over everything queued behind the alert it was busy
    /// with at once, in order.
    #[tokio::test]
    async fn what_queued_meanwhile_is_handed_over_at_once() {
        let handed = Arc::new(Mutex::new(Vec::<Vec<String>>::new()));
        let gate = Arc::new(tokio::sync::Notify::new());
        let busy = Arc::new(tokio::sync::Notify::new());
        let (h, g, b) = (handed.clone(), gate.clone(), busy.clone());
        let lanes = Lanes::new(8, move |taken: Vec<Accepted>| {
            let (handed, gate, busy) = (h.clone(), g.clone(), b.clone());
            async move {
                let ids: Vec<String> = taken.into_iter().map(|a| a.id).collect();
                if ids[0] == "a-1" {
                    busy.notify_one();
                    gate.notified().await;
                }
                handed.lock().unwrap().push(ids);
            }
        });
        lanes.push(accepted("a-1", "a")).await;
        // Once the lane is busy with a-1 alone, three more queue behind it.
        busy.notified().await;
        for id in ["a-2", "a-3", "a-4"] {
            lanes.push(accepted(id, "a")).await;
        }
        gate.notify_one();
        until(|| handed.lock().unwrap().len() == 2).await;
        assert_eq!(
            *handed.lock().unwrap(),
            [vec!["a-1"], vec!["a-2", "a-3", "a-4"]]
        );
    }
}
