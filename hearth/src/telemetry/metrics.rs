//! Metrics: what the app measures, exposed for Prometheus at `/metrics` and,
//! when configured, sent to statsd over UDP.
//!
//! Each app state owns its own registry (no process-wide recorder), so two
//! apps in one process (as in the tests) keep separate figures. Counters and
//! histograms are updated where things happen (the pipeline's outer layer,
//! the job workers); gauges that live in the database (queue depth, cron) or
//! the OS (memory, CPU) are sampled when `/metrics` is read and every
//! `metrics.sample_interval` for statsd.
//!
//! Series (all prefixed `hearth_`):
//! - `http_requests_total` and `http_request_duration_seconds` by method,
//!   route (the matched route pattern, `unmatched` for 404s, so paths cannot
//!   blow up the label set) and status;
//! - `db_pool_connections{state=in_use|idle}`, `db_pool_max_connections`,
//!   `db_pool_acquire_seconds` (a connection taken from the pool at each
//!   sample: how long a query waits for a connection at that moment);
//! - `jobs{queue,state=pending|due|active|dead}`, `jobs_oldest_due_seconds`,
//!   `job_start_delay_seconds` (due → started), `job_failures_total`,
//!   `jobs_dead_lettered_total`;
//! - `cron_last_success_timestamp_seconds{schedule}`;
//! - `process_resident_memory_bytes`, `process_cpu_seconds_total`,
//!   `process_start_time_seconds`.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cadence::prelude::*;
use cadence::{QueuingMetricSink, StatsdClient, UdpMetricSink};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::config::Config;
use crate::db::Db;

/// A route pattern as a label value, shared rather than copied per request.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(crate) struct Route(Arc<str>);

impl EncodeLabelValue for Route {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(&self.0)
    }
}

impl Route {
    /// The pattern.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    route: Route,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueState {
    queue: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    queue: String,
    job: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModuleLabel {
    module: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModuleState {
    module: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScheduleLabel {
    schedule: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// One request series' handles, cloned out of their families (they share
/// the families' values).
struct HttpSeries {
    count: Counter,
    duration: Histogram,
}

/// Which registry, method, route pattern and status a cached series is for.
/// The method and route are the addresses of their interned labels, so the
/// key is compared and hashed as four integers instead of three strings.
type SeriesKey = (u64, usize, usize, u16);

/// Series cached per thread past this many are dropped and looked up again
/// (only a process running many apps, as the tests do, gets near it).
const SERIES_CACHE_MAX: usize = 4096;

thread_local! {
    /// The request path's way to its series: a family lookup takes a lock
    /// and hashes the label strings, which cost more than the rest of
    /// recording a request; this map is only touched by its own thread.
    static HTTP_SERIES: RefCell<rustc_hash::FxHashMap<SeriesKey, HttpSeries>> =
        RefCell::new(rustc_hash::FxHashMap::default());
}

/// Numbers each registry, so that a thread's cached series never outlive
/// theirs under a reused address.
static NEXT_REGISTRY: AtomicU64 = AtomicU64::new(1);
type FloatGauge = Gauge<f64, AtomicU64>;

/// Request latencies: 1 ms to about 16 s.
fn latency_buckets() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 15,
    ))
}

/// Job start delays: 10 ms to about 45 min.
fn delay_buckets() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.01, 3.0, 13,
    ))
}

/// The app's metrics; cheap to clone. Disabled (`metrics.enabled = false`),
/// every call does nothing.
#[derive(Clone, Default)]
pub struct Metrics(Option<Arc<Inner>>);

struct Inner {
    /// This registry's number in the series cache's keys.
    id: u64,
    registry: Registry,
    routes: RwLock<HashSet<Arc<str>>>,
    // Made once: labels used on the request path must not allocate.
    unmatched: Route,
    other: Route,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: HistogramFamily<HttpLabels>,
    pool_connections: Family<StateLabel, Gauge>,
    pool_max: Gauge,
    pool_acquire: Histogram,
    jobs: Family<QueueState, Gauge>,
    oldest_due: Family<QueueLabel, FloatGauge>,
    job_delay: HistogramFamily<QueueLabel>,
    job_failures: Family<JobLabels, Counter>,
    job_dead: Family<JobLabels, Counter>,
    cron_success: Family<ScheduleLabel, FloatGauge>,
    events_handled: Family<ModuleLabel, Counter>,
    events_failed: Family<ModuleLabel, Counter>,
    events_lag: Family<ModuleLabel, FloatGauge>,
    events_behind: Family<ModuleLabel, Gauge>,
    events_held: Family<ModuleState, Gauge>,
    rss: Gauge,
    cpu: Counter<f64, AtomicU64>,
    cpu_seen: Mutex<f64>,
    statsd: Option<StatsdClient>,
}

