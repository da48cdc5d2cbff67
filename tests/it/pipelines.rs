//! The supervisor in a pipeline typed at an interactive bash: `X | cat -n` and `X | less`
//! behave as without it. The pager keeps the terminal; Ctrl-Z stops the whole job (the
//! shell gets its prompt back), `fg` continues all of it, Ctrl-C reaches the child once.

use crate::harness::*;

/// The fields of `/proc/PID/stat` these tests look at.
struct Stat {
    state: char,
    ppid: i32,
    pgrp: i32,
    /// The foreground process group of the process's terminal.
    tpgid: i32,
}

fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = text.rsplit(')').next()?.split_whitespace().collect();
    Some(Stat {
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        pgrp: f.get(2)?.parse().ok()?,
        tpgid: f.get(5)?.parse().ok()?,
    })
}

/// The processes in process group `pgrp`.
fn members(pgrp: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|pid| stat(*pid).is_some_and(|s| s.pgrp == pgrp))
        .collect()
}

/// The probe's pid, from its `pid N` line on the screen.
fn probe_pid(screen: &str) -> i32 {
    screen
        .lines()
        .find_map(|l| {
            l.trim_start_matches(['\r', '|', '\x08', '^'])
                .strip_prefix("pid ")
        })
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid line in {screen:?}"))
}

fn run_line(ws: &Workspace, pipe_to: &str) -> String {
    format!(
        "{bin} -C {} run -- {bin} probe --exit-on INT | {pipe_to}\n",
        ws.path.display(),
        bin = bin()
    )
}

#[test]
fn piped_into_cat_ctrl_z_stops_the_whole_job_and_fg_continues_it() {
    let ws = Workspace::new();
    let mut sh = PtyShell::bash(&ws.path);
    // The reader survives Ctrl-C, so the child's report of it can be read.
    sh.send(&run_line(&ws, "(trap '' INT; exec cat -n)"));
    sh.expect("\tready\r\n");
    sh.send("\x1a");
    sh.expect("Stopped");
    sh.expect(PROMPT);
    assert!(ws.lock_held(), "a stopped job keeps the workspace");
    sh.send("fg\n");
    sh.expect("\tsignal SIGCONT\r\n");
    sh.send("\x03");
    sh.expect("\tsignal SIGINT\r\n");
    sh.expect("\tcleanup done\r\n");
    sh.expect(PROMPT);
    let screen = sh.screen();
    assert_eq!(screen.matches("signal SIGINT").count(), 1, "{screen}");
    assert_eq!(screen.matches("signal SIGCONT").count(), 1, "{screen}");
    assert_eq!(screen.matches("Stopped").count(), 1, "{screen}");
    assert!(!ws.lock_held());
}

