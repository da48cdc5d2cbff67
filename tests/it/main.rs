//! The integration test binary: real processes, real signals, real flock contention.

mod harness;

mod bad_input;
mod conflict;
mod control;
mod lifecycle;
mod man;
mod notify_logs;
mod pid1;
mod service;
mod signals;
mod terminal;
mod worktree;
