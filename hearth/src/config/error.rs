//! The error a bad configuration value gives: which key, where it came
//! from, what is wrong. Each capability's config section returns it, so it
//! sits apart from the `Config` that gathers the sections.

/// One bad configuration value: which key, where it came from, what is wrong.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    /// Dotted key, e.g. `http.body_limit`; empty when the file as a whole is at fault.
    pub key: String,
    /// " (from …)" when the source is known, else empty.
    pub(crate) origin: String,
    /// What is wrong with it.
    pub problem: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.key.is_empty() {
            write!(f, "config error{}: {}", self.origin, self.problem)
        } else {
            write!(
                f,
                "config error: `{}`{}: {}",
                self.key, self.origin, self.problem
            )
        }
    }
}

impl ConfigError {
    pub(crate) fn new(key: &str, problem: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            origin: String::new(),
            problem: problem.into(),
        }
    }
}