#[test]
fn piped_into_less_the_pager_keeps_the_terminal() {
    let ws = Workspace::new();
    let mut sh = PtyShell::bash(&ws.path);
    // A screen shorter than the probe's report: less shows its prompt and takes keys.
    sh.send("stty rows 8 cols 80\n");
    sh.expect(PROMPT);
    sh.send(&run_line(&ws, "less -d"));
    sh.expect("pid ");
    // Keys reach less: its help screen. (Without the terminal it stops at once.)
    sh.send("h");
    sh.expect("SUMMARY OF LESS COMMANDS");
    sh.send("q");
    sh.expect("sigblk");
    sh.send("\x1a");
    sh.expect("Stopped");
    sh.expect(PROMPT);
    assert!(ws.lock_held(), "a stopped job keeps the workspace");
    sh.send("fg\n");
    // The child runs again, and so does less, in the terminal's foreground group. (Not
    // through keys: less may discard keys typed while it sets its terminal mode again.)
    let probe = probe_pid(&sh.screen());
    let job = stat(probe).map(|s| s.ppid).and_then(stat).unwrap().pgrp;
    let less = members(job)
        .into_iter()
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "less")
        })
        .expect("less in the job's process group");
    let supervisor = stat(probe).map(|s| s.ppid);
    // Should a wait time out, it says where each process was.
    let until = |sh: &PtyShell, what: &str, cond: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + LIMIT;
        while !cond() {
            let states = |pid: Option<i32>| pid.and_then(stat).map(|s| (s.state, s.tpgid));
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}: supervisor {:?}, child {:?}, less {:?} \
                 (state, terminal's foreground); screen {:?}",
                states(supervisor),
                states(Some(probe)),
                states(Some(less)),
                sh.screen()
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    };
    until(&sh, "the child and less to run with the terminal", &|| {
        let (Some(p), Some(l)) = (stat(probe), stat(less)) else {
            return false;
        };
        p.state != 'T' && l.state != 'T' && l.tpgid == job
    });
    // Ctrl-C ends less's following and reaches the child through the supervisor.
    sh.send("\x03");
    until(&sh, "the workspace to be free", &|| !ws.lock_held());
    let text = std::fs::read_to_string(ws.path.join(".ralph/supervise/runs.jsonl")).unwrap();
    let record: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(record["signal"], "SIGINT", "{record}");
    assert_eq!(record["status"], 130, "{record}");
    // less flushes what was typed ahead when the interrupt reaches it: a `q` sent
    // before that is lost, so it is sent until less has quit.
    sh.send_until("q", PROMPT);
    let screen = sh.screen();
    assert_eq!(screen.matches("Stopped").count(), 1, "{screen}");
}

#[test]
fn under_a_wrapper_script_the_child_gets_the_terminal_and_ctrl_z_stops_the_script_too() {
    let ws = Workspace::new();
    let mut sh = PtyShell::bash(&ws.path);
    // The wrapper's bash stays in the job's process group, waiting.
    sh.send(&format!(
        "bash -c '{bin} -C {} run -- {bin} probe --echo-stdin; echo wrapper done'\n",
        ws.path.display(),
        bin = bin()
    ));
    sh.expect("tty_foreground yes");
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
    sh.expect("wrapper done");
    sh.expect(PROMPT);
    assert!(!ws.lock_held());
}

#[test]
fn with_stdin_redirected_ctrl_z_still_stops_the_job() {
    let ws = Workspace::new();
    let mut sh = PtyShell::bash(&ws.path);
    // The terminal is found on stdout; job control applies as with a terminal stdin.
    sh.send(&format!(
        "{bin} -C {} run -- {bin} probe --exit-on INT < /dev/null\n",
        ws.path.display(),
        bin = bin()
    ));
    sh.expect("ready");
    sh.send("\x1a");
    sh.expect("Stopped");
    sh.expect(PROMPT);
    sh.send("fg\n");
    sh.expect("signal SIGCONT");
    sh.send("\x03");
    sh.expect("cleanup done");
    sh.expect(PROMPT);
    assert_eq!(sh.status_of_last(), 130);
    assert!(!ws.lock_held());
}

#[test]
fn piped_into_cat_a_command_reading_the_terminal_gets_it() {
    // `X | cat -n` where X reads the terminal: X starts in the background of the
    // terminal (the job keeps it, for a pager); its first read stops it (TTIN), and it
    // gets the terminal and goes on, as with X run directly in the job's group.
    let ws = Workspace::new();
    let mut sh = PtyShell::bash(&ws.path);
    sh.send(&format!(
        "{bin} -C {} run -- {bin} probe --echo-stdin | cat -n\n",
        ws.path.display(),
        bin = bin()
    ));
    sh.expect("ready");
    sh.send("hello\n");
    sh.expect("got hello");
    assert!(!sh.screen().contains("Stopped"), "{}", sh.screen());
    // With the terminal, Ctrl-Z reaches the command, and stops the whole job; `fg`
    // continues it, and its next read gets the terminal again.
    sh.send("\x1a");
    sh.expect("Stopped");
    sh.expect(PROMPT);
    sh.send("fg\n");
    sh.send_until("again\n", "got again");
    sh.send("\x04");
    sh.expect("eof");
    sh.expect(PROMPT);
    assert_eq!(sh.status_of_last(), 0);
    assert!(!ws.lock_held());
}
