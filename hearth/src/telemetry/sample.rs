//! One sampling of the gauges that live in the database and the OS: the
//! pool, the job queues, cron and each subscribing module's lag. It reads
//! the queue and the event store and hands plain numbers to
//! [`Metrics`](super::Metrics), so the metrics registry itself knows
//! neither capability (job workers and event readers report to it).

use std::time::Duration;

use super::metrics::Metrics;
use crate::db::Db;
use crate::events::Events;
use crate::jobs::Jobs;

/// Samples everything, each part bounded by `limit`. Returns whether the
/// database answered (always `true` with metrics off, when only the
/// caller's own check says so).
pub(crate) async fn sample(
    metrics: &Metrics,
    db: &Db,
    jobs: &Jobs,
    events: &Events,
    limit: Duration,
) -> bool {
    if !metrics.enabled() {
        return true;
    }
    let db_ok = metrics.sample_pool(db, limit).await;
    if db_ok {
        if let Ok(Ok(stats)) = tokio::time::timeout(limit, jobs.stats()).await {
            for q in stats {
                let counts = [
                    ("pending", q.pending),
                    ("due", q.due),
                    ("active", q.active),
                    ("dead", q.dead),
                ];
                metrics.record_queue(&q.queue, counts, q.oldest_due_ms);
            }
        }
        if let Ok(Ok(crons)) = tokio::time::timeout(limit, jobs.cron_list()).await {
            for c in crons {
                // Only a tick whose job finished well says when it last worked;
                // while one is pending the gauge keeps the previous success.
                if let (Some("done"), Some(fired)) = (c.last_result.as_deref(), c.last_fired_at) {
                    metrics.record_cron_success(&c.name, fired);
                }
            }
        }
        if let Ok(Ok(status)) = tokio::time::timeout(limit, events.status()).await {
            for m in status {
                let held = [
                    ("retry", m.retrying),
                    ("parked", m.parked),
                    ("waiting", m.waiting),
                ];
                metrics.record_module(&m.module, m.lag_ms, m.behind, held);
            }
        }
    }
    metrics.sample_process();
    db_ok
}
