//! What a module declares about itself: plain data (name, migrations for
//! both engines, events published and subscribed, routes with guards), so
//! that the app, the migrator and the living documentation can read it
//! without running anything.

use crate::db::DbKind;
use crate::db::migrate::Migration;
use crate::events::{EventSpec, StartFrom};

use super::namespace;
use super::route::{Guard, RouteSpec};

/// What a module declares about itself.
#[derive(Debug, Clone, Copy)]
pub struct ModuleSpec {
    name: &'static str,
    sqlite: &'static [Migration],
    postgres: &'static [Migration],
    publishes: &'static [EventSpec],
    subscribes: &'static [EventSpec],
    start_from: StartFrom,
    routes: &'static [RouteSpec],
    own_file: bool,
}

/// Why a module spec is not acceptable.
#[derive(Debug, thiserror::Error)]
#[error("module `{module}`: {problem}")]
pub struct SpecError {
    /// The module name.
    pub module: String,
    /// What is wrong.
    pub problem: String,
}

impl ModuleSpec {
    /// A module called `name`: lowercase letters, digits and underscores,
    /// starting with a letter. The name is stored with its migrations, so it must never change.
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            sqlite: &[],
            postgres: &[],
            publishes: &[],
            subscribes: &[],
            start_from: StartFrom::Beginning,
            routes: &[],
            own_file: false,
        }
    }

    /// Declares that on SQLite this module keeps its data in a database
    /// file of its own, next to the main one (`app.db` → `app.<name>.db`),
    /// which can then be copied, sized or vacuumed apart. Its code does not
    /// change: the file is attached to every connection, so its tables are
    /// found by their plain names. Its event cursor and outbox live in that
    /// file with its tables, so its handlers' effects and its published
    /// events stay atomic with its own writes. Its SQLite tables cannot
    /// have foreign keys to tables in another file (SQLite checks them
    /// within one file). On PostgreSQL every module already has a schema
    /// of its own, so this changes nothing there.
    #[must_use]
    pub const fn own_file(mut self) -> Self {
        self.own_file = true;
        self
    }

    /// Whether it keeps its data in an SQLite file of its own.
    pub fn keeps_own_file(&self) -> bool {
        self.own_file
    }

    /// Declares the routes this module serves; `Module::register`
    /// attaches a handler to each with `Context::route`.
    #[must_use]
    pub const fn routes(mut self, routes: &'static [RouteSpec]) -> Self {
        self.routes = routes;
        self
    }

    /// The routes it declares.
    pub fn declared_routes(&self) -> &'static [RouteSpec] {
        self.routes
    }

    /// Declares the events this module publishes (`EventSpec::of::<E>()`
    /// each). Publishing an event no module declares is an error.
    #[must_use]
    pub const fn publishes(mut self, events: &'static [EventSpec]) -> Self {
        self.publishes = events;
        self
    }

    /// Declares the events this module subscribes to; `Module::register`
    /// adds a handler for each with `Context::subscribe`.
    #[must_use]
    pub const fn subscribes(mut self, events: &'static [EventSpec]) -> Self {
        self.subscribes = events;
        self
    }

    /// Where this module's subscriptions start the first time it runs
    /// (default: the oldest retained event).
    #[must_use]
    pub const fn start_from(mut self, start: StartFrom) -> Self {
        self.start_from = start;
        self
    }

    /// The events it publishes.
    pub fn published(&self) -> &'static [EventSpec] {
        self.publishes
    }

    /// The events it subscribes to.
    pub fn subscribed(&self) -> &'static [EventSpec] {
        self.subscribes
    }

    /// Where its subscriptions start.
    pub fn starts_from(&self) -> StartFrom {
        self.start_from
    }

    /// Sets the migrations; both lists must have the same versions and names.
    #[must_use]
    pub const fn migrations(
        mut self,
        sqlite: &'static [Migration],
        postgres: &'static [Migration],
    ) -> Self {
        self.sqlite = sqlite;
        self.postgres = postgres;
        self
    }

    /// The stable name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The PostgreSQL schema its tables live in: its own name, for every
    /// module but hearth's (whose tables stay in the database's current
    /// schema, usually `public`). Table names keep the module prefix inside
    /// the schema too, so one SQL text serves both engines: SQLite has no
    /// schemas, and the app's connections find module tables through
    /// `search_path`.
    pub fn schema(&self) -> Option<&'static str> {
        // "hearth" is the framework's own module (`own.rs`).
        (self.name != "hearth").then_some(self.name)
    }

    /// The migrations for one engine.
    pub fn migrations_for(&self, kind: DbKind) -> &'static [Migration] {
        match kind {
            DbKind::Sqlite => self.sqlite,
            DbKind::Postgres => self.postgres,
        }
    }

    /// Checks the name and that both engines' migration lists line up.
    pub fn check(&self) -> Result<(), SpecError> {
        let err = |problem: String| SpecError {
            module: self.name.to_owned(),
            problem,
        };
        let mut chars = self.name.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(err(
                "the name must be lowercase letters, digits and underscores, starting with a letter"
                    .into(),
            ));
        }
        // Names PostgreSQL keeps for itself, or hearth for schemas it sets
        // aside during a restore, cannot be a module's schema.
        if self.name.starts_with("pg_")
            || self.name.starts_with("hearth_")
            || ["public", "information_schema"].contains(&self.name)
        {
            return Err(err(format!(
                "`{}` cannot name a PostgreSQL schema (names starting with `pg_` or `hearth_`, `public` and `information_schema` are taken)",
                self.name
            )));
        }
        for (i, r) in self.routes.iter().enumerate() {
            if let Some(problem) = r.problem() {
                return Err(err(problem));
            }
            if let Guard::Group(g) = r.guard
                && let Err(e) = crate::auth::users::check_group(g)
            {
                return Err(err(format!("route {r}: group `{g}`: {}", e.body().message)));
            }
            if self.routes[..i]
                .iter()
                .any(|o| o.method == r.method && o.path == r.path)
            {
                return Err(err(format!("route {r} is declared twice")));
            }
        }
        if self.sqlite.len() != self.postgres.len() {
            return Err(err(format!(
                "{} SQLite migrations but {} PostgreSQL migrations",
                self.sqlite.len(),
                self.postgres.len()
            )));
        }
        if self.own_file {
            for m in self.sqlite {
                if let Some((_, table)) = namespace::objects(m.sql)
                    .into_iter()
                    .find(|(verb, name)| *verb == "references" && !namespace::owns(self.name, name))
                {
                    return Err(err(format!(
                        "SQLite migration {} `{}` references `{table}`, but the module keeps its data in a file of its own and SQLite checks foreign keys within one file: drop the foreign key, or the own file",
                        m.version, m.name
                    )));
                }
            }
        }
        for (engine, list) in [("SQLite", self.sqlite), ("PostgreSQL", self.postgres)] {
            for m in list {
                if let Some(problem) = namespace::check_migration(self.name, m.sql).first() {
                    return Err(err(format!(
                        "{engine} migration {} `{}`: {problem}",
                        m.version, m.name
                    )));
                }
            }
        }
        for (i, (s, p)) in self.sqlite.iter().zip(self.postgres).enumerate() {
            let expected = i as i64 + 1;
            if s.version != expected || p.version != expected {
                return Err(err(format!(
                    "migration versions must run 1, 2, 3 … without gaps; position {expected} has {} (SQLite) and {} (PostgreSQL)",
                    s.version, p.version
                )));
            }
            if s.name != p.name {
                return Err(err(format!(
                    "migration {expected} is `{}` on SQLite but `{}` on PostgreSQL",
                    s.name, p.name
                )));
            }
        }
        Ok(())
    }
}

