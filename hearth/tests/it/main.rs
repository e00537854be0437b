//! hearth's integration tests: the real pipeline over real HTTP on a random
//! port, each test on SQLite and on PostgreSQL in a fresh database.

// Test code: a failed unwrap is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod accounts;
mod db;
mod events;
mod jobs;
mod mail;
mod ops;
mod pipeline;
mod probe;
mod realtime;
mod server;
mod telemetry;
mod tokens;
mod usecases;
