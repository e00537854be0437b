//! A log writer that batches lines and writes them from a background thread.
//!
//! Writing each log line straight to stderr costs a system call per line, and
//! handing each line to a writer thread through a channel costs a thread
//! wake-up per line; under load either one dominates the cost of a request.
//! Here lines are appended to a shared buffer, and a background thread writes
//! the buffer every [`FLUSH_EVERY`]. The buffer is bounded: a writer that
//! finds it over [`MAX_BUFFER`] writes it out itself, so memory stays bounded
//! and lines are never dropped. Order is kept: whoever writes holds the output
//! lock from taking the buffer until the bytes are out.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long a line may wait in the buffer.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Bytes buffered before a writer flushes synchronously.
pub(crate) const MAX_BUFFER: usize = 1024 * 1024;

struct Shared {
    buf: Mutex<Vec<u8>>,
    out: Mutex<()>,
    stop: AtomicBool,
    wake: Condvar,
}

/// The writer handed to the log subscriber; cheap to clone.
#[derive(Clone)]
pub(crate) struct BatchWriter {
    shared: Arc<Shared>,
}

/// Stops the background thread, flushing what is left, when dropped.
pub(crate) struct FlushGuard {
    writer: BatchWriter,
    thread: Option<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain bytes behind; keep logging.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl BatchWriter {
    /// Starts the background thread. Falls back to synchronous writes if the
    /// thread cannot be spawned.
    pub(crate) fn start() -> (BatchWriter, FlushGuard) {
        let writer = BatchWriter {
            shared: Arc::new(Shared {
                buf: Mutex::new(Vec::with_capacity(64 * 1024)),
                out: Mutex::new(()),
                stop: AtomicBool::new(false),
                wake: Condvar::new(),
            }),
        };
        let bg = writer.clone();
        let thread = std::thread::Builder::new()
            .name("hearth-log".into())
            .spawn(move || bg.run())
            .ok();
        if thread.is_none() {
            writer.shared.stop.store(true, Ordering::SeqCst);
        }
        (writer.clone(), FlushGuard { writer, thread })
    }

    fn run(&self) {
        loop {
            let guard = lock(&self.shared.buf);
            let (guard, _) = self
                .shared
                .wake
                .wait_timeout(guard, FLUSH_EVERY)
                .unwrap_or_else(PoisonError::into_inner);
            drop(guard);
            self.flush();
            if self.shared.stop.load(Ordering::SeqCst) {
                self.flush();
                return;
            }
        }
    }

    /// Writes out everything buffered so far.
    pub(crate) fn flush(&self) {
        let _out = lock(&self.shared.out);
        let data = std::mem::take(&mut *lock(&self.shared.buf));
        if !data.is_empty() {
            let mut err = std::io::stderr().lock();
            // Nowhere left to report a failing stderr; the bytes are dropped.
            let _ = err.write_all(&data);
            let _ = err.flush();
        }
    }

    /// Appends bytes (whole lines) to the buffer.
    pub(crate) fn append(&self, bytes: &[u8]) {
        self.append_with(|buf| buf.extend_from_slice(bytes));
    }

    /// Lets `write` append whole lines to the buffer in place, which saves
    /// formatting into a line of its own first and copying it.
    pub(crate) fn append_with(&self, write: impl FnOnce(&mut Vec<u8>)) {
        let over = {
            let mut buf = lock(&self.shared.buf);
            write(&mut buf);
            buf.len() >= MAX_BUFFER
        };
        if over || self.shared.stop.load(Ordering::Relaxed) {
            self.flush();
        }
    }
}

impl FlushGuard {
    /// A handle that can flush from elsewhere (the panic hook).
    pub(crate) fn writer(&self) -> BatchWriter {
        self.writer.clone()
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.writer.shared.stop.store(true, Ordering::SeqCst);
        self.writer.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.writer.flush();
    }
}

/// One event's writer: the subscriber formats a line and writes it in one call.
pub(crate) struct LineWriter<'a>(&'a BatchWriter);

impl Write for LineWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.append(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter(self)
    }
}
