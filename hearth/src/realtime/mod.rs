//! Realtime: the process's PostgreSQL LISTEN connection, shared by job
//! wake-ups and pub/sub.

pub(crate) mod listener;
