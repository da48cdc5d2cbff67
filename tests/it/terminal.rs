//! Interactive use through a real pseudo-terminal, with bash as the job-control shell.

use crate::harness::*;

fn run_line(ws: &Workspace, rest: &str) -> String {
    format!("{} -C {} run {rest}\n", bin(), ws.path.display())
}

#[test]
fn ctrl_c_reaches_the_child_once_and_the_prompt_waits_for_its_cleanup() {
    let ws = Workspace::new();
    let mut sh = PtyShell::bash(&ws.path);
    sh.send(&run_line(&ws, &format!("-- {} probe --exit-on INT", bin())));
    sh.expect("tty_foreground yes");
    sh.expect("ready");
    sh.send("\x03");
    sh.expect("signal SIGINT");
    sh.expect("cleanup done");
    sh.expect(PROMPT);
    assert_eq!(sh.status_of_last(), 130);
    let screen = sh.screen();
    assert_eq!(screen.matches("signal SIGINT").count(), 1, "{screen}");
    // The prompt came back only after the cleanup line.
    let cleanup = screen.find("cleanup done").unwrap();
    assert!(screen[cleanup..].contains(PROMPT));
    assert!(!ws.lock_held());
}

#[test]
fn ctrl_z_stops_the_job_and_fg_resumes_it_with_the_terminal() {
    let ws = Workspace::new();
    let mut sh = PtyShell::bash(&ws.path);
    sh.send(&run_line(&ws, &format!("-- {} probe --echo-stdin", bin())));
    sh.expect("ready");
    sh.send("\x1a");
    sh.expect("Stopped");
    sh.expect(PROMPT);
    assert!(ws.lock_held(), "a stopped job keeps the workspace");
    sh.send("fg\n");
    sh.expect("signal SIGCONT");
    sh.send("hello\n");
    sh.expect("got hello");
    sh.send("\x04");
    sh.expect("eof");
    sh.expect(PROMPT);
    assert_eq!(sh.status_of_last(), 0);
    assert!(!ws.lock_held());
}

#[test]
fn an_interactive_bash_child_has_job_control() {
    let ws = Workspace::new();
    let mut sh = PtyShell::bash(&ws.path);
    sh.send(&run_line(
        &ws,
        "-- env PS1='INNER> ' bash --norc --noprofile -i",
    ));
    sh.expect("INNER> ");
    sh.send("case $- in *m*) echo jc=on;; *) echo jc=off;; esac\n");
    sh.expect("jc=on");
    sh.send("sleep 600 &\n");
    sh.expect("INNER> ");
    sh.send("jobs\n");
    sh.expect("Running");
    sh.send("kill %1; wait; exit 4\n");
    sh.expect(PROMPT);
    assert_eq!(sh.status_of_last(), 4);
    let screen = sh.screen();
    assert!(!screen.contains("no job control"), "{screen}");
    assert!(!screen.contains("Inappropriate ioctl"), "{screen}");
}

#[test]
fn a_child_reading_the_terminal_gets_its_input() {
    let ws = Workspace::new();
    let mut sh = PtyShell::bash(&ws.path);
    sh.send(&run_line(&ws, "-- sh -c 'echo started; exec tac'"));
    sh.expect("started\r\n");
    sh.send("one\ntwo\n\x04");
    sh.expect("two\r\none\r\n");
    sh.expect(PROMPT);
    assert_eq!(sh.status_of_last(), 0);
}

#[test]
fn non_interactive_runs_have_no_tty_errors() {
    let ws = Workspace::new();
    let out = ws.run(&["run", "--", "sh", "-c", "echo out; echo err >&2"]);
    assert_eq!(out.code(), 0);
    assert_eq!(out.stdout, "out");
    assert_eq!(
        out.stderr.trim(),
        "err",
        "nothing but the child's own stderr"
    );
}

#[test]
fn ctrl_z_stops_a_run_waiting_for_the_lock_and_fg_resumes_the_wait() {
    let ws = Workspace::new();
    let mut holder = ws.start_probe(&[], &["--exit-on", "TERM"]);
    let mut sh = PtyShell::bash(&ws.path);
    sh.send(&run_line(
        &ws,
        &format!("--on-conflict wait -- {} probe --exit-on INT", bin()),
    ));
    sh.expect("waiting for the lock held by");
    sh.send("\x1a");
    sh.expect("Stopped");
    sh.expect(PROMPT);
    sh.send("fg\n");
    sh.expect("--on-conflict wait");
    // Continued, it waits again: the command starts once the holder lets go.
    holder.signal(nix::sys::signal::Signal::SIGTERM);
    holder.expect_line("cleanup done");
    assert_eq!(holder.finish().code(), 143);
    sh.expect("tty_foreground yes");
    sh.expect("ready");
    sh.send("\x03");
    sh.expect("cleanup done");
    sh.expect(PROMPT);
    assert_eq!(sh.status_of_last(), 130);
    let screen = sh.screen();
    assert!(!screen.contains("ignoring SIGTSTP"), "{screen}");
    assert!(!ws.lock_held());
}

