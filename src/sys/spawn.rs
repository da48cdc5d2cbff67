//! The command started straight into the loop's cgroup: `clone3(CLONE_INTO_CGROUP)`
//! instead of `fork` and a write of `0` to `cgroup.procs` before `exec`; on x86-64 also
//! without a cgroup, for the memory it does not copy (below).
//!
//! Why: moving a process between cgroups (a write to `cgroup.procs`) takes the kernel's
//! cgroup threadgroup lock for writing, and taking that lock waits for an RCU grace
//! period unless another writer took it moments before: 8-17 ms on this kind of
//! machine for a launch that is not one of a rapid series, several times the rest of
//! the launch. A process created in its cgroup never moves, so nothing waits.
//!
//! What `std::process::Command::spawn` would do is done here the same way, for the
//! command as the supervisor configures it (program, arguments, environment, working
//! directory; standard streams inherited): the child changes directory, enters a
//! process group of its own, resets SIGPIPE and the signal mask, runs the
//! [`Prepared`] steps, and `exec`s the program, searched in the child's `PATH` as
//! glibc's `execvp` searches it (the same candidates in the same order, EACCES kept
//! over later ENOENTs, a file without `#!` run by `/bin/sh`). An error in the child
//! before `exec` reaches the parent over a close-on-exec pipe, as std reports it.
//! Everything is computed before the clone; the child only makes system calls.
//! (Linux only: macOS and FreeBSD have no cgroups, and their room spawns the usual way.)
//!
//! On x86-64 the child shares the parent's memory until it execs, on a stack of its
//! own, the parent suspended meanwhile (`CLONE_VM | CLONE_VFORK`, as `posix_spawn`
//! does): the parent waits for the `exec` anyway, and nothing is copied, neither the
//! page tables at the clone nor, after it, the pages the parent writes (165 page faults
//! per `run -- true` instead of 203, 8 % less CPU). Elsewhere it is a fork-like copy.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::process::Command;

use super::{Prepared, os};

/// The program's `exec` candidates, argument vectors and environment, as C strings.
struct Exec {
    /// Paths to try in order (one when the program names a path).
    candidates: Vec<CString>,
    argv: Vec<CString>,
    /// Our variables the command's changes leave alone, as the C library holds them.
    inherited: Vec<&'static CStr>,
    /// The variables the command sets.
    env: Vec<CString>,
    cwd: Option<CString>,
}

/// The default search path of glibc's `execvp` when the environment has no `PATH`.
const DEFAULT_PATH: &[u8] = b"/bin:/usr/bin";

/// What std's `Command` keeps in place of a program or argument with a NUL byte (and
/// then fails the spawn with InvalidInput): seen here, std's spawn must run to say so.
const STD_NUL_PLACEHOLDER: &[u8] = b"<string-with-nul>";

fn cstring(bytes: &[u8]) -> Option<CString> {
    if bytes == STD_NUL_PLACEHOLDER {
        return None;
    }
    CString::new(bytes).ok()
}

