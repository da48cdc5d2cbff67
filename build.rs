//! Link-time choices for Linux with glibc, made where the machine that builds (and so,
//! with `cargo install`, runs) the binary supports them; how one builds does not change,
//! and only this package's own binaries and tests are linked this way.
//!
//! - The unwinder linked in statically (`libgcc_eh.a`) instead of `libgcc_s.so.1` loaded
//!   at every start. Rust's standard library names `gcc_s` for its unwinder on this
//!   target: a second shared library for the dynamic loader to find, map and relocate,
//!   whose constructor runs `cpuid` several times, which traps to the hypervisor on a
//!   virtual machine (`--version` 0.875 -> 0.805 ms of CPU, BENCHMARKS.md). A linker
//!   script named `libgcc_s.so`, ahead in the search path, stands for the static
//!   `libgcc_eh.a` the C compiler ships, as gcc's own `-static-libgcc` would.
//! - Relative relocations packed (`-z pack-relative-relocs`, glibc 2.36's `DT_RELR`):
//!   the 4,139 relocations of the position-independent executable take 1.2 KB instead
//!   of 99 KB that the loader reads at every start (peak RSS about 200 kB less). Only
//!   where a small program linked that way runs here: an older glibc refuses to load it.
//! - The functions a run calls placed together, ahead of the rest of the code
//!   (`link/hot-functions.txt`, made by `bench/hot.py`): the kernel maps a program's code
//!   64 KiB around each page first touched, so the ~400 KB a run uses, spread over all
//!   1.4 MB, kept nearly all of it resident; together, about 450 kB is (peak RSS 3,108
//!   -> 2,136 kB, BENCHMARKS.md). A linker script that only adds an output section
//!   (`INSERT`), so the linker's own layout stays as it is; a name the list
//!   has that the build lacks matches nothing, and a function missing from the list stays
//!   where the linker puts it: a stale list costs memory, never correctness.
//!
//! Each is tried first on a small Rust program built as this package is (its compiler,
//! flags and linker: gold, say, has no `INSERT`); where it fails, it is not used. For
//! another system, a static build or a cross build nothing changes.

use std::path::{Path, PathBuf};
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
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = PathBuf::from(var("OUT_DIR"));
    static_unwinder(&cc, &out);
    let packed = ["-Wl,-z,pack-relative-relocs".to_string()];
    if links_and_runs(&out, "relr", &packed) {
        println!("cargo:rustc-link-arg-bins={}", packed[0]);
    }
    if let Some(script) = hot_functions(&out) {
        println!("cargo:rustc-link-arg-bins={script}");
    }
}

fn static_unwinder(cc: &str, out: &Path) {
    // `cc -print-file-name` prints the archive's full path when the compiler has it,
    // and the bare name when it has not.
    let Ok(found) = Command::new(cc)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
    else {
        return;
    };
    let archive = PathBuf::from(String::from_utf8_lossy(&found.stdout).trim());
    if !found.status.success() || !archive.is_absolute() || !archive.is_file() {
        return;
    }
    // Run again when the archive changes or goes (a compiler upgrade that removes the
    // old version's directory), rather than link against a path that is gone.
    println!("cargo:rerun-if-changed={}", archive.display());
    let script = format!("INPUT(\"{}\")\n", archive.display());
    if std::fs::write(out.join("libgcc_s.so"), script).is_ok() {
        println!("cargo:rustc-link-search=native={}", out.display());
    }
}

/// Whether a small Rust program, built by the compiler, flags and linker that build this
/// package (`RUSTC`, `RUSTFLAGS`, a configured linker) with `link_args` added, links and
/// runs here: a linker that does not know an option or a script's command (gold has no
/// `INSERT`), or a C library that cannot load what it made (`DT_RELR` before glibc
/// 2.36), and the option is not used.
fn links_and_runs(out: &Path, name: &str, link_args: &[String]) -> bool {
    let (source, program) = (out.join(format!("{name}.rs")), out.join(name));
    if std::fs::write(&source, "fn main() {}\n").is_err() {
        return false;
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let mut build = Command::new(rustc);
    build
        .arg("--edition=2021")
        .arg("-o")
        .arg(&program)
        .arg(&source);
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    build.args(flags.split('\x1f').filter(|f| !f.is_empty()));
    if let Ok(linker) = std::env::var("RUSTC_LINKER") {
        build.arg(format!("-Clinker={linker}"));
    }
    build.args(link_args.iter().map(|a| format!("-Clink-arg={a}")));
    build.output().is_ok_and(|o| o.status.success())
        && Command::new(&program).status().is_ok_and(|s| s.success())
}

/// The linker script that puts the listed functions in `.text.hot`, ahead of `.text`
/// (`-Wl,-T,<script>`), if a program linked with it runs here. Each line of the list is a
/// symbol name whose hashes are `*` (`_ZN15ralph_supervise3run3run17h*E`,
/// `_RNvCs*_3std...`); with function sections each function is in `.text.<symbol>`
/// (`.text.unlikely.<symbol>` when the compiler deems it cold), with a `.<n>` suffix
/// where LTO renamed a duplicate. The C start-up files and the unwinder (whose
/// constructor runs at every start) come first.
fn hot_functions(out: &Path) -> Option<String> {
    let list = Path::new(&std::env::var("CARGO_MANIFEST_DIR").ok()?).join("link/hot-functions.txt");
    println!("cargo:rerun-if-changed={}", list.display());
    let list = std::fs::read_to_string(list).ok()?;
    let glob = |c: char| c.is_ascii_alphanumeric() || "_$.*".contains(c);
    let mut script = String::from("SECTIONS {\n  .text.hot : {\n");
    for start in [
        "crt1.o",
        "Scrt1.o",
        "rcrt1.o",
        "crti.o",
        "crtbegin*.o",
        "crtend*.o",
        "crtn.o",
    ] {
        script += &format!("    */{start}(.text .text.*)\n");
    }
    script += "    *libgcc_eh.a:*(.text .text.*)\n";
    for name in list.lines().map(str::trim) {
        if name.is_empty() || name.starts_with('#') || !name.chars().all(glob) {
            continue;
        }
        let sections = [".text.", ".text.unlikely."].map(|at| format!("{at}{name} {at}{name}.*"));
        script += &format!("    *({})\n", sections.join(" "));
    }
    script += "  }\n}\nINSERT BEFORE .text;\n";
    let path = out.join("hot.ld");
    std::fs::write(&path, script).ok()?;
    let arg = format!("-Wl,-T,{}", path.display());
    links_and_runs(out, "hot", std::slice::from_ref(&arg)).then_some(arg)
}
