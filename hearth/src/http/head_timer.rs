//! The timer behind hyper's HTTP/1 header-read timeout, one per connection.
//!
//! hyper asks its timer for a fresh deadline every time it starts reading a
//! request head and drops it once the head is in. With tokio's timer that is
//! an insert into the timer wheel and a removal for every request, which
//! measured as one of the largest costs of a small request (BENCHMARKS.md).
//!
//! Here each connection keeps one tokio timer and every head deadline of that
//! connection shares it. The shared timer only moves when it fires: a
//! deadline later than the one it is set for is honoured by re-arming it
//! then (the connection's task is woken once for nothing, at most once per
//! timeout period), and an earlier one re-arms it at once. A head that
//! arrives in time therefore costs no timer-wheel operation at all, and a
//! client that trickles its head is still cut off at its own deadline.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};

/// A connection's timer: give each connection its own (see the module docs).
#[derive(Clone)]
pub(crate) struct HeadTimer {
    shared: Arc<Mutex<Pin<Box<tokio::time::Sleep>>>>,
}

impl HeadTimer {
    /// A timer for one connection; must be made inside the tokio runtime.
    pub(crate) fn new() -> Self {
        // Not registered with the runtime until first polled, so far away is free.
        let idle = tokio::time::Instant::now() + Duration::from_secs(24 * 60 * 60);
        Self {
            shared: Arc::new(Mutex::new(Box::pin(tokio::time::sleep_until(idle)))),
        }
    }
}

impl Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(HeadDeadline {
            deadline,
            shared: self.shared.clone(),
        })
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<HeadDeadline>() {
            Some(mut mine) => mine.deadline = new_deadline,
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

/// One deadline, completed once it has passed.
struct HeadDeadline {
    deadline: Instant,
    shared: Arc<Mutex<Pin<Box<tokio::time::Sleep>>>>,
}

impl Sleep for HeadDeadline {}

impl Future for HeadDeadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = tokio::time::Instant::from_std(self.deadline);
        // Only this connection's task polls its deadlines, one at a time, so
        // the lock is never contended; a poisoned one still holds a timer.
        let mut timer = self
            .shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if timer.deadline() > deadline {
            timer.as_mut().reset(deadline);
        }
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // The shared timer fired: it was set for this deadline or an
            // earlier one of the same connection.
            if tokio::time::Instant::now() >= deadline {
                return Poll::Ready(());
            }
            timer.as_mut().reset(deadline);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deadline_in(timer: &HeadTimer, ms: u64) -> Pin<Box<dyn Sleep>> {
        timer.sleep(Duration::from_millis(ms))
    }

    /// Waits for `sleep`, failing the test if it takes seconds, not millis.
    async fn fires(sleep: Pin<Box<dyn Sleep>>) {
        tokio::time::timeout(Duration::from_secs(5), sleep)
            .await
            .expect("the deadline fired");
    }

    /// Polls once, as hyper does before the head is in.
    fn pending(sleep: &mut Pin<Box<dyn Sleep>>) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        sleep.as_mut().poll(&mut cx).is_pending()
    }

    #[tokio::test]
    async fn each_deadline_completes_at_its_own_time_on_one_shared_timer() {
        let timer = HeadTimer::new();
        // A long deadline first arms the shared timer far out …
        let mut long = deadline_in(&timer, 60_000);
        assert!(pending(&mut long));
        drop(long);
        // … and a shorter one after it still fires on time.
        let start = Instant::now();
        fires(deadline_in(&timer, 50)).await;
        assert!(start.elapsed() >= Duration::from_millis(50));
        // A later deadline after an earlier one (the usual order: one head
        // after another) re-arms the timer when the earlier time passes.
        let mut first = deadline_in(&timer, 30);
        assert!(pending(&mut first));
        drop(first);
        let start = Instant::now();
        fires(deadline_in(&timer, 120)).await;
        assert!(start.elapsed() >= Duration::from_millis(120));
    }

    #[tokio::test]
    async fn reset_moves_a_deadline() {
        let timer = HeadTimer::new();
        let mut sleep = deadline_in(&timer, 60_000);
        assert!(pending(&mut sleep));
        let start = Instant::now();
        timer.reset(&mut sleep, Instant::now() + Duration::from_millis(40));
        fires(sleep).await;
        assert!(start.elapsed() >= Duration::from_millis(40));
    }
}
