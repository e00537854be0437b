//! The access log: one line per request, written without the general
//! formatter.
//!
//! tracing-subscriber's formatter costs more per line than the whole of a
//! small request (measured in BENCHMARKS.md), so access lines are formatted
//! here by hand, in the same shapes the formatter uses for other lines
//! (compact text in dev, a flat JSON object in prod), and appended to the same
//! batched writer. The `hearth::access` target still obeys the log filter, so
//! `HEARTH_LOG=info,hearth::access=off` turns it off. Without the CLI's
//! subscriber (in tests) lines go through `tracing` as ordinary events.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::writer::BatchWriter;

/// Where and how access lines are written, set once by [`super::init`].
pub(crate) struct AccessSink {
    writer: BatchWriter,
    json: bool,
    // The filter is fixed once the subscriber is installed, so ask it once.
    enabled: bool,
}

/// Process-wide, like the log subscriber it belongs to.
static SINK: OnceLock<AccessSink> = OnceLock::new();

/// Called right after the subscriber is installed, whose filter it consults.
pub(crate) fn install(writer: BatchWriter, json: bool) {
    let enabled = tracing::enabled!(target: "hearth::access", tracing::Level::INFO);
    let _ = SINK.set(AccessSink {
        writer,
        json,
        enabled,
    });
}

/// One finished request.
pub(crate) struct AccessLine<'a> {
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    pub(crate) status: u16,
    pub(crate) duration: Duration,
    pub(crate) request_id: &'a str,
}

/// Writes one access line, if the `hearth::access` target is enabled.
pub(crate) fn log(line: &AccessLine<'_>) {
    let micros = u64::try_from(line.duration.as_micros()).unwrap_or(u64::MAX);
    let Some(sink) = SINK.get() else {
        tracing::info!(
            target: "hearth::access",
            method = line.method,
            path = line.path,
            status = line.status,
            duration_us = micros,
            request_id = line.request_id,
            "request"
        );
        return;
    };
    if !sink.enabled {
        return;
    }
    let mut out = String::with_capacity(200);
    let now = SystemTime::now();
    if sink.json {
        out.push_str("{\"timestamp\":\"");
        push_rfc3339(&mut out, now);
        out.push_str("\",\"level\":\"INFO\",\"target\":\"hearth::access\",\"message\":\"request\",\"method\":");
        push_json_str(&mut out, line.method);
        out.push_str(",\"path\":");
        push_json_str(&mut out, line.path);
        out.push_str(",\"status\":");
        push_digits(&mut out, u64::from(line.status), 1);
        out.push_str(",\"duration_us\":");
        push_digits(&mut out, micros, 1);
        out.push_str(",\"request_id\":");
        push_json_str(&mut out, line.request_id);
        out.push_str("}\n");
    } else {
        push_rfc3339(&mut out, now);
        out.push_str("  INFO hearth::access: request method=");
        out.push_str(line.method);
        out.push_str(" path=");
        out.push_str(line.path);
        out.push_str(" status=");
        push_digits(&mut out, u64::from(line.status), 1);
        out.push_str(" duration_us=");
        push_digits(&mut out, micros, 1);
        out.push_str(" request_id=");
        out.push_str(line.request_id);
        out.push('\n');
    }
    sink.writer.append(out.as_bytes());
}

fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC. Digits are pushed by hand: `write!`
/// with padding costs more than the rest of the line.
fn push_rfc3339(out: &mut String, t: SystemTime) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, day) = civil_from_days(days);
    push_digits(out, u64::try_from(y).unwrap_or(0), 4);
    out.push('-');
    push_digits(out, u64::from(m), 2);
    out.push('-');
    push_digits(out, u64::from(day), 2);
    out.push('T');
    push_digits(out, rem / 3600, 2);
    out.push(':');
    push_digits(out, (rem / 60) % 60, 2);
    out.push(':');
    push_digits(out, rem % 60, 2);
    out.push('.');
    push_digits(out, u64::from(d.subsec_micros()), 6);
    out.push('Z');
}

/// Pushes `n` in decimal, zero-padded to at least `width` digits.
fn push_digits(out: &mut String, mut n: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut i = buf.len();
    while n > 0 {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    let start = i.min(buf.len() - width.clamp(1, buf.len()));
    for &b in &buf[start..] {
        out.push(char::from(b));
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc3339_utc() {
        let mut s = String::new();
        push_rfc3339(&mut s, UNIX_EPOCH);
        assert_eq!(s, "1970-01-01T00:00:00.000000Z");
        let mut s = String::new();
        // 2026-11-23T17:38:27.5Z
        push_rfc3339(
            &mut s,
            UNIX_EPOCH + Duration::from_millis(1_795_455_507_500),
        );
        assert_eq!(s, "2026-11-23T17:38:27.500000Z");
        let mut s = String::new();
        // 2024-02-29T00:00:00Z, a leap day
        push_rfc3339(&mut s, UNIX_EPOCH + Duration::from_secs(1_709_164_800));
        assert_eq!(s, "2024-02-29T00:00:00.000000Z");
    }

    #[test]
    fn digits_are_padded() {
        for (n, w, want) in [
            (0, 1, "0"),
            (7, 2, "07"),
            (123, 2, "123"),
            (42, 6, "000042"),
            (u64::MAX, 1, "18446744073709551615"),
        ] {
            let mut s = String::new();
            push_digits(&mut s, n, w);
            assert_eq!(s, want);
        }
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut s = String::new();
        push_json_str(&mut s, "a\"b\\c\nd");
        assert_eq!(s, r#""a\"b\\c\u000ad""#);
        let v: String = serde_json::from_str(&s).unwrap();
        assert_eq!(v, "a\"b\\c\nd");
    }
}
