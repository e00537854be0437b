//! Benchmarks for hearth. The measurements themselves are driven by
//! `bench/run.sh` with wrk; this crate holds the peer servers they are
//! compared with (see `src/bin/`), built in the same workspace so both sides
//! use the same compiler, profile and dependency versions.
