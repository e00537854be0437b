//! The threads that compute password hashes: a fixed number, started on
//! first use, each lowered in CPU priority (Linux: `SCHED_BATCH`, nice 19)
//! so that a login storm gets the CPU only when requests do not need it. A request that wakes up preempts a hash at once,
//! which keeps the latency of ordinary requests flat during a storm; when
//! nothing else runs, hashes still get every cycle.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, OnceLock};

type Work = Box<dyn FnOnce() + Send>;

/// A fixed set of low-priority threads; they exit when the pool is dropped.
pub(crate) struct HashPool {
    threads: usize,
    tx: OnceLock<Mutex<Sender<Work>>>,
}

impl HashPool {
    pub(crate) fn new(threads: usize) -> Self {
        Self {
            threads: threads.max(1),
            tx: OnceLock::new(),
        }
    }

    fn sender(&self) -> &Mutex<Sender<Work>> {
        self.tx.get_or_init(|| {
            let (tx, rx) = channel::<Work>();
            let rx = Arc::new(Mutex::new(rx));
            for i in 0..self.threads {
                let rx = rx.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("hearth-hash-{i}"))
                    .spawn(move || run(&rx));
                if let Err(e) = spawned {
                    tracing::error!(error = %e, "cannot start a password hashing thread");
                }
            }
            Mutex::new(tx)
        })
    }

    /// Runs `work` on a pool thread and waits for its result.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, &'static str> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Work = Box::new(move || {
            let _ = done.send(work());
        });
        {
            let tx = self
                .sender()
                .lock()
                .map_err(|_| "the hashing pool is poisoned")?;
            tx.send(job).map_err(|_| "the hashing pool has stopped")?;
        }
        result.await.map_err(|_| "a hashing thread stopped mid-job")
    }
}

fn run(rx: &Mutex<Receiver<Work>>) {
    lower_priority();
    loop {
        // Hold the lock only to take a job, not while running it.
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

/// Lowers the calling thread to the least CPU priority of the normal class.
/// Lowering needs no privilege; if it fails anyway the thread runs at the
/// normal priority, still bounded by the pool's size.
#[cfg(target_os = "linux")]
fn lower_priority() {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    let policy = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch);
    if let Err(e) = set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, policy)
    {
        tracing::warn!(error = ?e, "cannot lower the priority of a hashing thread");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}
