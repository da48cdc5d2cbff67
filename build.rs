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
//!   1.4 MB, kept nearly all of it resident; together, they keep about 650 kB resident
//!   (peak RSS 3,108 -> about 2,400 kB, BENCHMARKS.md). A linker script that only adds an
//!   output section (`INSERT`), so the linker's own layout stays as it is; a name the list
//!   has that the build lacks matches nothing, and a function missing from the list stays
//!   where the linker puts it: a stale list costs memory, never correctness.
//!
//! For another system, a static build or a cross build nothing changes.

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
    if packed_relocations_run(&cc, &out) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    if let Some(script) = hot_functions(&cc, &out) {
        println!("cargo:rustc-link-arg-bins=-Wl,-T,{}", script.display());
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

/// Whether a position-independent program with relative relocations, linked with them
/// packed, links and runs here (the linker knows the option, the C library `DT_RELR`).
fn packed_relocations_run(cc: &str, out: &Path) -> bool {
    let (source, program) = (out.join("relr.c"), out.join("relr"));
    let text = "static int x[8];\nint *p[8] = {x, x + 1, x + 2, x + 3, x + 4, x + 5, x + 6, x + 7};\nint main(void) { return *p[7]; }\n";
    if std::fs::write(&source, text).is_err() {
        return false;
    }
    let linked = Command::new(cc)
        .args(["-fPIE", "-pie", "-Wl,-z,pack-relative-relocs", "-o"])
        .arg(&program)
        .arg(&source)
        .output();
    linked.is_ok_and(|o| o.status.success())
        && Command::new(&program).status().is_ok_and(|s| s.success())
}

/// The linker script that puts the listed functions in `.text.hot`, ahead of `.init`
/// (next to `.init`, `.fini` and `.plt`, which every run touches too), if a C program
/// linked with it runs here. Each line of the list is a symbol name whose hashes are
/// `*` (`_ZN15ralph_supervise3run3run17h*E`, `_RNvCs*_3std...`); with function sections
/// each function is in `.text.<symbol>` (`.text.unlikely.<symbol>` when the compiler
/// deems it cold), with a `.<n>` suffix where LTO renamed a duplicate. The C start-up
/// files and the unwinder (whose constructor runs at every start) come first.
fn hot_functions(cc: &str, out: &Path) -> Option<PathBuf> {
    let list = Path::new(&std::env::var("CARGO_MANIFEST_DIR").ok()?).join("link/hot-functions.txt");
    println!("cargo:rerun-if-changed={}", list.display());
    let list = std::fs::read_to_string(list).ok()?;
    let glob = |c: char| c.is_ascii_alphanumeric() || "_$.*".contains(c);
    let mut script = String::from(
        "SECTIONS {\n  .text.hot : {\n    *crt*.o(.text .text.*)\n    *libgcc_eh.a:*(.text .text.*)\n",
    );
    for name in list.lines().map(str::trim) {
        if name.is_empty() || name.starts_with('#') || !name.chars().all(glob) {
            continue;
        }
        let sections = [".text.", ".text.unlikely."].map(|at| format!("{at}{name} {at}{name}.*"));
        script += &format!("    *({})\n", sections.join(" "));
    }
    script += "  }\n}\nINSERT BEFORE .init;\n";
    let (path, source, program) = (out.join("hot.ld"), out.join("hot.c"), out.join("hot"));
    std::fs::write(&path, script).ok()?;
    std::fs::write(&source, "int main(void) { return 0; }\n").ok()?;
    let linked = Command::new(cc)
        .arg(format!("-Wl,-T,{}", path.display()))
        .arg("-o")
        .arg(&program)
        .arg(&source)
        .output();
    let runs = linked.is_ok_and(|o| o.status.success())
        && Command::new(&program).status().is_ok_and(|s| s.success());
    runs.then_some(path)
}