#[test]
fn stop_ends_a_job_stopped_at_the_terminal_gracefully() {
    // Ctrl-Z stops the supervisor with its command; `ralph-supervise stop` from elsewhere
    // continues it (as systemd follows KillSignal= with CONT), so the command gets its
    // TERM now and the stop reports the loop ended, instead of timing out.
    let ws = Workspace::new();
    let mut sh = PtyShell::bash(&ws.path);
    sh.send(&run_line(
        &ws,
        &format!("-- {} probe --exit-on TERM", bin()),
    ));
    sh.expect("ready");
    sh.send("\x1a");
    sh.expect("Stopped");
    sh.expect(PROMPT);
    let out = ws.run(&["stop", "--timeout", "15s"]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    sh.expect("signal SIGTERM");
    sh.expect("cleanup done");
    assert!(!ws.lock_held());
    sh.send("wait; jobs; echo jobs-listed\n");
    sh.expect("jobs-listed\r\n");
}

#[test]
fn ctrl_c_ends_the_shell_loop_that_runs_the_supervisor() {
    // bash ends a loop only when its job died of INT: the supervisor dies of the
    // command's signal at a terminal, so the loop ends as with the command run directly.
    let ws = Workspace::new();
    let mut sh = PtyShell::bash(&ws.path);
    let run = run_line(&ws, &format!("-- {} probe --exit-on INT", bin()));
    sh.send(&format!(
        "for i in 1 2; do {}; echo after-$i; done; echo loop-done\n",
        run.trim_end()
    ));
    sh.expect("ready");
    sh.send("\x03");
    sh.expect("cleanup done");
    sh.expect(PROMPT);
    assert_eq!(sh.status_of_last(), 130);
    let screen = sh.screen();
    assert!(!screen.contains("after-1"), "{screen}");
    assert!(!screen.contains("\nloop-done"), "{screen}");
}

#[test]
fn the_terminal_modes_come_back_after_a_command_killed_in_raw_mode() {
    // A full-screen program killed while the terminal is raw: bash restores the modes
    // it saved, as it does for the command run directly, since the job died of a signal.
    let ws = Workspace::new();
    let mut sh = PtyShell::bash(&ws.path);
    sh.send(&run_line(
        &ws,
        "-- sh -c 'stty raw -echo; echo raw-set; kill -KILL $$'",
    ));
    sh.expect("raw-set");
    sh.expect(PROMPT);
    assert_eq!(sh.status_of_last(), 137);
    sh.send("echo \"mode=$(stty -a | grep -o -- '-*isig' | head -n 1).\"\n");
    sh.expect("mode=isig.");
    assert!(!ws.lock_held());
}

#[test]
fn ctrl_z_with_no_job_control_above_is_undone_as_the_kernel_undoes_it() {
    // The supervisor as the terminal's session leader (as in `tmux new-window CMD` or
    // `ssh -t host CMD`): its process group is orphaned, so the kernel discards its
    // Ctrl-Z, as it would the command's run directly. The command, stopped in its own
    // group, is continued at once and keeps the terminal.
    let ws = Workspace::new();
    let mut cmd = std::process::Command::new("setsid");
    cmd.args(["--ctty", bin(), "-C"])
        .arg(&ws.path)
        .args(["run", "--", bin(), "probe", "--echo-stdin"])
        .env_remove("RUST_LOG");
    let mut tty = PtyShell::spawn(cmd);
    tty.expect("ready");
    tty.send("\x1a");
    tty.expect("signal SIGCONT");
    tty.send("hello\n");
    tty.expect("got hello");
    tty.send("\x04");
    tty.expect("eof");
    wait_until("the lock to be released", LIMIT, || !ws.lock_held());
}

#[test]
fn a_program_running_the_supervisor_at_a_terminal_gets_128_plus_n() {
    // Only a job of an interactive shell sees the supervisor die of the command's
    // signal; a program that runs it in its own process group gets the status 143.
    let ws = Workspace::new();
    let mut sh = PtyShell::bash(&ws.path);
    sh.send(&format!(
        "python3 -c 'import subprocess,sys; print(\"code\", subprocess.run(sys.argv[1:]).returncode)' {} -C {} run -- sh -c 'kill -TERM $$'\n",
        bin(),
        ws.path.display()
    ));
    sh.expect("code 143");
    sh.expect(PROMPT);
}
