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

    /// A printable form: URLs keep everything but their password, other values
    /// become `********`.
    pub fn masked(&self) -> String {
        let v = &self.0;
        if let Some(scheme_end) = v.find("://") {
            let rest = &v[scheme_end + 3..];
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let authority = &rest[..authority_end];
            if let Some(at) = authority.rfind('@') {
                let userinfo = &authority[..at];
                let user = userinfo.split(':').next().unwrap_or("");
                let masked_info = if userinfo.contains(':') {
                    format!("{user}:********")
                } else {
                    user.to_owned()
                };
                return format!("{}{}{}", &v[..scheme_end + 3], masked_info, &rest[at..]);
            }
            // A URL without credentials holds nothing secret.
            return v.clone();
        }
        "********".into()
    }
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
}
