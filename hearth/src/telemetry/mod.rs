//! Logs: human-readable in dev, one JSON object per line in prod.
//!
//! The filter comes from `RUST_LOG` when set, else from the `log` config key
//! (`info` by default). Panics anywhere in the process are logged as errors
//! before the default hook runs, so they reach the same log as everything else.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::config::Config;

/// Installs the global log subscriber. Calling it twice is harmless (the
/// second call does nothing), which tests rely on.
pub fn init(config: &Config) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(&config.log));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(FmtSpan::NONE)
        .with_writer(std::io::stderr);
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
    if installed {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            tracing::error!(panic = %info, "panic");
            default_hook(info);
        }));
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