impl Exec {
    /// `None` when an argument or variable holds a NUL byte: std's spawn then reports it.
    fn of(cmd: &Command) -> Option<Exec> {
        let program = cmd.get_program().as_bytes();
        let mut argv = vec![cstring(program)?];
        for arg in cmd.get_args() {
            argv.push(cstring(arg.as_bytes())?);
        }
        // Our environment with the command's changes: ours in their order (each string
        // passed on as it is, not copied), less every variable the command sets or
        // removes, then those it sets. (std's spawn, the fallback, sorts them by name
        // and keeps the last of a name given twice; the command reads the same values
        // either way unless our own environment names a variable twice.)
        let changes: Vec<(&OsStr, Option<&OsStr>)> = cmd.get_envs().collect();
        let (mut inherited, mut path) = (Vec::new(), None);
        for entry in environ() {
            let bytes = entry.to_bytes();
            // The name ends at the first `=` after its first byte (std's reading; an
            // entry without one is skipped, as std skips it).
            let Some(eq) = bytes.iter().skip(1).position(|b| *b == b'=') else {
                continue;
            };
            let (name, value) = (&bytes[..eq + 1], &bytes[eq + 2..]);
            if changes.iter().any(|(key, _)| key.as_bytes() == name) {
                continue;
            }
            if name == b"PATH" && path.is_none() {
                path = Some(value.to_vec());
            }
            inherited.push(entry);
        }
        let mut env = Vec::new();
        for (key, value) in changes {
            let Some(value) = value else { continue };
            if key == "PATH" {
                path = Some(value.as_bytes().to_vec());
            }
            env.push(CString::new([key.as_bytes(), b"=", value.as_bytes()].concat()).ok()?);
        }
        let candidates = if program.contains(&b'/') {
            vec![cstring(program)?]
        } else if program.is_empty() {
            Vec::new()
        } else {
            let path = path.unwrap_or_else(|| DEFAULT_PATH.to_vec());
            let mut out = Vec::new();
            for dir in path.split(|b| *b == b':') {
                // An empty element is the current directory, as in glibc.
                let full = if dir.is_empty() {
                    program.to_vec()
                } else {
                    [dir, b"/", program].concat()
                };
                out.push(cstring(&full)?);
            }
            out
        };
        let cwd = match cmd.get_current_dir() {
            Some(dir) => Some(cstring(OsStr::new(dir).as_bytes())?),
            None => None,
        };
        Some(Exec {
            candidates,
            argv,
            inherited,
            env,
            cwd,
        })
    }
}

/// This process's environment as the C library holds it, one `NAME=value` string each.
fn environ() -> Vec<&'static CStr> {
    unsafe extern "C" {
        // (`mut`: `setenv` may point it at a new array; std declares it so too.)
        static mut environ: *const *const libc::c_char;
    }
    let mut out = Vec::new();
    // SAFETY: `environ` is the C library's NULL-terminated array of NUL-terminated
    // strings, read once, by value. What is relied on: no code in this process changes
    // the environment while the supervisor runs (no `setenv`, `putenv`, `unsetenv`:
    // ralph-supervise's own sources never do but once, in `sys::take_env` at start-up,
    // before anything reads it here, which `nothing_changes_our_environment` checks;
    // and no dependency it uses does), so the array and its strings stay as they are,
    // here and in the child until it execs. (glibc never frees a string `setenv`
    // stored either; a `putenv` string is its caller's.)
    unsafe {
        let mut entry = (&raw const environ).read();
        while !entry.is_null() && !(*entry).is_null() {
            out.push(CStr::from_ptr(*entry));
            entry = entry.add(1);
        }
    }
    out
}

fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Spawns `cmd` with `prepared` (whose `cgroup_procs` must be `None`) in a process group
/// of its own, directly in the cgroup whose directory `cgroup_dir` is open on if one
/// is given. Returns the child's pid; `None` when it cannot be done this way (no
/// `clone3`, or with a cgroup no `CLONE_INTO_CGROUP`: a kernel older than 5.3 or 5.7;
/// not x86-64 and no cgroup; a NUL byte in the command): the caller then spawns the
/// usual way. Of `cmd` only the program, arguments, environment and working directory
/// are taken (standard streams are inherited); anything else set on it (`stdin`,
/// `pre_exec`, `uid`, `env_clear`, ...) would be ignored here, so the caller sets none.
pub(crate) fn spawn_direct(
    cmd: &Command,
    prepared: &Prepared,
    cgroup_dir: Option<RawFd>,
) -> Option<io::Result<u32>> {
    let exec = Exec::of(cmd)?;
    let argv = pointers(&exec.argv);
    let inherited = exec.inherited.iter().map(|e| e.as_ptr());
    let envp: Vec<*const libc::c_char> = (inherited.chain(exec.env.iter().map(|e| e.as_ptr())))
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    // `/bin/sh FILE ARGS...` for a file the kernel cannot execute (no `#!`), as glibc's
    // execvp runs it; slot 1 is filled in the child.
    let sh = c"/bin/sh";
    let mut sh_argv: Vec<*const libc::c_char> = vec![sh.as_ptr(), std::ptr::null()];
    sh_argv.extend_from_slice(&argv[1..]);
    let mut report = [0 as RawFd; 2];
    // SAFETY: `report` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(report.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Some(Err(io::Error::last_os_error()));
    }
    let [read_end, write_end] = report;
    let close_both = || {
        // SAFETY: closing the two descriptors pipe2 gave us, once.
        unsafe {
            libc::close(read_end);
            libc::close(write_end);
        }
    };
    let mut job = Job {
        exec: &exec,
        argv: &argv,
        envp: &envp,
        sh_argv: &mut sh_argv,
        prepared,
        report: write_end,
    };
    let pid = match clone(cgroup_dir, &mut job) {
        Ok(pid) => pid,
        Err(_) => {
            close_both();
            return None;
        }
    };
    if pid == 0 {
        // The child (forked: a copy of this process's memory, one thread).
        // SAFETY: _exit(2) once the child's part has failed and reported why.
        unsafe { libc::_exit(job.run()) }
    }
    // SAFETY: our copy of the write end; the child has its own until it execs.
    unsafe {
        libc::close(write_end);
    }
    let mut buf = [0u8; 4];
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: reading into the unfilled part of `buf`.
        let n = unsafe { libc::read(read_end, buf[got..].as_mut_ptr().cast(), buf.len() - got) };
        if n > 0 {
            got += n as usize;
        } else if n == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break;
        }
    }
    // SAFETY: our read end, closed once.
    unsafe {
        libc::close(read_end);
    }
    if got == buf.len() {
        // It never ran the command: reap it here, as std does.
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid status pointer.
        unsafe {
            libc::waitpid(pid, &mut status, 0);
        }
        return Some(Err(io::Error::from_raw_os_error(i32::from_ne_bytes(buf))));
    }
    Some(Ok(pid as u32))
}

