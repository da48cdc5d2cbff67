//! The integration test binary: real processes, real signals, real flock contention.

mod harness;

mod advice;
mod bad_input;
mod bad_input_matrix;
mod broken_stderr;
mod chaos;
mod completions;
mod conflict;
mod containment;
mod control;
mod faults;
#[cfg(feature = "fleet")]
mod fleet;
mod handover;
mod hooks;
mod leftovers;
mod lifecycle;
mod man;
mod notify_logs;
mod pid1;
mod pipelines;
mod portable;
mod props;
mod ralph;
mod readonly;
mod restart;
mod security;
mod service;
mod signals;
mod stall;
mod stress;
mod terminal;
mod untrusted_text;
mod worktree;