/// Distinct route labels kept; past this (which only a router built at run
/// time could reach) new ones are counted as `other`.
const MAX_ROUTES: usize = 1000;

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("enabled", &self.0.is_some())
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry with every series, or a disabled one. A statsd address that
    /// cannot be used is logged and skipped: metrics must never stop the app.
    pub(crate) fn new(config: &Config, app: &str) -> Self {
        if !config.metrics.enabled {
            return Self(None);
        }
        let mut reg = Registry::with_prefix("hearth");
        let http_requests = Family::<HttpLabels, Counter>::default();
        reg.register(
            "http_requests",
            "HTTP requests by method, route pattern and status",
            http_requests.clone(),
        );
        let http_duration: HistogramFamily<HttpLabels> =
            Family::new_with_constructor(latency_buckets);
        reg.register_with_unit(
            "http_request_duration",
            "Time from the request's arrival to its response",
            Unit::Seconds,
            http_duration.clone(),
        );
        let pool_connections = Family::<StateLabel, Gauge>::default();
        reg.register(
            "db_pool_connections",
            "Database connections open in the pool, in use or idle",
            pool_connections.clone(),
        );
        let pool_max = Gauge::default();
        reg.register(
            "db_pool_max_connections",
            "The pool's size limit",
            pool_max.clone(),
        );
        let pool_acquire = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.0001, 4.0, 10),
        );
        reg.register_with_unit(
            "db_pool_acquire",
            "Wait for a pooled connection, measured at each sample",
            Unit::Seconds,
            pool_acquire.clone(),
        );
        let jobs = Family::<QueueState, Gauge>::default();
        reg.register(
            "jobs",
            "Jobs by queue and state (pending, due, active, dead)",
            jobs.clone(),
        );
        let oldest_due = Family::<QueueLabel, FloatGauge>::default();
        reg.register_with_unit(
            "jobs_oldest_due",
            "How long the oldest due job has waited",
            Unit::Seconds,
            oldest_due.clone(),
        );
        let job_delay: HistogramFamily<QueueLabel> = Family::new_with_constructor(delay_buckets);
        reg.register_with_unit(
            "job_start_delay",
            "Time from a job being due (enqueued, or its run time) to a worker starting it",
            Unit::Seconds,
            job_delay.clone(),
        );
        let job_failures = Family::<JobLabels, Counter>::default();
        reg.register("job_failures", "Failed job attempts", job_failures.clone());
        let job_dead = Family::<JobLabels, Counter>::default();
        reg.register(
            "jobs_dead_lettered",
            "Jobs moved to the dead queue",
            job_dead.clone(),
        );
        let cron_success = Family::<ScheduleLabel, FloatGauge>::default();
        reg.register(
            "cron_last_success_timestamp_seconds",
            "When the tick whose job last succeeded fired, unix seconds",
            cron_success.clone(),
        );
        let events_handled = Family::<ModuleLabel, Counter>::default();
        reg.register(
            "events_handled",
            "Domain events a subscribing module handled in this process",
            events_handled.clone(),
        );
        let events_failed = Family::<ModuleLabel, Counter>::default();
        reg.register(
            "events_failed",
            "Failed deliveries of domain events in this process (each is retried or parked)",
            events_failed.clone(),
        );
        let events_lag = Family::<ModuleLabel, FloatGauge>::default();
        reg.register_with_unit(
            "events_lag",
            "Age of the oldest event a subscribing module has not read yet",
            Unit::Seconds,
            events_lag.clone(),
        );
        let events_behind = Family::<ModuleLabel, Gauge>::default();
        reg.register(
            "events_behind",
            "Events published that a subscribing module has not read yet",
            events_behind.clone(),
        );
        let events_held = Family::<ModuleState, Gauge>::default();
        reg.register(
            "events_held",
            "Events a module took out of its stream, by state (retry, parked, waiting)",
            events_held.clone(),
        );
        let rss = Gauge::default();
        reg.register_with_unit(
            "process_resident_memory",
            "Resident memory of this process",
            Unit::Bytes,
            rss.clone(),
        );
        let cpu = Counter::<f64, AtomicU64>::default();
        reg.register_with_unit(
            "process_cpu",
            "CPU time used by this process, user and system",
            Unit::Seconds,
            cpu.clone(),
        );
        let start = FloatGauge::default();
        start.set(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
        );
        reg.register(
            "process_start_time_seconds",
            "When this process started serving, unix seconds",
            start,
        );
        Self(Some(Arc::new(Inner {
            id: NEXT_REGISTRY.fetch_add(1, Ordering::Relaxed),
            registry: reg,
            routes: RwLock::new(HashSet::new()),
            unmatched: Route(Arc::from("unmatched")),
            other: Route(Arc::from("other")),
            http_requests,
            http_duration,
            pool_connections,
            pool_max,
            pool_acquire,
            jobs,
            oldest_due,
            job_delay,
            job_failures,
            job_dead,
            cron_success,
            events_handled,
            events_failed,
            events_lag,
            events_behind,
            events_held,
            rss,
            cpu,
            cpu_seen: Mutex::new(0.0),
            statsd: statsd_client(config, app),
        })))
    }

    /// Whether anything is measured.
    pub fn enabled(&self) -> bool {
        self.0.is_some()
    }

    /// The shared label for a route pattern.
    pub(crate) fn route(&self, pattern: &str) -> Option<Route> {
        let inner = self.0.as_ref()?;
        {
            let known = inner.routes.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(r) = known.get(pattern) {
                return Some(Route(r.clone()));
            }
        }
        let mut known = inner.routes.write().unwrap_or_else(PoisonError::into_inner);
        if known.len() >= MAX_ROUTES {
            return Some(inner.other.clone());
        }
        let r: Arc<str> = Arc::from(pattern);
        known.insert(r.clone());
        Some(Route(r))
    }

    /// One finished request.
    pub(crate) fn http(
        &self,
        method: &axum::http::Method,
        route: Option<&Route>,
        status: u16,
        took: Duration,
    ) {
        let Some(inner) = &self.0 else { return };
        let method = method_label(method);
        let route = route.unwrap_or(&inner.unmatched);
        let key = (
            inner.id,
            method.as_ptr() as usize,
            Arc::as_ptr(&route.0).cast::<u8>() as usize,
            status,
        );
        let secs = took.as_secs_f64();
        HTTP_SERIES.with_borrow_mut(|cache| {
            if let Some(series) = cache.get(&key) {
                series.count.inc();
                series.duration.observe(secs);
                return;
            }
            if cache.len() >= SERIES_CACHE_MAX {
                cache.clear();
            }
            let labels = HttpLabels {
                method,
                route: route.clone(),
                status,
            };
            let series = HttpSeries {
                count: inner.http_requests.get_or_create_owned(&labels),
                duration: inner.http_duration.get_or_create_owned(&labels),
            };
            series.count.inc();
            series.duration.observe(secs);
            cache.insert(key, series);
        });
        if let Some(s) = &inner.statsd {
            // Only with statsd on: the Prometheus path allocates nothing here.
            let status = status.to_string();
            let status = status.as_str();
            let tags = [
                ("method", method),
                ("route", route.as_str()),
                ("status", status),
            ];
            let _ = tagged(s.count_with_tags("http.requests", 1), &tags).try_send();
            let _ = tagged(s.time_with_tags("http.request", took), &tags).try_send();
        }
    }

    /// A worker started a job `delay` after it was due.
    pub(crate) fn job_started(&self, queue: &str, delay: Duration) {
        let Some(inner) = &self.0 else { return };
        inner
            .job_delay
            .get_or_create(&QueueLabel {
                queue: queue.to_owned(),
            })
            .observe(delay.as_secs_f64());
        if let Some(s) = &inner.statsd {
            let _ = s
                .time_with_tags("jobs.start_delay", delay)
                .with_tag("queue", queue)
                .try_send();
        }
    }

    /// A job attempt failed; `dead` when it will not be tried again.
    pub(crate) fn job_failed(&self, queue: &str, job: &str, dead: bool) {
        let Some(inner) = &self.0 else { return };
        let labels = JobLabels {
            queue: queue.to_owned(),
            job: job.to_owned(),
        };
        inner.job_failures.get_or_create(&labels).inc();
        if dead {
            inner.job_dead.get_or_create(&labels).inc();
        }
        if let Some(s) = &inner.statsd {
            let tags = [("queue", queue), ("job", job)];
            let _ = tagged(s.count_with_tags("jobs.failures", 1), &tags).try_send();
            if dead {
                let _ = tagged(s.count_with_tags("jobs.dead", 1), &tags).try_send();
            }
        }
    }

    /// A pass of an event reader of `module` ended.
    pub(crate) fn events_pass(&self, module: &str, handled: u64, failed: u64) {
        let Some(inner) = &self.0 else { return };
        if handled == 0 && failed == 0 {
            return;
        }
        let label = ModuleLabel {
            module: module.to_owned(),
        };
        inner.events_handled.get_or_create(&label).inc_by(handled);
        inner.events_failed.get_or_create(&label).inc_by(failed);
        if let Some(s) = &inner.statsd {
            let _ = s
                .count_with_tags("events.handled", handled as i64)
                .with_tag("module", module)
                .try_send();
        }
    }

    /// Samples the pool and checks that the database answers within
    /// `limit`; `true` when metrics are off (nothing to sample).
    pub(crate) async fn sample_pool(&self, db: &Db, limit: Duration) -> bool {
        match &self.0 {
            Some(inner) => inner.sample_pool(db, limit).await,
            None => true,
        }
    }

    /// Samples the process's memory and CPU time.
    pub(crate) fn sample_process(&self) {
        if let Some(inner) = &self.0 {
            inner.sample_process();
        }
    }

    /// Sets one queue's gauges: jobs per state (`pending`, `due`,
    /// `active`, `dead`) and how long its oldest due job has waited.
    pub(crate) fn record_queue(
        &self,
        queue: &str,
        counts: [(&'static str, i64); 4],
        oldest_due_ms: i64,
    ) {
        let Some(inner) = &self.0 else { return };
        for (st, n) in counts {
            inner
                .jobs
                .get_or_create(&QueueState {
                    queue: queue.to_owned(),
                    state: st,
                })
                .set(n);
            if let Some(s) = &inner.statsd {
                let _ = s
                    .gauge_with_tags(&format!("jobs.{st}"), n as f64)
                    .with_tag("queue", queue)
                    .try_send();
            }
        }
        let oldest = oldest_due_ms as f64 / 1000.0;
        inner
            .oldest_due
            .get_or_create(&QueueLabel {
                queue: queue.to_owned(),
            })
            .set(oldest);
        if let Some(s) = &inner.statsd {
            let _ = s
                .gauge_with_tags("jobs.oldest_due_seconds", oldest)
                .with_tag("queue", queue)
                .try_send();
        }
    }

    /// Sets when cron schedule `name` last fired a job that finished well.
    pub(crate) fn record_cron_success(&self, name: &str, fired_at_ms: i64) {
        let Some(inner) = &self.0 else { return };
        let at = fired_at_ms as f64 / 1000.0;
        inner
            .cron_success
            .get_or_create(&ScheduleLabel {
                schedule: name.to_owned(),
            })
            .set(at);
        if let Some(s) = &inner.statsd {
            let _ = s
                .gauge_with_tags("cron.last_success", at)
                .with_tag("schedule", name)
                .try_send();
        }
    }

    /// Sets one subscribing module's gauges: its lag, the events it is
    /// behind, and those it holds per state (`retry`, `parked`, `waiting`).
    pub(crate) fn record_module(
        &self,
        module: &str,
        lag_ms: i64,
        behind: i64,
        held: [(&'static str, i64); 3],
    ) {
        let Some(inner) = &self.0 else { return };
        let label = ModuleLabel {
            module: module.to_owned(),
        };
        let lag = lag_ms as f64 / 1000.0;
        inner.events_lag.get_or_create(&label).set(lag);
        inner.events_behind.get_or_create(&label).set(behind);
        for (st, n) in held {
            inner
                .events_held
                .get_or_create(&ModuleState {
                    module: module.to_owned(),
                    state: st,
                })
                .set(n);
        }
        if let Some(s) = &inner.statsd {
            let _ = s
                .gauge_with_tags("events.lag_seconds", lag)
                .with_tag("module", module)
                .try_send();
        }
    }

    /// The text exposition (OpenMetrics) of every series.
    pub(crate) fn render(&self) -> Option<String> {
        let inner = self.0.as_ref()?;
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &inner.registry).ok()?;
        Some(out)
    }
}

impl Inner {
    async fn sample_pool(&self, db: &Db, limit: Duration) -> bool {
        let (size, idle, max) = match db {
            Db::Sqlite(p, _) => (p.size(), p.num_idle(), p.options().get_max_connections()),
            Db::Postgres(p) => (p.size(), p.num_idle(), p.options().get_max_connections()),
        };
        let idle = u32::try_from(idle).unwrap_or(u32::MAX).min(size);
        let in_use = i64::from(size - idle);
        self.pool_connections
            .get_or_create(&StateLabel { state: "in_use" })
            .set(in_use);
        self.pool_connections
            .get_or_create(&StateLabel { state: "idle" })
            .set(i64::from(idle));
        self.pool_max.set(i64::from(max));
        // Taking a connection is what every query does first; its wait is
        // the pool's queueing at this moment. A round trip on it then says
        // whether the database answers.
        let started = Instant::now();
        let probe = async {
            crate::with_db!(db, pool => {
                let mut c = pool.acquire().await?;
                let waited = started.elapsed();
                sqlx::query("SELECT 1").execute(&mut *c).await?;
                Ok::<_, sqlx::Error>(waited)
            })
        };
        let (ok, waited) = match tokio::time::timeout(limit, probe).await {
            Ok(Ok(waited)) => (true, waited),
            // No connection, or one that does not answer: the whole wait counts.
            _ => (false, started.elapsed()),
        };
        self.pool_acquire.observe(waited.as_secs_f64());
        if let Some(s) = &self.statsd {
            let _ = s.gauge("db.pool.in_use", in_use as f64);
            let _ = s.gauge("db.pool.idle", f64::from(idle));
            let _ = s.time("db.pool.acquire", waited);
        }
        ok
    }

    fn sample_process(&self) {
        let Some(p) = process_usage() else { return };
        self.rss.set(i64::try_from(p.rss_bytes).unwrap_or(i64::MAX));
        let mut seen = self.cpu_seen.lock().unwrap_or_else(PoisonError::into_inner);
        if p.cpu_seconds > *seen {
            self.cpu.inc_by(p.cpu_seconds - *seen);
            *seen = p.cpu_seconds;
        }
        if let Some(s) = &self.statsd {
            let _ = s.gauge("process.rss_bytes", p.rss_bytes as f64);
            let _ = s.gauge("process.cpu_seconds", p.cpu_seconds);
        }
    }
}

fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// A statsd metric with its tags.
fn tagged<'m, 'c, T>(
    builder: cadence::MetricBuilder<'m, 'c, T>,
    tags: &[(&'m str, &'m str)],
) -> cadence::MetricBuilder<'m, 'c, T>
where
    T: cadence::Metric + From<String>,
{
    tags.iter().fold(builder, |b, (k, v)| b.with_tag(k, v))
}

/// Builds the statsd client: a non-blocking UDP socket behind a bounded
/// queue drained by cadence's own thread, so a request never waits on a send
/// and a dead statsd server costs dropped metrics, nothing more.
fn statsd_client(config: &Config, app: &str) -> Option<StatsdClient> {
    let addr = config.metrics.statsd.as_deref()?;
    let prefix = config.metrics.statsd_prefix.as_deref().unwrap_or(app);
    let socket = match std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.set_nonblocking(true).map(|()| s))
    {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "statsd: cannot open a UDP socket; statsd is off");
            return None;
        }
    };
    let sink = match UdpMetricSink::from(addr, socket) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(addr, error = %e, "statsd: cannot resolve the address; statsd is off");
            return None;
        }
    };
    let queued = QueuingMetricSink::with_capacity(sink, 10_000);
    Some(
        StatsdClient::builder(prefix, queued)
            .with_error_handler(|e| tracing::debug!(error = %e, "statsd send failed"))
            .build(),
    )
}