/// What the child needs, made before the clone.
struct Job<'a> {
    exec: &'a Exec,
    argv: &'a [*const libc::c_char],
    envp: &'a [*const libc::c_char],
    sh_argv: &'a mut [*const libc::c_char],
    prepared: &'a Prepared,
    /// The pipe's write end, where a failure's errno goes.
    report: RawFd,
}
impl Job<'_> {
    /// The child's part: up to `exec`, or the errno written to the pipe and 127 to
    /// exit with.
    fn run(&mut self) -> i32 {
        let errno = child(self.exec, self.argv, self.envp, self.sh_argv, self.prepared);
        let bytes = errno.to_ne_bytes();
        // SAFETY: write(2) of a stack buffer; async-signal-safe.
        unsafe {
            libc::write(self.report, bytes.as_ptr().cast(), bytes.len());
        }
        127
    }
}

/// The clone: on x86-64 sharing our memory until the child execs, on its own stack
/// (`clone_vfork`: no copy of our page tables, and we wait for the `exec` anyway);
/// elsewhere a fork-like `clone3` (into a cgroup only), the child returning 0 here.
/// Either way a child given a cgroup is in it from its first instruction.
#[cfg(target_arch = "x86_64")]
fn clone(cgroup_dir: Option<RawFd>, job: &mut Job) -> io::Result<i32> {
    extern "C" fn start(job: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `job` is the `&mut Job` given below, alive while the parent waits.
        let job = unsafe { &mut *job.cast::<Job>() };
        job.run()
    }
    let mut stack = os::ChildStack::new()?;
    let job: *mut Job = job;
    os::clone_vfork(cgroup_dir, &mut stack, start, job.cast())
}
#[cfg(not(target_arch = "x86_64"))]
fn clone(cgroup_dir: Option<RawFd>, _: &mut Job) -> io::Result<i32> {
    // Without a cgroup a fork-like clone3 has nothing over std's spawn.
    let dir = cgroup_dir.ok_or(io::ErrorKind::Unsupported)?;
    os::clone_into_cgroup(dir)
}

