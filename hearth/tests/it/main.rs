//! hearth's integration tests: the real pipeline over real HTTP on a random
//! port, each test on SQLite and on PostgreSQL in a fresh database.

mod db;
mod pipeline;
mod probe;
mod server;
