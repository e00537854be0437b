//! Reads the expiry (`notAfter`) of a PEM certificate, for `doctor`: just
//! enough DER to walk to the validity field, without a full X.509 parser.

use base64::Engine as _;

/// The certificate's `notAfter` as unix seconds (the first certificate in
/// `pem`, the server's own in a chain).
pub(crate) fn not_after(pem: &str) -> Result<i64, String> {
    let begin = "-----BEGIN CERTIFICATE-----";
    let end = "-----END CERTIFICATE-----";
    let start = pem.find(begin).ok_or("no PEM certificate in the file")? + begin.len();
    let stop = pem[start..]
        .find(end)
        .ok_or("the PEM certificate is not closed")?
        + start;
    let b64: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("the certificate is not valid base64: {e}"))?;
    let bad = || "the certificate is not valid DER".to_owned();
    let (_, cert) = tlv(&der, 0x30).ok_or_else(bad)?;
    let (_, mut tbs) = tlv(cert, 0x30).ok_or_else(bad)?;
    // [0] version (optional), serial, signature algorithm, issuer, validity.
    if tbs.first() == Some(&0xa0) {
        tbs = skip(tbs).ok_or_else(bad)?;
    }
    for _ in 0..3 {
        tbs = skip(tbs).ok_or_else(bad)?;
    }
    let (_, validity) = tlv(tbs, 0x30).ok_or_else(bad)?;
    let after = skip(validity).ok_or_else(bad)?;
    let tag = *after.first().ok_or_else(bad)?;
    let (_, time) = tlv(after, tag).ok_or_else(bad)?;
    let text = std::str::from_utf8(time).map_err(|_| bad())?;
    parse_time(tag, text).ok_or_else(|| format!("cannot read the expiry time {text:?}"))
}

/// The element at the start of `buf` if its tag is `tag`: (rest after it, its content).
fn tlv(buf: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    if *buf.first()? != tag {
        return None;
    }
    let (len, header) = length(buf.get(1..)?)?;
    let content = buf.get(1 + header..1 + header + len)?;
    Some((buf.get(1 + header + len..)?, content))
}

/// `buf` after its first element.
fn skip(buf: &[u8]) -> Option<&[u8]> {
    let tag = *buf.first()?;
    tlv(buf, tag).map(|(rest, _)| rest)
}

/// A DER length: (value, bytes it took).
fn length(buf: &[u8]) -> Option<(usize, usize)> {
    let first = *buf.first()?;
    if first < 0x80 {
        return Some((usize::from(first), 1));
    }
    let n = usize::from(first & 0x7f);
    if n == 0 || n > 4 {
        return None;
    }
    let mut len = 0usize;
    for b in buf.get(1..=n)? {
        len = (len << 8) | usize::from(*b);
    }
    Some((len, 1 + n))
}

/// UTCTime (`YYMMDDHHMMSSZ`, tag 0x17) or GeneralizedTime
/// (`YYYYMMDDHHMMSSZ`, tag 0x18) as unix seconds.
fn parse_time(tag: u8, s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i32 = s.get(..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, s.get(2..)?)
        }
        0x18 => (s.get(..4)?.parse().ok()?, s.get(4..)?),
        _ => return None,
    };
    let num = |i: usize| -> Option<u32> { rest.get(i..i + 2)?.parse().ok() };
    let date = chrono::NaiveDate::from_ymd_opt(year, num(0)?, num(2)?)?;
    let time = date.and_hms_opt(num(4)?, num(6)?, num(8)?)?;
    Some(time.and_utc().timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_expiry_of_a_generated_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 5, 17);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let expected = chrono::NaiveDate::from_ymd_opt(2031, 5, 17)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp();
        assert_eq!(not_after(&cert.pem()), Ok(expected));
        // Years past 2049 use GeneralizedTime.
        params.not_after = rcgen::date_time_ymd(2061, 1, 2);
        let cert = params.self_signed(&key).unwrap();
        assert!(not_after(&cert.pem()).unwrap() > expected);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(not_after("nothing here").is_err());
        assert!(not_after("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----").is_err());
        assert!(not_after("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----").is_err());
    }
}
