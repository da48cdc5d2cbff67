//! The shared test harness: temp workspaces (with git), the binary under test, processes
//! with line handshakes and deadlines, and a pseudo-terminal session.
//!
//! Nothing here sleeps to synchronise: every wait is for a line, a file or a process
//! state, polled with a deadline that fails the test instead of hanging it.

#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Default time limit of any single wait in a test.
pub const LIMIT: Duration = Duration::from_secs(20);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ralph-supervise")
}

/// Polls `cond` every few milliseconds until it holds; panics with `what` at the deadline.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A temporary workspace directory.
pub struct Workspace {
    _tmp: tempfile::TempDir,
    pub path: PathBuf,
}

impl Workspace {
    pub fn new() -> Workspace {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().canonicalize().unwrap();
        Workspace { _tmp: tmp, path }
    }

    /// Writes `.ralph/supervise.toml`, the workspace's policy file.
    pub fn write_policy(&self, text: &str) {
        std::fs::create_dir_all(self.path.join(".ralph")).unwrap();
        std::fs::write(self.path.join(".ralph/supervise.toml"), text).unwrap();
    }

    /// A workspace that is a git repository with one commit.
    pub fn git() -> Workspace {
        let ws = Workspace::new();
        ws.git_cmd(&["init", "-q", "-b", "main"]);
        std::fs::write(ws.path.join("README"), "hello\n").unwrap();
        ws.git_cmd(&["add", "README"]);
        ws.git_cmd(&["commit", "-q", "-m", "init"]);
        ws
    }

    pub fn git_cmd(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(&self.path)
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn lock_path(&self) -> PathBuf {
        self.path.join(".ralph/loop.lock")
    }

    /// `flock -n` from a second process: whether somebody holds the workspace lock.
    pub fn lock_held(&self) -> bool {
        let status = Command::new("flock")
            .arg("-n")
            .arg(self.lock_path())
            .arg("true")
            .status()
            .expect("flock(1)");
        match status.code() {
            Some(0) => false,
            Some(1) => true,
            other => panic!("flock(1) failed: {other:?}"),
        }
    }

    pub fn metadata(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.lock_path()).unwrap();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("lock metadata {text:?}: {e}"))
    }

    /// The child's pid once the supervisor has recorded it in the lock metadata (it writes
    /// it right after the spawn, concurrently with the child's start): waits for it.
    pub fn child_pid(&self) -> i32 {
        let mut child = 0;
        wait_until("the child's pid in the metadata", LIMIT, || {
            child = std::fs::read_to_string(self.lock_path())
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|m| m["child_pid"].as_i64())
                .unwrap_or(0) as i32;
            child != 0
        });
        child
    }

    /// `ralph-supervise -C <ws> <args>`, not yet spawned.
    pub fn cmd(&self, args: &[&str]) -> Command {
        self.cmd_in(&self.path, args)
    }

    /// `ralph-supervise -C <dir> <args>` from `dir` (a subdirectory of the workspace, a
    /// worktree), not yet spawned.
    pub fn cmd_in(&self, dir: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.arg("-C").arg(dir).args(args);
        cmd.current_dir(dir);
        cmd.stdin(Stdio::null());
        cmd.env_remove("RUST_LOG");
        cmd
    }

    /// [`Workspace::cmd`] as user and group nobody (65534), without supplementary
    /// groups (through setpriv; the caller must be root), from `/`, not yet spawned.
    pub fn nobody_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            bin(),
            "-C",
        ])
        .arg(&self.path)
        .args(args)
        .current_dir("/")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
        cmd
    }

    /// Runs `ralph-supervise -C <ws> <args>` to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        Proc::spawn(self.cmd(args)).finish()
    }

    /// Starts `ralph-supervise -C <ws> run [opts] -- <probe args>` and waits for `ready`.
    pub fn start_probe(&self, run_opts: &[&str], probe_args: &[&str]) -> Proc {
        self.start_probe_in(&self.path, run_opts, probe_args)
    }

    /// [`Workspace::start_probe`] with `-C <dir>`.
    pub fn start_probe_in(&self, dir: &Path, run_opts: &[&str], probe_args: &[&str]) -> Proc {
        let mut args = vec!["run"];
        args.extend_from_slice(run_opts);
        args.extend(["--", bin(), "probe"]);
        args.extend_from_slice(probe_args);
        let mut p = Proc::spawn(self.cmd_in(dir, &args));
        p.expect_line("ready");
        // The supervisor records the child's pid right after the spawn, concurrently with
        // the child's start: wait for it, so tests see the settled metadata.
        let pid: u64 = p.value("pid").parse().unwrap();
        let lock = p.value(&format!("fd {}", p.value("lock_fd")));
        let what = format!("the child's pid {pid} in the lock metadata at {lock}");
        wait_until(&what, LIMIT, || {
            std::fs::read_to_string(&lock)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .is_some_and(|m| m["pid"].as_u64() == Some(pid))
        });
        p
    }
}

