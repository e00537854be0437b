//! Wake-up signals per queue: a commit that enqueues work (seen through
//! NOTIFY on PostgreSQL, or in this process) wakes the idle claim loop of
//! its queue at once instead of at its next poll.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use tokio::sync::Notify;

/// Wake-up signals per queue, so an idle loop claims as soon as work commits.
#[derive(Clone, Default)]
pub(crate) struct Wake(Arc<RwLock<HashMap<String, Arc<Notify>>>>);

impl Wake {
    pub(crate) fn add_queues(&self, queues: BTreeSet<&'static str>) {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        for q in queues {
            map.entry(q.to_owned()).or_default();
        }
    }

    /// Wakes the loop of `queue`, or stores the wake-up if it is busy.
    pub(crate) fn notify(&self, queue: &str) {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get(queue) {
            n.notify_one();
        }
    }

    /// Wakes every loop (after a lost NOTIFY connection, wake-ups may be missing).
    pub(crate) fn notify_all(&self) {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        for n in map.values() {
            n.notify_one();
        }
    }

    pub(crate) fn waiter(&self, queue: &str) -> Arc<Notify> {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        map.entry(queue.to_owned()).or_default().clone()
    }
}