/// The child's part, up to `exec`; returns the errno to report when it fails.
fn child(
    exec: &Exec,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    sh_argv: &mut [*const libc::c_char],
    prepared: &Prepared,
) -> i32 {
    let errno = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL)
    };
    if let Some(cwd) = &exec.cwd {
        // SAFETY: chdir to a C string computed before the clone.
        if unsafe { libc::chdir(cwd.as_ptr()) } != 0 {
            return errno();
        }
    }
    // SAFETY: plain system calls on values: our own process group and SIGPIPE's
    // default action (std ignores it at start-up), as std's spawn does.
    unsafe {
        if libc::setpgid(0, 0) != 0 {
            return errno();
        }
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    if let Err(e) = prepared.apply() {
        return e.raw_os_error().unwrap_or(libc::EINVAL);
    }
    let mut eacces = false;
    let mut last = libc::ENOENT;
    for path in &exec.candidates {
        // SAFETY: execve with NUL-terminated arrays of C strings that outlive the call
        // (made before the clone: the parent's own, or this process's copy of them).
        unsafe {
            libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
        }
        let mut e = errno();
        if e == libc::ENOEXEC {
            sh_argv[1] = path.as_ptr();
            // SAFETY: as above; `sh_argv` is NUL-terminated.
            unsafe {
                libc::execve(sh_argv[0], sh_argv.as_ptr(), envp.as_ptr());
            }
            e = errno();
        }
        match e {
            libc::EACCES => eacces = true,
            libc::ENOENT | libc::ESTALE | libc::ENOTDIR | libc::ENODEV | libc::ETIMEDOUT => {}
            _ => return e,
        }
        last = e;
    }
    if eacces { libc::EACCES } else { last }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidates(program: &str, path: Option<&str>) -> Vec<String> {
        let mut cmd = Command::new(program);
        match path {
            Some(p) => cmd.env("PATH", p),
            None => cmd.env_remove("PATH"),
        };
        let exec = Exec::of(&cmd).unwrap();
        (exec.candidates.iter())
            .map(|c| c.to_str().unwrap().to_string())
            .collect()
    }

    /// The same candidates, in the same order, as glibc's execvp tries: the child's
    /// PATH (an empty element is the current directory), its default without one, and
    /// the program itself when it names a path.
    #[test]
    fn searches_the_childs_path_as_execvp_does() {
        assert_eq!(candidates("x", Some("/a::/b")), ["/a/x", "x", "/b/x"]);
        assert_eq!(candidates("x", None), ["/bin/x", "/usr/bin/x"]);
        assert_eq!(candidates("./x", Some("/a")), ["./x"]);
        assert!(candidates("", Some("/a")).is_empty());
    }

    #[test]
    fn the_childs_environment_is_ours_with_the_commands_changes() {
        let mut cmd = Command::new("x");
        cmd.env("RS_SPAWN_TEST", "1").env_remove("HOME");
        let exec = Exec::of(&cmd).unwrap();
        let env: Vec<&str> = (exec.inherited.iter().copied())
            .chain(exec.env.iter().map(|e| e.as_c_str()))
            .map(|e| e.to_str().unwrap())
            .collect();
        assert!(env.contains(&"RS_SPAWN_TEST=1"));
        assert!(!env.iter().any(|e| e.starts_with("HOME=")));
        // Ours, as std reads it, with the changes: in std's order.
        let mut ours: Vec<String> = std::env::vars_os()
            .filter(|(k, _)| k != "RS_SPAWN_TEST" && k != "HOME")
            .map(|(k, v)| format!("{}={}", k.to_str().unwrap(), v.to_str().unwrap()))
            .collect();
        ours.push("RS_SPAWN_TEST=1".to_string());
        assert_eq!(env, ours);
        assert!(
            Exec::of(Command::new("x").arg("a\0b")).is_none(),
            "std reports it"
        );
    }

    /// [`environ`] hands the child the C library's own strings: sound only while nothing
    /// in the program changes the environment. The one exception is `sys::take_env`,
    /// called from `main` at start-up, before any spawn reads the environment.
    #[test]
    fn nothing_changes_our_environment() {
        // (Each name in two parts, so that this file, checked too, does not hold it.)
        let calls = [("set", "_var("), ("remove", "_var("), ("set", "env(")];
        let calls = calls
            .into_iter()
            .chain([("put", "env("), ("clear", "env(")]);
        let calls: Vec<String> = calls.map(|(a, b)| format!("{a}{b}")).collect();
        let mut dirs = vec![std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if let Ok(text) = std::fs::read_to_string(&path) {
                    let allowed = |call: &str| match path.ends_with("src/sys.rs") {
                        true => usize::from(call == calls[1]),
                        false => 0,
                    };
                    for call in &calls {
                        assert_eq!(
                            text.matches(call.as_str()).count(),
                            allowed(call),
                            "{} calls {call}",
                            path.display()
                        );
                    }
                }
            }
        }
    }
}
