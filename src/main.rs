//! The binary: `ralph_supervise::main` run as the process's entry point.
//!
//! On Linux with glibc it is C's `main` itself (`no_main`): Rust's runtime start-up is
//! skipped, which on every start read `/proc/self/maps` (to find the main thread's
//! stack guard), mapped a signal stack and installed SIGSEGV/SIGBUS handlers for a
//! stack-overflow message: 20 of a `--version`'s 69 system calls, about 0.1 ms of
//! CPU per start (BENCHMARKS.md). What of it we rely on, `sys::start_up` does (SIGPIPE
//! ignored, closed standard descriptors reopened), and `main` below (a panic's status
//! 101, standard output flushed at the end). Given up: a stack overflow is a bare
//! SIGSEGV without std's message, and a panic message names the main thread
//! `<unnamed>`. The arguments still reach `std::env::args`: glibc hands them to std's
//! own initialiser. Elsewhere (std learns them only from its start-up) `main` is Rust's.

#![cfg_attr(all(target_os = "linux", target_env = "gnu"), no_main)]
#![deny(unsafe_code)]

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
// SAFETY: the binary's one `main` symbol (this crate defines no other, and std defines
// none under `no_main`); the C runtime calls it once, on the main thread, with the
// process's arguments, which it also passed to std's initialiser.
#[unsafe(no_mangle)]
extern "C" fn main(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    // As Rust's own start-up does: a panic (which unwinds in debug and test builds;
    // release builds abort) ends in status 101 once its message is printed, not in an
    // abort for unwinding out of a C function; and standard output is flushed on
    // either path, as nothing flushes it after C's `main` returns.
    let status = std::panic::catch_unwind(ralph_supervise::main).unwrap_or(101);
    let _ = std::io::Write::flush(&mut std::io::stdout());
    status.into()
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn main() -> std::process::ExitCode {
    ralph_supervise::main().into()
}