/// What a finished process left.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("killed by a signal: {self:?}"))
    }
}

/// A spawned process whose stdout is read line by line and stderr collected.
pub struct Proc {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
    /// Pids reported by probes (`pid N`), killed when the test ends.
    reported: Vec<i32>,
}

impl Proc {
    pub fn spawn(mut cmd: Command) -> Proc {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn");
        let stdout = child.stdout.take().unwrap();
        let stderr_pipe = child.stderr.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = collect(stderr_pipe);
        Proc {
            child,
            lines,
            seen: Vec::new(),
            stderr,
            reported: Vec::new(),
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).expect("kill");
    }

    fn next_line(&mut self, deadline: Instant) -> Option<String> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(pid) = line.strip_prefix("pid ").and_then(|p| p.parse().ok()) {
                    self.reported.push(pid);
                }
                self.seen.push(line.clone());
                Some(line)
            }
            Err(RecvTimeoutError::Timeout) => panic!(
                "timed out; stdout so far: {:?}; stderr: {}",
                self.seen,
                self.stderr()
            ),
            Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Waits for a line equal to `want`; returns it.
    pub fn expect_line(&mut self, want: &str) -> String {
        self.expect(|l| l == want, want)
    }

    /// Waits for a line matching `pred`.
    pub fn expect(&mut self, pred: impl Fn(&str) -> bool, what: &str) -> String {
        let deadline = Instant::now() + LIMIT;
        loop {
            match self.next_line(deadline) {
                Some(line) if pred(&line) => return line,
                Some(_) => {}
                None => panic!(
                    "stdout closed before {what:?}; stdout: {:?}; stderr: {}",
                    self.seen,
                    self.stderr()
                ),
            }
        }
    }

    /// The value of a `key value` line seen so far.
    pub fn value(&self, key: &str) -> String {
        let prefix = format!("{key} ");
        self.seen
            .iter()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {key:?} line in {:?}", self.seen))
            .to_string()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits (with the default limit) for exit and the end of output.
    pub fn finish(mut self) -> Output {
        let status = self.wait(LIMIT);
        let deadline = Instant::now() + LIMIT;
        while self.next_line(deadline).is_some() {}
        // stderr's reader ends with the pipe; give it the same deadline.
        let stdout = self.seen.join("\n");
        wait_until("stderr to close", LIMIT, || {
            Arc::strong_count(&self.stderr) == 1
        });
        Output {
            status,
            stdout,
            stderr: self.stderr(),
        }
    }

    /// Waits for exit with a deadline.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let mut status = None;
        wait_until("process exit", limit, || {
            status = self.child.try_wait().expect("try_wait");
            status.is_some()
        });
        status.unwrap()
    }

    /// Lines seen so far.
    pub fn seen(&self) -> &[String] {
        &self.seen
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for pid in &self.reported {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
    }
}

/// Whether `pid` names a live (non-zombie) process.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .next();
            state != Some("Z")
        }
        Err(_) => false,
    }
}

/// An interactive program (a shell) in a real pseudo-terminal (made the controlling
/// terminal by `setsid --ctty`), for job-control and completion tests.
pub struct PtyShell {
    master: File,
    out: Arc<Mutex<String>>,
    cursor: usize,
    child: Child,
}

pub const PROMPT: &str = "PROMPT> ";

impl PtyShell {
    /// An interactive bash with the prompt [`PROMPT`], ready for input.
    pub fn bash(cwd: &Path) -> PtyShell {
        let mut cmd = Command::new("setsid");
        cmd.args(["--ctty", "bash", "--norc", "--noprofile", "-i"])
            .current_dir(cwd)
            .env("PS1", PROMPT)
            .env("TERM", "dumb")
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env_remove("RUST_LOG")
            .env_remove("PROMPT_COMMAND");
        let mut sh = PtyShell::spawn(cmd);
        sh.expect(PROMPT);
        sh
    }

    /// `cmd` with a new pseudo-terminal as its stdin, stdout and stderr (run it under
    /// `setsid --ctty` to make that its controlling terminal).
    pub fn spawn(mut cmd: Command) -> PtyShell {
        let (master, slave) = pty();
        cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        let child = cmd.spawn().expect("spawn in a pseudo-terminal");
        // Our copies of the slave go with `cmd`: the terminal hangs up when the child ends.
        drop(cmd);
        let master = File::from(master);
        let out = collect(master.try_clone().unwrap());
        PtyShell {
            master,
            out,
            cursor: 0,
            child,
        }
    }

    pub fn send(&mut self, text: &str) {
        self.master.write_all(text.as_bytes()).unwrap();
        self.master.flush().unwrap();
    }

