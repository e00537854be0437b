//! Which job names this binary can run: one handler per name, with the
//! payload check and the defaults declared on its [`JobName`].

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use super::{JobName, JobRun, decode};

/// What a handler's future resolves to.
pub(crate) type Outcome = anyhow::Result<()>;

/// A type-erased handler: decodes the payload, then runs the module's function.
pub(crate) type Handler =
    Arc<dyn Fn(Claim) -> Pin<Box<dyn Future<Output = Outcome> + Send>> + Send + Sync>;

/// What the worker hands a handler: the raw job and its context.
pub(crate) struct Claim {
    pub id: i64,
    pub payload: String,
    pub attempt: u32,
    pub max_attempts: u32,
    pub scheduled_at: std::time::SystemTime,
    pub cancel: CancellationToken,
}

/// One registered job name.
#[derive(Clone)]
pub(crate) struct JobDef {
    pub name: &'static str,
    pub queue: &'static str,
    pub module: &'static str,
    pub max_attempts: Option<u32>,
    pub timeout: Option<Duration>,
    pub priority: i32,
    /// Checks that a JSON payload decodes into the handler's type.
    pub validate: fn(&str) -> Result<(), String>,
    /// What a dead job's payload becomes, if it must not be kept.
    pub redact: Option<super::Redact>,
    /// `None` in the catalog the [`Jobs`](super::Jobs) handle keeps: handlers
    /// hold the state they were registered with, and that state holds the
    /// handle, so keeping them there would make a reference cycle.
    pub handler: Option<Handler>,
}

/// Every job name an app can run.
#[derive(Clone, Default)]
pub(crate) struct Registry {
    defs: BTreeMap<&'static str, JobDef>,
}

/// Why a job cannot be registered.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// Two handlers for one name.
    #[error("job `{name}` is registered by both `{first}` and `{second}`")]
    Duplicate {
        /// The job name.
        name: &'static str,
        /// The module that registered it first.
        first: &'static str,
        /// The module that registered it again.
        second: &'static str,
    },
    /// The name or queue is not usable.
    #[error("job `{name}` (module `{module}`): {problem}")]
    Invalid {
        /// The job name.
        name: &'static str,
        /// The module.
        module: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
}

fn valid_ident(s: &str, extra: &[char]) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || extra.contains(&c))
}

impl JobDef {
    /// Wraps a typed handler, which gets `state` with each run.
    pub(crate) fn new<P, S, F, Fut>(
        module: &'static str,
        name: JobName<P>,
        state: S,
        run: F,
    ) -> Self
    where
        P: DeserializeOwned + Send + 'static,
        S: Clone + Send + Sync + 'static,
        F: Fn(JobRun<P, S>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        let run = Arc::new(run);
        let handler: Handler = Arc::new(move |c: Claim| {
            let run = run.clone();
            let state = state.clone();
            Box::pin(async move {
                // A payload that no longer decodes can never succeed: say so and stop retrying.
                let payload = decode::<P>(&c.payload).map_err(|p| {
                    anyhow::Error::new(super::Permanent(format!("invalid payload: {p}")))
                })?;
                run(JobRun {
                    payload,
                    id: c.id,
                    attempt: c.attempt,
                    max_attempts: c.max_attempts,
                    scheduled_at: c.scheduled_at,
                    cancel: c.cancel,
                    state,
                })
                .await
            })
        });
        Self {
            name: name.name,
            queue: name.queue,
            module,
            max_attempts: name.max_attempts,
            timeout: name.timeout,
            priority: name.priority,
            validate: |s| decode::<P>(s).map(|_| ()),
            redact: name.redact,
            handler: Some(handler),
        }
    }
}

impl Registry {
    /// Adds a definition, refusing duplicates and unusable names.
    pub(crate) fn add(&mut self, def: JobDef) -> Result<(), RegisterError> {
        if !valid_ident(def.name, &['.', '-']) {
            return Err(RegisterError::Invalid {
                name: def.name,
                module: def.module,
                problem: "names are 1-100 of a-z, 0-9, `_`, `.` and `-`",
            });
        }
        if !valid_ident(def.queue, &['-']) {
            return Err(RegisterError::Invalid {
                name: def.name,
                module: def.module,
                problem: "queue names are 1-100 of a-z, 0-9, `_` and `-`",
            });
        }
        if def.max_attempts == Some(0) {
            return Err(RegisterError::Invalid {
                name: def.name,
                module: def.module,
                problem: "max_attempts must be at least 1",
            });
        }
        if let Some(first) = self.defs.get(def.name) {
            return Err(RegisterError::Duplicate {
                name: def.name,
                first: first.module,
                second: def.module,
            });
        }
        self.defs.insert(def.name, def);
        Ok(())
    }

    pub(crate) fn get(&self, name: &str) -> Option<&JobDef> {
        self.defs.get(name)
    }

    pub(crate) fn names(&self) -> Vec<&'static str> {
        self.defs.keys().copied().collect()
    }

    /// The same definitions without their handlers: what the queue handle
    /// needs to check and route enqueued jobs.
    pub(crate) fn catalog(&self) -> Registry {
        let defs = self
            .defs
            .iter()
            .map(|(name, def)| {
                let mut def = def.clone();
                def.handler = None;
                (*name, def)
            })
            .collect();
        Registry { defs }
    }

    /// Every queue some job runs on.
    pub(crate) fn queues(&self) -> BTreeSet<&'static str> {
        self.defs.values().map(|d| d.queue).collect()
    }
}
