//! Logs, metrics and operator notifications.
//!
//! Logs: human-readable in dev, one JSON object per line in prod.
//!
//! The filter comes from `RUST_LOG` when set, else from the `log` config key
//! (`info` by default). Panics anywhere in the process are logged as errors
//! before the default hook runs, so they reach the same log as everything else.

pub(crate) mod access;
mod config;
pub(crate) mod metrics;
pub(crate) mod notify;
pub(crate) mod sample;
mod writer;

pub use config::{MetricsConfig, NotifyConfig};
pub use metrics::Metrics;
pub use notify::{Event, EventKind, Notifier};

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
        let json = tracing_subscriber::fmt::format()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false);
        builder
            .json()
            .event_format(WithRequest(json))
            .try_init()
            .is_ok()
    } else {
        let compact = tracing_subscriber::fmt::format().compact();
        builder
            .compact()
            .event_format(WithRequest(compact))
            .try_init()
            .is_ok()
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

/// Adds the request id and the signed-in user's id to every line written
/// while a request is handled, in whichever format the inner formatter uses.
///
/// They come from the request's task-local (set by the pipeline's outer
/// layer and by session loading), so no span is created per request: the
/// cost is paid only by lines actually written. Lines inside a request are
/// formatted into a buffer to add the fields, which drops terminal colours
/// from those lines in development.
struct WithRequest<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for WithRequest<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let Some((id, user)) = crate::http::front_current() else {
            return self.0.format_event(ctx, writer, event);
        };
        let id = id.as_str();
        let mut line = String::with_capacity(256);
        self.0.format_event(
            ctx,
            tracing_subscriber::fmt::format::Writer::new(&mut line),
            event,
        )?;
        let body = line.trim_end_matches('\n');
        // The request id is always a safe token (see `front`), so it needs no escaping.
        if let Some(obj) = body.strip_suffix('}')
            && body.starts_with('{')
        {
            writer.write_str(obj)?;
            if !obj.contains("\"request_id\":") {
                write!(writer, ",\"request_id\":\"{id}\"")?;
            }
            if let Some(u) = user
                && !obj.contains("\"user_id\":")
            {
                write!(writer, ",\"user_id\":{u}")?;
            }
            writer.write_str("}\n")
        } else {
            writer.write_str(body)?;
            if !body.contains(" request_id=") {
                write!(writer, " request_id={id}")?;
            }
            if let Some(u) = user
                && !body.contains(" user_id=")
            {
                write!(writer, " user_id={u}")?;
            }
            writer.write_char('\n')
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::WithRequest;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(json: bool, f: impl FnOnce()) -> Vec<String> {
        let buf = Buf::default();
        let out = buf.clone();
        let builder = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || out.clone());
        if json {
            let fmt = tracing_subscriber::fmt::format().json().flatten_event(true);
            let sub = builder.json().event_format(WithRequest(fmt)).finish();
            tracing::subscriber::with_default(sub, f);
        } else {
            let fmt = tracing_subscriber::fmt::format().compact().with_ansi(false);
            let sub = builder.event_format(WithRequest(fmt)).finish();
            tracing::subscriber::with_default(sub, f);
        }
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    fn emit() {
        tracing::warn!(n = 1, "outside");
        crate::http::front_in_request("req-1", None, || tracing::warn!("before sign-in"));
        crate::http::front_in_request("req-2", Some(42), || tracing::warn!(k = "v", "signed in"));
    }

    #[test]
    fn json_lines_inside_a_request_carry_its_id_and_user() {
        let l = lines(true, emit);
        assert_eq!(l.len(), 3, "{l:?}");
        let v: Vec<serde_json::Value> =
            l.iter().map(|x| serde_json::from_str(x).unwrap()).collect();
        assert!(v[0].get("request_id").is_none());
        assert_eq!(v[1]["request_id"], "req-1");
        assert!(v[1].get("user_id").is_none());
        assert_eq!(v[2]["request_id"], "req-2");
        assert_eq!(v[2]["user_id"], 42);
        assert_eq!(v[2]["k"], "v");
        assert_eq!(v[2]["message"], "signed in");
    }

    #[test]
    fn text_lines_inside_a_request_carry_its_id_and_user() {
        let l = lines(false, emit);
        assert_eq!(l.len(), 3, "{l:?}");
        assert!(!l[0].contains("request_id"), "{}", l[0]);
        assert!(l[1].ends_with(" request_id=req-1"), "{}", l[1]);
        assert!(l[2].ends_with(" request_id=req-2 user_id=42"), "{}", l[2]);
    }
}
