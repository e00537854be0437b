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

use std::cell::Cell;
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
    /// The signed-in user, when the request had a session.
    pub(crate) user_id: Option<i64>,
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
            user_id = line.user_id,
            "request"
        );
        return;
    };
    if !sink.enabled {
        return;
    }
    let now = SystemTime::now();
    // Formatted straight into the shared buffer: no line of its own to allocate.
    sink.writer.append_with(|out| {
        if sink.json {
            out.extend_from_slice(b"{\"timestamp\":\"");
            push_rfc3339(out, now);
            out.extend_from_slice(
                b"\",\"level\":\"INFO\",\"target\":\"hearth::access\",\"message\":\"request\",\"method\":",
            );
            push_json_str(out, line.method);
            out.extend_from_slice(b",\"path\":");
            push_json_str(out, line.path);
            out.extend_from_slice(b",\"status\":");
            push_digits(out, u64::from(line.status), 1);
            out.extend_from_slice(b",\"duration_us\":");
            push_digits(out, micros, 1);
            out.extend_from_slice(b",\"request_id\":");
            push_json_str(out, line.request_id);
            if let Some(user) = line.user_id {
                out.extend_from_slice(b",\"user_id\":");
                push_i64(out, user);
            }
            out.extend_from_slice(b"}\n");
        } else {
            push_rfc3339(out, now);
            out.extend_from_slice(b"  INFO hearth::access: request method=");
            out.extend_from_slice(line.method.as_bytes());
            out.extend_from_slice(b" path=");
            out.extend_from_slice(line.path.as_bytes());
            out.extend_from_slice(b" status=");
            push_digits(out, u64::from(line.status), 1);
            out.extend_from_slice(b" duration_us=");
            push_digits(out, micros, 1);
            out.extend_from_slice(b" request_id=");
            out.extend_from_slice(line.request_id.as_bytes());
            if let Some(user) = line.user_id {
                out.extend_from_slice(b" user_id=");
                push_i64(out, user);
            }
            out.push(b'\n');
        }
    });
}

fn push_i64(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    push_digits(out, n.unsigned_abs(), 1);
}

/// A JSON string. Bytes of multi-byte characters are all >= 0x80 and pass
/// through unchanged, so working on bytes keeps valid UTF-8 valid.
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b if b < 0x20 => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
            b => out.push(b),
        }
    }
    out.push(b'"');
}

thread_local! {
    /// The second last formatted on this thread and its `YYYY-MM-DDTHH:MM:SS.`:
    /// under load most lines fall in the same second as the one before.
    static STAMP: Cell<(u64, [u8; 20])> = const { Cell::new((u64::MAX, [0; 20])) };
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC.
fn push_rfc3339(out: &mut Vec<u8>, t: SystemTime) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (cached, mut prefix) = STAMP.get();
    if cached != secs {
        prefix = second_prefix(secs);
        STAMP.set((secs, prefix));
    }
    out.extend_from_slice(&prefix);
    push_digits(out, u64::from(d.subsec_micros()), 6);
    out.push(b'Z');
}

/// `YYYY-MM-DDTHH:MM:SS.` for a second since the epoch.
fn second_prefix(secs: u64) -> [u8; 20] {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, day) = civil_from_days(days);
    let mut v = Vec::with_capacity(20);
    push_digits(&mut v, u64::try_from(y).unwrap_or(0), 4);
    v.push(b'-');
    push_digits(&mut v, u64::from(m), 2);
    v.push(b'-');
    push_digits(&mut v, u64::from(day), 2);
    v.push(b'T');
    push_digits(&mut v, rem / 3600, 2);
    v.push(b':');
    push_digits(&mut v, (rem / 60) % 60, 2);
    v.push(b':');
    push_digits(&mut v, rem % 60, 2);
    v.push(b'.');
    let mut out = [b'0'; 20];
    // Years past 9999 would make it longer; keep the first 20 bytes then.
    let n = v.len().min(20);
    out[..n].copy_from_slice(&v[..n]);
    out
}

/// Pushes `n` in decimal, zero-padded to at least `width` digits.
fn push_digits(out: &mut Vec<u8>, n: u64, width: usize) {
    // itoa writes two digits per step from a table: a division per digit
    // cost more than the rest of the line's numbers.
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(n).as_bytes();
    for _ in digits.len()..width {
        out.push(b'0');
    }
    out.extend_from_slice(digits);
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
        let mut s = Vec::new();
        push_rfc3339(&mut s, UNIX_EPOCH);
        assert_eq!(s, b"1970-01-01T00:00:00.000000Z");
        let mut s = Vec::new();
        // 2026-11-23T17:38:27.5Z
        push_rfc3339(
            &mut s,
            UNIX_EPOCH + Duration::from_millis(1_795_455_507_500),
        );
        assert_eq!(s, b"2026-11-23T17:38:27.500000Z");
        // The same second again comes from the cache, with new micros.
        let mut s = Vec::new();
        push_rfc3339(
            &mut s,
            UNIX_EPOCH + Duration::from_micros(1_795_455_507_000_042),
        );
        assert_eq!(s, b"2026-11-23T17:38:27.000042Z");
        let mut s = Vec::new();
        // 2024-02-29T00:00:00Z, a leap day
        push_rfc3339(&mut s, UNIX_EPOCH + Duration::from_secs(1_709_164_800));
        assert_eq!(s, b"2024-02-29T00:00:00.000000Z");
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
            let mut s = Vec::new();
            push_digits(&mut s, n, w);
            assert_eq!(s, want.as_bytes());
        }
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut s = Vec::new();
        push_json_str(&mut s, "a\"b\\c\nd\u{1f}é");
        assert_eq!(s, r#""a\"b\\c\u000ad\u001fé""#.as_bytes());
        let v: String = serde_json::from_slice(&s).unwrap();
        assert_eq!(v, "a\"b\\c\nd\u{1f}é");
    }
}
