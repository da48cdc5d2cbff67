//! The integration test binary: real processes, real signals, real flock contention.

mod harness;

mod bad_input;
mod conflict;
mod lifecycle;
mod pid1;
mod signals;
mod terminal;
