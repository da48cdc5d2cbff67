//! Link-time choice for Linux with glibc: the unwinder linked in statically
//! (`libgcc_eh.a`) instead of loading `libgcc_s.so.1` at every start.
//!
//! Rust's standard library names `gcc_s` for its unwinder on this target. Loading it is
//! a second shared library for the dynamic loader to find, map and relocate, and its
//! constructor runs `cpuid` several times, which traps to the hypervisor on a virtual
//! machine: together 0.13 ms of CPU per `run -- true` and 0.23 ms per `--version`
//! (BENCHMARKS.md). This script puts a linker script named `libgcc_s.so` ahead in the
//! search path that stands for the static `libgcc_eh.a` the C compiler ships, as
//! gcc's own `-static-libgcc` would. Where the compiler has no `libgcc_eh.a`, or the
//! target is another system or a static build, nothing changes. Only this package's
//! own binaries and tests are linked this way; how one builds does not change.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CC");
    let var = |name| std::env::var(name).unwrap_or_default();
    let linux_gnu = var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu";
    let static_build = var("CARGO_CFG_TARGET_FEATURE")
        .split(',')
        .any(|f| f == "crt-static");
    if !linux_gnu || static_build || var("TARGET") != var("HOST") {
        return;
    }
    // `cc -print-file-name` prints the archive's full path when the compiler has it,
    // and the bare name when it has not.
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let Ok(out) = Command::new(cc)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
    else {
        return;
    };
    let archive = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !out.status.success() || !archive.is_absolute() || !archive.is_file() {
        return;
    }
    // Run again when the archive changes or goes (a compiler upgrade that removes the
    // old version's directory), rather than link against a path that is gone.
    println!("cargo:rerun-if-changed={}", archive.display());
    let dir = PathBuf::from(var("OUT_DIR"));
    let script = format!("INPUT(\"{}\")\n", archive.display());
    if std::fs::write(dir.join("libgcc_s.so"), script).is_ok() {
        println!("cargo:rustc-link-search=native={}", dir.display());
    }
}
