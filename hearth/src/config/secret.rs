//! A configuration value that must never be printed or logged as it is.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A secret string. `Debug`, `Display` and `Serialize` mask it; [`Secret::expose`]
/// is the one way to read it, so every use is easy to find.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A printable form that shows where a URL points and nothing that
    /// opens it:
    /// - the password of the user part becomes `********`;
    /// - an `http(s)` URL (a webhook) keeps only its scheme and host, since
    ///   such services put the secret in the path;
    /// - other URLs (databases) keep their path, and of their query only the
    ///   values of [`HARMLESS_PARAMS`]: `?password=` and the like, and any
    ///   parameter not known to be harmless, are masked;
    /// - any other value becomes `********`.
    pub fn masked(&self) -> String {
        let v = &self.0;
        let Some(scheme_end) = v.find("://") else {
            return MASK.into();
        };
        let scheme = &v[..scheme_end];
        let rest = &v[scheme_end + 3..];
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let authority = match authority.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:{MASK}@{host}"),
                None => format!("{userinfo}@{host}"),
            },
            None => authority.to_owned(),
        };
        let tail = if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") {
            if tail.is_empty() || tail == "/" {
                tail.to_owned()
            } else {
                format!("/{MASK}")
            }
        } else {
            mask_query(tail)
        };
        format!("{scheme}://{authority}{tail}")
    }
}

const MASK: &str = "********";

/// Query parameters of a database URL whose values are shown as they are:
/// they say how to connect, never with what.
pub const HARMLESS_PARAMS: &[&str] = &[
    "sslmode",
    "sslrootcert",
    "application_name",
    "connect_timeout",
    "mode",
    "cache",
    "statement_cache_capacity",
    "target_session_attrs",
];

/// A URL's path, query and fragment with every query value masked unless
/// its name is in [`HARMLESS_PARAMS`], and the fragment dropped.
fn mask_query(tail: &str) -> String {
    let tail = tail.split_once('#').map_or(tail, |(t, _)| t);
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_owned();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if HARMLESS_PARAMS.iter().any(|h| h.eq_ignore_ascii_case(k)) => {
                pair.to_owned()
            }
            Some((k, _)) => format!("{k}={MASK}"),
            None => pair.to_owned(),
        })
        .collect();
    format!("{path}?{}", pairs.join("&"))
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({})", self.masked())
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.masked())
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.masked())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn masks_plain_values_and_url_passwords() {
        assert_eq!(Secret::new("abc").masked(), "********");
        assert_eq!(
            Secret::new("postgres://u:p@h:5432/db").masked(),
            "postgres://u:********@h:5432/db"
        );
        assert_eq!(
            Secret::new("postgres://u@h/db").masked(),
            "postgres://u@h/db"
        );
        assert_eq!(
            Secret::new("sqlite://data/a.db").masked(),
            "sqlite://data/a.db"
        );
    }

    #[test]
    fn masks_secrets_in_queries_and_webhook_paths() {
        let m = |v: &str| Secret::new(v).masked();
        assert_eq!(
            m("postgres://app@db/app?password=hunter2&sslmode=require"),
            "postgres://app@db/app?password=********&sslmode=require"
        );
        // Unknown parameters are masked too, whatever their case.
        assert_eq!(
            m("postgres://db/app?PassWord=x&sslpassword=y&options=-c%20x"),
            "postgres://db/app?PassWord=********&sslpassword=********&options=********"
        );
        assert_eq!(
            m("postgres://u:p@db:5432/app?sslmode=verify-full#frag"),
            "postgres://u:********@db:5432/app?sslmode=verify-full"
        );
        assert_eq!(
            m("https://hooks.example.com/services/T000/B000/XXXXsecretXXXX"),
            "https://hooks.example.com/********"
        );
        assert_eq!(
            m("https://hooks.example.com?token=abc"),
            "https://hooks.example.com/********"
        );
        assert_eq!(
            m("https://user:pw@hooks.example.com/"),
            "https://user:********@hooks.example.com/"
        );
        assert_eq!(m("http://127.0.0.1:9000"), "http://127.0.0.1:9000");
        // A password containing `@` or `:` is masked whole.
        assert_eq!(m("postgres://u:p@ss:w@h/db"), "postgres://u:********@h/db");
        for v in [
            "postgres://app@db/app?password=hunter2",
            "https://hooks.example.com/services/T000/B000/hunter2",
            "postgres://u:hunter2@h/db",
        ] {
            assert!(!m(v).contains("hunter2"), "{v}");
        }
    }
}
