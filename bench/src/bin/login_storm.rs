//! A login storm against a running pancake, with a steady trickle of
//! session-authenticated reads whose latency is compared before and during
//! the storm.
//!
//!   login_storm BASE_URL EMAIL PASSWORD READ_COOKIE [STORM_CONNS] [READS_PER_S] [QUIET_S] [STORM_S]
//!
//! Phase 1 (QUIET_S seconds): only the reads, GET /api/whoami with
//! READ_COOKIE at READS_PER_S, open loop (a slow answer does not delay the
//! next request). Phase 2 (STORM_S seconds): the same reads, plus
//! STORM_CONNS clients each signing in over and over as a browser does
//! (GET /api/auth/csrf for a fresh pre-session and token, then POST
//! /api/auth/login). Prints logins/s and the reads' p50/p99 in both phases,
//! as text and as one JSON line.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> T {
    args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Sends reads at `rate` per second until `until`; returns their latencies in ms
/// and how many failed.
async fn reads(
    http: reqwest::Client,
    url: String,
    cookie: String,
    rate: u32,
    until: Instant,
) -> (Vec<f64>, u64) {
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::new();
    while Instant::now() < until {
        tick.tick().await;
        let (http, url, cookie) = (http.clone(), url.clone(), cookie.clone());
        let (latencies, failed) = (latencies.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let ok = http
                .get(&url)
                .header("cookie", &cookie)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                latencies
                    .lock()
                    .await
                    .push(t.elapsed().as_secs_f64() * 1000.0);
            } else {
                failed.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut v = std::mem::take(&mut *latencies.lock().await);
    v.sort_by(f64::total_cmp);
    (v, failed.load(Ordering::Relaxed))
}

/// One client signing in over and over until `until`; returns (logins, failures).
async fn storm(
    http: reqwest::Client,
    base: String,
    email: String,
    password: String,
    until: Instant,
) -> (u64, u64) {
    let (mut ok, mut failed) = (0, 0);
    while Instant::now() < until {
        let Ok(res) = http.get(format!("{base}/api/auth/csrf")).send().await else {
            failed += 1;
            continue;
        };
        let cookie = res
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("hearth_session="))
            .and_then(|v| v.split(';').next())
            .map(str::to_owned);
        let token = res
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v["csrf_token"].as_str().map(str::to_owned));
        let (Some(cookie), Some(token)) = (cookie, token) else {
            failed += 1;
            continue;
        };
        let login = http
            .post(format!("{base}/api/auth/login"))
            .header("cookie", cookie)
            .header("x-csrf-token", token)
            .json(&serde_json::json!({ "email": email, "password": password }))
            .send()
            .await;
        match login {
            Ok(r) if r.status().is_success() => ok += 1,
            _ => failed += 1,
        }
    }
    (ok, failed)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        anyhow::bail!(
            "usage: login_storm BASE_URL EMAIL PASSWORD READ_COOKIE [STORM_CONNS] [READS_PER_S] [QUIET_S] [STORM_S]"
        );
    }
    let (base, email, password, cookie) = (
        args[0].clone(),
        args[1].clone(),
        args[2].clone(),
        args[3].clone(),
    );
    let conns: usize = arg(&args, 4, 16);
    let rate: u32 = arg(&args, 5, 100);
    let quiet: u64 = arg(&args, 6, 10);
    let storm_s: u64 = arg(&args, 7, 20);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .build()?;
    let url = format!("{base}/api/whoami");

    let (quiet_lat, quiet_failed) = reads(
        http.clone(),
        url.clone(),
        cookie.clone(),
        rate,
        Instant::now() + Duration::from_secs(quiet),
    )
    .await;

    let start = Instant::now();
    let until = start + Duration::from_secs(storm_s);
    let reader = tokio::spawn(reads(http.clone(), url, cookie, rate, until));
    let stormers: Vec<_> = (0..conns)
        .map(|_| {
            tokio::spawn(storm(
                http.clone(),
                base.clone(),
                email.clone(),
                password.clone(),
                until,
            ))
        })
        .collect();
    let (mut logins, mut login_failed) = (0, 0);
    for s in stormers {
        let (ok, failed) = s.await?;
        logins += ok;
        login_failed += failed;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (storm_lat, storm_failed) = reader.await?;

    let logins_per_s = logins as f64 / elapsed;
    let (q50, q99) = (percentile(&quiet_lat, 0.50), percentile(&quiet_lat, 0.99));
    let (s50, s99) = (percentile(&storm_lat, 0.50), percentile(&storm_lat, 0.99));
    println!(
        "login storm: {conns} clients, {storm_s}s: {logins} logins ({logins_per_s:.1}/s), {login_failed} failed"
    );
    println!(
        "session reads at {rate}/s: quiet p50 {q50:.2} ms p99 {q99:.2} ms ({} ok, {quiet_failed} failed); during storm p50 {s50:.2} ms p99 {s99:.2} ms ({} ok, {storm_failed} failed); p99 ratio {:.2}",
        quiet_lat.len(),
        storm_lat.len(),
        s99 / q99
    );
    println!(
        "{{\"name\":\"login_storm\",\"clients\":{conns},\"seconds\":{storm_s},\"logins\":{logins},\"logins_per_s\":{logins_per_s:.2},\"login_failed\":{login_failed},\"read_rate\":{rate},\"quiet_p50_ms\":{q50:.3},\"quiet_p99_ms\":{q99:.3},\"storm_p50_ms\":{s50:.3},\"storm_p99_ms\":{s99:.3},\"p99_ratio\":{:.3},\"read_failed\":{}}}",
        s99 / q99,
        quiet_failed + storm_failed
    );
    Ok(())
}