/// Where the modules of `specs` keep their tables: their PostgreSQL
/// schemas (hearth's own tables stay in the current schema), and the
/// modules that keep an SQLite file of their own.
pub fn layout(specs: &[ModuleSpec]) -> crate::db::Layout {
    crate::db::Layout {
        schemas: specs.iter().filter_map(ModuleSpec::schema).collect(),
        files: specs
            .iter()
            .filter(|s| s.own_file)
            .map(|s| s.name)
            .collect(),
    }
}

impl crate::events::Declares for ModuleSpec {
    fn name(&self) -> &'static str {
        ModuleSpec::name(self)
    }

    fn published(&self) -> &'static [EventSpec] {
        ModuleSpec::published(self)
    }

    fn subscribed(&self) -> &'static [EventSpec] {
        ModuleSpec::subscribed(self)
    }

    fn starts_from(&self) -> StartFrom {
        ModuleSpec::starts_from(self)
    }
}

impl crate::db::migrate::Migrations for ModuleSpec {
    fn module(&self) -> &'static str {
        self.name
    }

    fn migrations_for(&self, kind: DbKind) -> &'static [Migration] {
        ModuleSpec::migrations_for(self, kind)
    }

    fn schema(&self) -> Option<&'static str> {
        ModuleSpec::schema(self)
    }

    fn own_file(&self) -> bool {
        self.own_file
    }

    fn creates(&self, relation: &str) -> bool {
        self.postgres.iter().any(|m| {
            namespace::objects(m.sql)
                .iter()
                .any(|(verb, name)| *verb == "create" && name.rsplit('.').next() == Some(relation))
        })
    }
}
