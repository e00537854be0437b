//! Logs: human-readable in dev, one JSON object per line in prod.
//!
//! The filter comes from `RUST_LOG` when set, else from the `log` config key
//! (`info` by default). Panics anywhere in the process are logged as errors
//! before the default hook runs, so they reach the same log as everything else.

pub(crate) mod access;
mod writer;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::config::Config;

/// Keeps the background log writer alive; dropping it flushes what is pending.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    _writer: Option<writer::FlushGuard>,
}

/// Installs the global log subscriber. Calling it twice is harmless (the
/// second call does nothing), which tests rely on.
///
/// Lines are formatted on the calling thread and written to stderr in batches
/// by a background thread (see `writer`), so a request never waits on a
/// `write(2)`. Hold the returned guard until exit: dropping it flushes.
pub fn init(config: &Config) -> LogGuard {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(&config.log));
    let (writer, guard) = writer::BatchWriter::start();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(FmtSpan::NONE)
        .with_writer(writer);
    let installed = if config.is_prod() {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
            .is_ok()
    } else {
        builder.compact().try_init().is_ok()
    };
    if !installed {
        return LogGuard { _writer: None };
    }
    access::install(guard.writer(), config.is_prod());
    let default_hook = std::panic::take_hook();
    let flusher = guard.writer();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!(panic = %info, "panic");
        // The process may be about to abort: get the line out now.
        flusher.flush();
        default_hook(info);
    }));
    LogGuard {
        _writer: Some(guard),
    }
}

/// Installs a subscriber whose output the test harness captures, so logs show
/// only for failing tests.
pub fn init_for_tests(config: &Config) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(&config.log))
        .with_test_writer()
        .compact()
        .try_init();
}

/// Checks a log filter string, for config validation.
pub fn check_filter(filter: &str) -> Result<(), String> {
    EnvFilter::try_new(filter)
        .map(|_| ())
        .map_err(|e| e.to_string())
}