    /// Waits until `want` appears after the cursor; returns the text before it and moves
    /// the cursor past it.
    pub fn expect(&mut self, want: &str) -> String {
        let deadline = Instant::now() + LIMIT;
        loop {
            let out = self.out.lock().unwrap();
            if let Some(at) = out[self.cursor..].find(want) {
                let before = out[self.cursor..self.cursor + at].to_string();
                self.cursor += at + want.len();
                return before;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {want:?} on the terminal; after the cursor: {:?}",
                &out[self.cursor..]
            );
            drop(out);
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends `keys` to a program that may throw away what is typed ahead (less flushes
    /// its input on an interrupt), again every second until `want` appears after the
    /// cursor; then moves the cursor past it as [`PtyShell::expect`] does.
    pub fn send_until(&mut self, keys: &str, want: &str) -> String {
        let deadline = Instant::now() + LIMIT;
        loop {
            self.send(keys);
            let again = Instant::now() + Duration::from_secs(1);
            while Instant::now() < again.min(deadline) {
                if self.out.lock().unwrap()[self.cursor..].contains(want) {
                    return self.expect(want);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            if Instant::now() >= deadline {
                return self.expect(want);
            }
        }
    }

    /// All terminal output so far.
    pub fn screen(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Runs `line`, waits for the prompt, and returns `$?`.
    pub fn status_of_last(&mut self) -> i32 {
        self.send("echo \"rc=$?.\"\n");
        let start = self.cursor;
        self.expect(".\r\n");
        let text = self.out.lock().unwrap()[start..self.cursor].to_string();
        let rc = text
            .rsplit("rc=")
            .next()
            .and_then(|t| t.split('.').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no rc in {text:?}"));
        self.expect(PROMPT);
        rc
    }
}

impl Drop for PtyShell {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Counts lines equal to `line`.
pub fn count(lines: &[String], line: &str) -> usize {
    lines.iter().filter(|l| *l == line).count()
}

/// Children of `pid`, from `/proc/PID/task/PID/children`.
pub fn children_of(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Voluntary plus involuntary context switches of `pid`.
fn context_switches(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .filter(|l| l.contains("ctxt_switches"))
        .map(|l| l.split_whitespace().last().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// Whether `pid`'s main thread sleeps in the kernel where the supervisor waits: in
/// poll(2) (its event loop) or, waiting for the workspace lock, in flock(2).
pub fn asleep_waiting(pid: i32) -> bool {
    let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
    wchan.contains("poll") || wchan.contains("lock")
}

/// Waits until `pid` sleeps in poll(2) or flock(2) ([`asleep_waiting`]), then watches
/// it for `window`: it must not wake up once (no polling, no timers).
pub fn assert_idle(pid: i32, window: Duration) {
    wait_until(&format!("pid {pid} asleep in poll or flock"), LIMIT, || {
        asleep_waiting(pid)
    });
    let before = context_switches(pid);
    std::thread::sleep(window);
    assert_eq!(
        context_switches(pid),
        before,
        "pid {pid} woke up while idle"
    );
}

/// Everything `reader` yields until its end, gathered by a thread as it comes.
pub fn collect(mut reader: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let out = Arc::new(Mutex::new(String::new()));
    let sink = out.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&buf[..n]);
            sink.lock().unwrap().push_str(&text);
        }
    });
    out
}

/// A pseudo-terminal (master, slave), both close-on-exec from the start (`openpty`
/// leaves them inheritable, and a master leaked into a child would keep the terminal
/// from hanging up).
pub fn pty() -> (OwnedFd, OwnedFd) {
    use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let master = posix_openpt(flags).expect("posix_openpt");
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let name = ptsname_r(&master).unwrap();
    let slave = nix::fcntl::open(name.as_str(), flags, nix::sys::stat::Mode::empty()).unwrap();
    (master.into(), slave)
}

/// `flock(1)` holding a workspace's lock (no metadata: a foreign holder), in a process
/// group of its own with its `sleep`.
pub struct FlockHolder {
    proc: Proc,
}

impl FlockHolder {
    pub fn start(ws: &Workspace) -> FlockHolder {
        std::fs::create_dir_all(ws.path.join(".ralph")).unwrap();
        let mut c = Command::new("flock");
        c.arg(ws.lock_path())
            .args(["sh", "-c", "echo locked; exec sleep 600"])
            .process_group(0);
        let mut proc = Proc::spawn(c);
        proc.expect_line("locked");
        FlockHolder { proc }
    }

    /// flock(1)'s pid, its process group's id.
    pub fn pid(&self) -> Pid {
        self.proc.pid()
    }

    /// Kills flock(1) and its `sleep`: the lock is free.
    pub fn release(self) {
        nix::sys::signal::killpg(self.proc.pid(), Signal::SIGKILL).unwrap();
    }
}