/// What the OS says about this process.
struct ProcessUsage {
    rss_bytes: u64,
    cpu_seconds: f64,
}

/// Reads `/proc/self` (Linux). Elsewhere there is nothing to read and the
/// process series stay at zero.
fn process_usage() -> Option<ProcessUsage> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces: count fields after its ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    // Fields 3.. follow; utime and stime are fields 14 and 15.
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    // /proc reports in USER_HZ, which Linux fixes at 100 for user space on
    // every architecture it runs on (sysconf(_SC_CLK_TCK)).
    Some(ProcessUsage {
        rss_bytes: rss_kb * 1024,
        cpu_seconds: (utime + stime) / 100.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_usage_reads_proc() {
        let p = process_usage().unwrap();
        assert!(p.rss_bytes > 1024 * 1024, "{}", p.rss_bytes);
        assert!(p.cpu_seconds >= 0.0);
    }

    #[test]
    fn route_labels_are_shared_and_bounded() {
        let m = Metrics::new(&Config::default(), "t");
        let a = m.route("/a/{id}").unwrap();
        let b = m.route("/a/{id}").unwrap();
        assert!(Arc::ptr_eq(&a.0, &b.0));
        for i in 0..MAX_ROUTES + 5 {
            m.route(&format!("/r{i}"));
        }
        assert_eq!(&*m.route("/new").unwrap().0, "other");
        assert!(
            Metrics::new(
                &Config {
                    metrics: crate::telemetry::MetricsConfig {
                        enabled: false,
                        ..Default::default()
                    },
                    ..Config::default()
                },
                "t"
            )
            .route("/a")
            .is_none()
        );
    }
}
