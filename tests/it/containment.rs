//! Every process the loop starts ends with it (`stop.containment`): escapees of every
//! kind (another process group, a new session, a double-forked daemon, a TERM
//! ignorer), a fan-out of 200 in new sessions, with and without a cgroup; bystanders
//! started the same way outside the loop are never touched; limits where the
//! controller exists, the warning and 125 otherwise; accounting against a child of
//! known CPU use; Ctrl-Z stops the whole job. The command starts alike by `clone3` and
//! by std's spawn (the fallback where `clone3` is refused).

use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::harness::*;

/// The cgroup v2 directory this test process is in, when a cgroup can be made below it
/// (root, or a delegated subtree); else why not. Outside CI a missing one skips the
/// cgroup tests; in CI it fails them.
fn writable_cgroup() -> Result<PathBuf, String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
    let mount = mountinfo
        .lines()
        .find_map(|l| {
            let (before, after) = l.split_once(" - ")?;
            (after.starts_with("cgroup2 ")).then(|| before.split(' ').nth(4).map(PathBuf::from))?
        })
        .ok_or("no cgroup v2 is mounted")?;
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        })
        .ok_or("not in a cgroup v2")?;
    let dir = mount.join(own.trim_start_matches('/'));
    // One name per call: the tests of this process run side by side.
    static PROBES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = dir.join(format!("ralph-supervise-test-{}-{n}", std::process::id()));
    std::fs::create_dir(&probe).map_err(|e| format!("{} is not writable: {e}", dir.display()))?;
    let _ = std::fs::remove_dir(&probe);
    Ok(dir)
}

fn cgroup_or_skip(test: &str) -> Option<PathBuf> {
    match writable_cgroup() {
        Ok(dir) => Some(dir),
        Err(why) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: CI must run the cgroup tests as root with cgroup v2: {why}"
            );
            println!("skipping {test}: no writable cgroup v2 ({why})");
            None
        }
    }
}

/// The escapees, each writing its pid to `DIR/<name>` once it runs: `group` (a process
/// group of its own, by bash's job control), `session` (setsid), `daemon` (double fork:
/// its parent exits at once) and `ignorer` (a new session, TERM ignored: only KILL
/// ends it). `$0` is DIR.
const ESCAPEES: &str = r#"
bash -c 'set -m; sh -c "echo \$\$ > \"\$0/g.tmp\"; mv \"\$0/g.tmp\" \"\$0/group\"; exec sleep 600" "$0" & exit 0' "$0"
setsid sh -c 'echo $$ > "$0/s.tmp"; mv "$0/s.tmp" "$0/session"; exec sleep 600' "$0" &
(sh -c 'echo $$ > "$0/d.tmp"; mv "$0/d.tmp" "$0/daemon"; exec sleep 600' "$0" &) &
setsid sh -c 'trap "" TERM; echo $$ > "$0/i.tmp"; mv "$0/i.tmp" "$0/ignorer"; exec sleep 600' "$0" &
for f in group session daemon ignorer; do
  while [ ! -e "$0/$f" ]; do sleep 0.01; done
done
echo ready
"#;

const NAMES: [&str; 4] = ["group", "session", "daemon", "ignorer"];

fn pids_in(dir: &Path) -> Vec<(&'static str, i32)> {
    NAMES
        .iter()
        .map(|n| {
            let text = std::fs::read_to_string(dir.join(n)).unwrap();
            (*n, text.trim().parse().unwrap())
        })
        .collect()
}

/// Kills what a test left (only on failure is anything left).
struct Reaper(Vec<i32>);
impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
    }
}

/// The same escapees started outside any loop: bystanders.
fn bystanders(ws: &Workspace) -> (Vec<(&'static str, i32)>, Reaper) {
    let dir = ws.path.join("bystanders");
    std::fs::create_dir_all(&dir).unwrap();
    // Not `output()`: the bystanders keep a copy of any pipe given to them.
    let status = Command::new("sh")
        .args(["-c", ESCAPEES])
        .arg(&dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let pids = pids_in(&dir);
    let reaper = Reaper(pids.iter().map(|(_, p)| *p).collect());
    (pids, reaper)
}

fn history(ws: &Workspace) -> Vec<serde_json::Value> {
    let out = ws.run(&["history", "--json"]);
    assert_eq!(out.code(), 0, "{out:?}");
    serde_json::from_str(&out.stdout).unwrap()
}

/// Runs the escapees under the supervisor (`containment`), which must end every one of
/// them, and no bystander, before it returns.
fn escapees_end_with_the_loop(containment: &str) {
    let ws = Workspace::new();
    let (bystanders, _keep) = bystanders(&ws);
    let dir = ws.path.join("pids");
    std::fs::create_dir_all(&dir).unwrap();
    let mut sup = Proc::spawn(ws.cmd(&[
        "run",
        "--containment",
        containment,
        "--stop-grace",
        "1s",
        "--",
        "sh",
        "-c",
        &format!("{ESCAPEES}\nwhile [ ! -e \"$0/go\" ]; do sleep 0.01; done"),
        dir.to_str().unwrap(),
    ]));
    sup.expect_line("ready");
    let escapees = pids_in(&dir);
    let _reaper = Reaper(escapees.iter().map(|(_, p)| *p).collect());
    for (name, pid) in &escapees {
        assert!(alive(*pid), "{name} runs while the loop does");
    }
    // The child exits now, leaving them.
    std::fs::write(dir.join("go"), "").unwrap();
    let out = sup.finish();
    assert_eq!(out.code(), 0, "{out:?}");
    // `run` returned: nothing of the loop is left, not even the TERM ignorer.
    for (name, pid) in &escapees {
        assert!(!alive(*pid), "the {name} escapee {pid} outlived the loop");
    }
    for (name, pid) in &bystanders {
        assert!(alive(*pid), "the {name} bystander {pid} was touched");
    }
    let record = history(&ws).pop().unwrap();
    assert_eq!(record["containment"], containment, "{record}");
}

#[test]
fn escapees_of_every_kind_end_with_the_loop_in_its_process_tree() {
    escapees_end_with_the_loop("tree");
}

#[test]
fn escapees_of_every_kind_end_with_the_loop_in_its_cgroup() {
    if cgroup_or_skip("escapees in a cgroup").is_some() {
        escapees_end_with_the_loop("cgroup");
    }
}

/// A stop (TERM to the supervisor) while the escapees run ends them all, the TERM
/// ignorer by KILL after the grace.
fn a_stop_ends_every_escapee(containment: &str) {
    let ws = Workspace::new();
    let (bystanders, _keep) = bystanders(&ws);
    let dir = ws.path.join("pids");
    std::fs::create_dir_all(&dir).unwrap();
    let script = format!("{ESCAPEES}\nexec sleep 600");
    let mut sup = Proc::spawn(ws.cmd(&[
        "run",
        "--containment",
        containment,
        "--stop-grace",
        "1s",
        "--",
        "sh",
        "-c",
        &script,
        dir.to_str().unwrap(),
    ]));
    sup.expect_line("ready");
    let escapees = pids_in(&dir);
    let _reaper = Reaper(escapees.iter().map(|(_, p)| *p).collect());
    sup.signal(Signal::SIGTERM);
    let out = sup.finish();
    assert_eq!(out.code(), 128 + libc::SIGTERM, "{out:?}");
    for (name, pid) in &escapees {
        assert!(!alive(*pid), "the {name} escapee {pid} outlived the stop");
    }
    for (name, pid) in &bystanders {
        assert!(alive(*pid), "the {name} bystander {pid} was touched");
    }
    assert!(
        out.stderr.contains("within the stop grace: KILL")
            || out.stderr.contains("within its stop grace: KILL"),
        "the ignorer needed KILL: {out:?}"
    );
}

#[test]
fn a_stop_ends_every_escapee_in_the_tree() {
    a_stop_ends_every_escapee("tree");
}

#[test]
fn a_stop_ends_every_escapee_in_the_cgroup() {
    if cgroup_or_skip("a stop in a cgroup").is_some() {
        a_stop_ends_every_escapee("cgroup");
    }
}

/// 200 processes in sessions of their own, left behind by a child that exits at once.
fn fan_out_of_200_ends(containment: &str) {
    let ws = Workspace::new();
    let list = ws.path.join("fanned");
    let script = r#"
i=0
while [ $i -lt 200 ]; do setsid sleep 600 & echo $! >> "$0"; i=$((i+1)); done
echo ready
"#;
    let mut sup = Proc::spawn(ws.cmd(&[
        "run",
        "--containment",
        containment,
        "--",
        "sh",
        "-c",
        script,
        list.to_str().unwrap(),
    ]));
    sup.expect_line("ready");
    let pids: Vec<i32> = std::fs::read_to_string(&list)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 200);
    let _reaper = Reaper(pids.clone());
    let out = sup.finish();
    assert_eq!(out.code(), 0, "{out:?}");
    let left: Vec<&i32> = pids.iter().filter(|p| alive(**p)).collect();
    assert!(
        left.is_empty(),
        "{} of 200 outlived the loop: {left:?}",
        left.len()
    );
}

#[test]
fn a_fan_out_of_200_in_new_sessions_ends_with_the_loop_in_the_tree() {
    fan_out_of_200_ends("tree");
}

#[test]
fn a_fan_out_of_200_in_new_sessions_ends_with_the_loop_in_the_cgroup() {
    if cgroup_or_skip("a fan-out in a cgroup").is_some() {
        fan_out_of_200_ends("cgroup");
    }
}

/// `status` names the mode (and the cgroup) while the loop runs; with a cgroup, the
/// child is in it from its first instruction, and the cgroup is gone afterwards.
#[test]
fn status_and_history_say_which_containment_and_the_cgroup_goes_away() {
    let Some(own) = cgroup_or_skip("cgroup status") else {
        return;
    };
    let ws = Workspace::new();
    let p = ws.start_probe(&["--containment", "auto"], &["--exit-on", "TERM"]);
    let child = p.value("pid");
    let meta = ws.metadata();
    assert_eq!(meta["containment"], "cgroup", "{meta}");
    let cgroup = PathBuf::from(meta["cgroup"].as_str().unwrap());
    assert!(cgroup.starts_with(&own), "below ours: {}", cgroup.display());
    let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap();
    assert!(procs.lines().any(|l| l == child), "{procs}");
    // The probe reported its own cgroup before printing ready: it ran there.
    let mine = std::fs::read_to_string(format!("/proc/{child}/cgroup")).unwrap();
    assert!(
        mine.contains(cgroup.file_name().unwrap().to_str().unwrap()),
        "{mine}"
    );
    let status = ws.run(&["status"]);
    assert!(status.stdout.contains("contained  cgroup"), "{status:?}");
    assert!(status.stdout.contains("usage      CPU"), "{status:?}");
    let json: serde_json::Value =
        serde_json::from_str(&ws.run(&["status", "--json"]).stdout).unwrap();
    assert_eq!(json["containment"], "cgroup");
    assert_eq!(json["usage"]["processes"], 1, "{json}");
    p.signal(Signal::SIGTERM);
    let out = p.finish();
    assert_eq!(out.code(), 128 + libc::SIGTERM, "{out:?}");
    assert!(!cgroup.exists(), "the loop's cgroup is removed");
}

/// `status` of a running loop in its cgroup shows its memory: `memory.current` with the
/// memory controller, else the resident memory of the cgroup's processes.
#[test]
fn status_shows_the_memory_of_a_loop_in_its_cgroup() {
    if cgroup_or_skip("memory in cgroup status").is_none() {
        return;
    }
    let ws = Workspace::new();
    let p = ws.start_probe(&["--containment", "cgroup"], &["--exit-on", "TERM"]);
    let child = p.value("pid");
    let cgroup = PathBuf::from(ws.metadata()["cgroup"].as_str().unwrap().to_string());
    if cgroup.join("memory.current").exists() {
        println!(
            "memory in cgroup status: the memory controller is on for {}, so memory.current \
             is shown (the resident-memory fallback is not exercised here)",
            cgroup.display()
        );
    }
    let json: serde_json::Value =
        serde_json::from_str(&ws.run(&["status", "--json"]).stdout).unwrap();
    assert_eq!(json["containment"], "cgroup", "{json}");
    assert_eq!(json["usage"]["processes"], 1, "{json}");
    let memory = json["usage"]["memory_bytes"].as_u64();
    // The probe's resident set: a few MiB.
    assert!(
        memory.is_some_and(|m| (100_000..=2_000_000_000).contains(&m)),
        "child {child}: {json}"
    );
    // Moved into a cgroup below the loop's (as a nested service manager would): still
    // counted, and its memory with it.
    let below = cgroup.join("below");
    std::fs::create_dir(&below).unwrap();
    std::fs::write(below.join("cgroup.procs"), &child).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&ws.run(&["status", "--json"]).stdout).unwrap();
    assert_eq!(json["usage"]["processes"], 1, "{json}");
    let memory = json["usage"]["memory_bytes"].as_u64();
    assert!(
        memory.is_some_and(|m| (100_000..=2_000_000_000).contains(&m)),
        "child {child} below: {json}"
    );
    p.signal(Signal::SIGTERM);
    assert_eq!(p.finish().code(), 128 + libc::SIGTERM);
    wait_until("the loop's cgroup to be removed", LIMIT, || {
        !cgroup.exists()
    });
}

/// `--containment tree` as root: no cgroup is made, the tree mode is recorded.
#[test]
fn containment_tree_makes_no_cgroup_even_as_root() {
    let ws = Workspace::new();
    let p = ws.start_probe(&["--containment", "tree"], &["--exit-on", "TERM"]);
    let meta = ws.metadata();
    assert_eq!(meta["containment"], "tree", "{meta}");
    assert!(meta.get("cgroup").is_none(), "{meta}");
    let child = p.value("pid");
    let mine = std::fs::read_to_string(format!("/proc/{child}/cgroup")).unwrap_or_default();
    assert!(!mine.contains("ralph-supervise-"), "{mine}");
    let status = ws.run(&["status", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(json["containment"], "tree");
    assert!(json["usage"]["processes"].as_u64().unwrap() >= 1, "{json}");
    p.signal(Signal::SIGTERM);
    p.finish();
    assert_eq!(history(&ws).pop().unwrap()["containment"], "tree");
}

/// With `orphans = "leave"` what the child leaves runs on, in its cgroup, which stays;
/// a later run removes it once it is empty (and a SIGKILLed supervisor's likewise).
#[test]
fn a_cgroup_left_behind_is_removed_by_a_later_run_once_empty() {
    let Some(own) = cgroup_or_skip("stale cgroups") else {
        return;
    };
    let ws = Workspace::new();
    ws.write_policy("[stop]\norphans = \"leave\"\n");
    let pidfile = ws.path.join("left.pid");
    let script = "setsid sh -c 'echo $$ > \"$0.tmp\"; mv \"$0.tmp\" \"$0\"; exec sleep 600' \"$0\" </dev/null >/dev/null 2>&1 & while [ ! -e \"$0\" ]; do sleep 0.01; done";
    let out = ws.run(&["run", "--", "sh", "-c", script, pidfile.to_str().unwrap()]);
    assert_eq!(out.code(), 0, "{out:?}");
    let left: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _reaper = Reaper(vec![left]);
    assert!(alive(left), "left running");
    let cgroup = std::fs::read_to_string(format!("/proc/{left}/cgroup")).unwrap();
    let name = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .and_then(|p| p.rsplit('/').next())
        .unwrap()
        .to_string();
    assert!(name.starts_with("ralph-supervise-"), "{cgroup}");
    assert!(
        out.stderr.contains("processes left running in cgroup"),
        "{out:?}"
    );
    let dir = own.join(&name);
    assert!(dir.exists());
    // While something runs in it, a later run leaves it alone.
    assert_eq!(ws.run(&["run", "--", "true"]).code(), 0);
    assert!(dir.exists(), "a populated cgroup is kept");
    kill(Pid::from_raw(left), Signal::SIGKILL).unwrap();
    wait_until("the leftover to end", LIMIT, || !alive(left));
    assert_eq!(ws.run(&["run", "--", "true"]).code(), 0);
    assert!(!dir.exists(), "an empty stale cgroup is removed");

    // A SIGKILLed supervisor's cgroup: left with the child in it, removed later.
    let mut sup = ws.start_probe(&[], &[]);
    let child = ws.child_pid();
    let cgroup = PathBuf::from(ws.metadata()["cgroup"].as_str().unwrap().to_string());
    sup.signal(Signal::SIGKILL);
    sup.wait(LIMIT);
    let _reaper = Reaper(vec![child]);
    // Populated, it stays (no supervisor removes a cgroup with a process in it)...
    assert!(alive(child) && cgroup.exists());
    kill(Pid::from_raw(child), Signal::SIGKILL).unwrap();
    wait_until("the orphaned child to end", LIMIT, || !alive(child));
    // ...empty, the next ralph-supervise to start below the same cgroup removes it (a
    // test running alongside may be that one).
    assert_eq!(ws.run(&["run", "--", "true"]).code(), 0);
    assert!(
        !cgroup.exists(),
        "the SIGKILLed supervisor's cgroup is removed"
    );
}

/// The controllers our cgroup offers its children.
fn offered(own: &Path) -> String {
    std::fs::read_to_string(own.join("cgroup.controllers")).unwrap_or_default()
}

#[test]
fn limits_warn_or_fail_where_the_controller_is_missing() {
    let ws = Workspace::new();
    let marker = ws.path.join("ran");
    let touch = format!("touch {}", marker.display());
    // Tree mode has no cgroup: the limit cannot apply, whatever the host has.
    ws.write_policy("[limits]\nmemory_max = \"512M\"\n");
    let out = ws.run(&["run", "--containment", "tree", "--", "sh", "-c", &touch]);
    assert_eq!(out.code(), 0, "{out:?}");
    let warnings: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("limits not applied"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning line: {out:?}");
    assert!(warnings[0].contains("memory controller"), "{out:?}");
    assert!(marker.exists());
    std::fs::remove_file(&marker).unwrap();
    ws.write_policy("[limits]\nmemory_max = \"512M\"\nrequired = true\n");
    let out = ws.run(&["run", "--containment", "tree", "--", "sh", "-c", &touch]);
    assert_eq!(out.code(), 125, "{out:?}");
    assert!(out.stderr.contains("limits.required"), "{out:?}");
    assert!(!marker.exists(), "the command never ran");
    assert!(!ws.lock_held());
    // In a cgroup without a pids controller (a hybrid host's cgroup v2): the same; and
    // nothing is written to the cgroup the supervisor started in.
    if let Some(own) = cgroup_or_skip("limits in a cgroup")
        && !offered(&own).split_whitespace().any(|c| c == "pids")
    {
        let control = || std::fs::read_to_string(own.join("cgroup.subtree_control")).unwrap();
        let before = control();
        ws.write_policy("[limits]\npids_max = 10\nrequired = true\n");
        let out = ws.run(&["run", "--", "sh", "-c", &touch]);
        assert_eq!(out.code(), 125, "{out:?}");
        assert!(out.stderr.contains("pids controller"), "{out:?}");
        assert!(!marker.exists(), "the command never ran");
        ws.write_policy("[limits]\npids_max = 10\nmemory_max = \"1G\"\n");
        let out = ws.run(&["run", "--", "sh", "-c", &touch]);
        assert_eq!(out.code(), 0, "{out:?}");
        assert!(
            out.stderr
                .contains("no memory or pids controller for the loop"),
            "{out:?}"
        );
        assert!(marker.exists());
        assert_eq!(control(), before, "nothing written above the loop's cgroup");
    }
}

#[test]
fn a_child_over_pids_max_cannot_fork() {
    let Some(own) = cgroup_or_skip("pids_max") else {
        return;
    };
    if !offered(&own).split_whitespace().any(|c| c == "pids") {
        // Hybrid hosts keep pids on cgroup v1: nothing to enforce it with here.
        println!(
            "skipping pids_max: the pids controller is not available in cgroup v2 at {} (offered: {:?})",
            own.display(),
            offered(&own).trim()
        );
        return;
    }
    let ws = Workspace::new();
    // The probe is one process (its threads count too: it has one more, the signal
    // thread); of the sleeps it tries to start, the ones beyond the limit fail.
    ws.write_policy("[limits]\npids_max = 5\nrequired = true\n");
    let out = ws.run(&["run", "--", bin(), "probe", "--spawn", "10", "--exit", "0"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(out.stdout.contains("spawn failed"), "{out:?}");
    let spawned: u32 = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("spawned "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(spawned < 5, "at most the limit: {out:?}");
}

/// The CPU time a run used, from the history, against a child that burns a known
/// amount: directly, and in a grandchild in a new session (reaped by the subreaper).
fn accounting_is_plausible(containment: &str) {
    let ws = Workspace::new();
    let burn = format!("{} probe --burn-ms 500 --exit 0 >/dev/null", bin());
    let script = format!("{burn}; setsid sh -c '{burn}' & wait");
    let out = ws.run(&[
        "run",
        "--containment",
        containment,
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(out.code(), 0, "{out:?}");
    let r = history(&ws).pop().unwrap();
    let cpu = r["cpu_user_ms"].as_u64().unwrap() + r["cpu_system_ms"].as_u64().unwrap();
    assert!(
        (900..=4000).contains(&cpu),
        "two burns of 500 ms: {cpu} ms; {r}"
    );
    let peak = r["memory_peak_bytes"].as_u64().unwrap();
    assert!((100_000..=2_000_000_000).contains(&peak), "{peak}; {r}");
    let text = ws.run(&["history"]).stdout;
    assert!(text.contains("PEAK MEM") && text.contains("MiB"), "{text}");
}

#[test]
fn accounting_is_plausible_in_the_tree() {
    accounting_is_plausible("tree");
}

#[test]
fn accounting_is_plausible_in_the_cgroup() {
    if cgroup_or_skip("accounting in a cgroup").is_some() {
        accounting_is_plausible("cgroup");
    }
}

/// State letter of `pid` (`T` stopped, `S` sleeping, ...).
fn state(pid: i32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rfind(')')
        .and_then(|i| stat[i + 1..].trim_start().chars().next())
        .unwrap_or('?')
}

/// Ctrl-Z stops the escapee in a session of its own too (cgroup: frozen), `fg`
/// continues it.
fn ctrl_z_stops_the_whole_job(containment: &str, cgroup: Option<&Path>) {
    let ws = Workspace::new();
    let pidfile = ws.path.join("escapee.pid");
    let mut sh = PtyShell::bash(&ws.path);
    let script = format!(
        "setsid sh -c 'echo $$ > {p}.tmp; mv {p}.tmp {p}; exec sleep 600' &\nwhile [ ! -e {p} ]; do sleep 0.01; done\nexec {bin} probe --echo-stdin\n",
        p = pidfile.display(),
        bin = bin()
    );
    let job = ws.path.join("job.sh");
    std::fs::write(&job, script).unwrap();
    sh.send(&format!(
        "{} -C {} run --containment {containment} -- sh {}\n",
        bin(),
        ws.path.display(),
        job.display()
    ));
    sh.expect("ready");
    let escapee: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _reaper = Reaper(vec![escapee]);
    sh.send("\x1a");
    sh.expect("Stopped");
    sh.expect(PROMPT);
    match cgroup {
        Some(_) => {
            let path = ws.metadata()["cgroup"].as_str().unwrap().to_string();
            let events =
                || std::fs::read_to_string(Path::new(&path).join("cgroup.events")).unwrap();
            wait_until("the cgroup to freeze", LIMIT, || {
                events().contains("frozen 1")
            });
        }
        None => wait_until("the escapee to stop", LIMIT, || state(escapee) == 'T'),
    }
    sh.send("fg\n");
    sh.expect("signal SIGCONT");
    match cgroup {
        Some(_) => {
            let path = ws.metadata()["cgroup"].as_str().unwrap().to_string();
            let events =
                || std::fs::read_to_string(Path::new(&path).join("cgroup.events")).unwrap();
            wait_until("the cgroup to thaw", LIMIT, || {
                events().contains("frozen 0")
            });
        }
        None => wait_until("the escapee to go on", LIMIT, || state(escapee) == 'S'),
    }
    sh.send("\x04");
    sh.expect("eof");
    sh.expect(PROMPT);
    assert_eq!(sh.status_of_last(), 0);
    wait_until("the escapee to end with the loop", LIMIT, || {
        !alive(escapee)
    });
}

#[test]
fn ctrl_z_stops_descendants_in_other_sessions_in_the_tree() {
    ctrl_z_stops_the_whole_job("tree", None);
}

#[test]
fn ctrl_z_freezes_the_cgroup() {
    if let Some(own) = cgroup_or_skip("Ctrl-Z in a cgroup") {
        ctrl_z_stops_the_whole_job("cgroup", Some(&own));
    }
}

/// Nothing of the loop is left when `run` returns, however quickly it had to go: the
/// time from the child's exit to "nothing left" is in BENCHMARKS.md, never asserted.
#[test]
fn run_returns_only_when_nothing_is_left() {
    let ws = Workspace::new();
    let list = ws.path.join("fanned");
    let script = "i=0; while [ $i -lt 20 ]; do setsid sh -c 'trap \"\" TERM; exec sleep 600' & echo $! >> \"$0\"; i=$((i+1)); done";
    let out = ws.run(&[
        "run",
        "--stop-grace",
        "200ms",
        "--",
        "sh",
        "-c",
        script,
        list.to_str().unwrap(),
    ]);
    assert_eq!(out.code(), 0, "{out:?}");
    let pids: Vec<i32> = std::fs::read_to_string(&list)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let _reaper = Reaper(pids.clone());
    assert_eq!(pids.len(), 20);
    assert!(pids.iter().all(|p| !alive(*p)), "TERM ignorers need KILL");
}

/// An unprivileged user where the cgroup is not delegated: `auto` falls back to the
/// process tree with one line, `cgroup` refuses with 125 before anything runs.
#[test]
fn an_unwritable_cgroup_falls_back_to_the_tree_or_refuses() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipping: needs root to run as another user");
        return;
    }
    let ws = Workspace::new();
    std::fs::set_permissions(
        &ws.path,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let marker = ws.path.join("ran");
    let as_nobody = |containment: &str| {
        let marker = marker.to_str().unwrap();
        let args = ["run", "--containment", containment, "--", "touch", marker];
        Proc::spawn(ws.nobody_cmd(&args)).finish()
    };
    let out = as_nobody("auto");
    assert_eq!(out.code(), 0, "{out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {out:?}");
    assert!(
        lines[0].contains("containing its process tree instead"),
        "{out:?}"
    );
    assert!(marker.exists());
    std::fs::remove_file(&marker).unwrap();
    let out = as_nobody("cgroup");
    assert_eq!(out.code(), 125, "{out:?}");
    assert!(out.stderr.contains("--containment tree"), "{out:?}");
    assert!(!marker.exists(), "the command never ran");
}

/// A loop in a cgroup whose supervisor was SIGKILLed: `stop` ends every process of the
/// loop through the cgroup (a TERM to each member), and `stop --kill` through
/// `cgroup.kill` (and after the grace), the escapees in sessions of their own included; a bystander started
/// the same way outside the loop is never touched.
#[test]
fn stop_ends_an_orphaned_loop_through_its_cgroup() {
    if cgroup_or_skip("stop of an orphaned cgroup").is_none() {
        return;
    }
    let ws = Workspace::new();
    // The grace `stop` gives an orphaned loop before KILL: the workspace's policy.
    ws.write_policy("[stop]\ngrace = \"1s\"\n");
    let (bystanders, _keep) = bystanders(&ws);
    for (how, stop_args) in [
        ("TERM", &["stop", "--timeout", "20s"][..]),
        ("KILL", &["stop", "--kill", "--timeout", "20s"][..]),
    ] {
        let dir = ws.path.join(format!("pids-{how}"));
        std::fs::create_dir_all(&dir).unwrap();
        let script = format!("{ESCAPEES}\nexec sleep 600");
        let mut sup = Proc::spawn(ws.cmd(&[
            "run",
            "--containment",
            "cgroup",
            "--",
            "sh",
            "-c",
            &script,
            dir.to_str().unwrap(),
        ]));
        sup.expect_line("ready");
        let escapees = pids_in(&dir);
        let child = ws.child_pid();
        let _reaper = Reaper(escapees.iter().map(|(_, p)| *p).chain([child]).collect());
        sup.signal(Signal::SIGKILL);
        sup.wait(LIMIT);
        let out = ws.run(stop_args);
        for (name, pid) in &escapees {
            if how == "TERM" && *name == "ignorer" {
                // It ignores TERM, holds no lock of its own: `stop --kill` ends it below.
                continue;
            }
            wait_until(&format!("the {name} escapee to end ({how})"), LIMIT, || {
                !alive(*pid)
            });
        }
        assert!(
            !alive(child),
            "the child outlived the stop ({how}): {out:?}"
        );
        if how == "KILL" {
            assert_eq!(out.code(), 0, "{out:?}");
        }
    }
    for (name, pid) in &bystanders {
        assert!(alive(*pid), "the {name} bystander {pid} was touched");
    }
}

/// `ralph-supervise -C <ws> run --containment MODE -- command...`, which starts the
/// command by `clone3` (`std_spawn` false) or, with `clone3` refused, by std's spawn.
fn run_cmd(ws: &Workspace, mode: &str, std_spawn: bool, command: &[&str]) -> Command {
    let mut run = vec!["run", "--containment", mode, "--"];
    run.extend_from_slice(command);
    let ws_path = ws.path.to_str().unwrap();
    let mut args = vec!["probe", "--exec-without-clone3", "--", bin(), "-C", ws_path];
    args.extend(run.iter().copied());
    ws.cmd(if std_spawn { &args } else { &run })
}

/// The command is found, run and refused alike whether it starts by `clone3`
/// (`sys/spawn.rs`: into its cgroup, or on x86-64 in the tree mode too) or by std's
/// spawn, the fallback where `clone3` fails (here made to fail with ENOSYS, as under a
/// seccomp profile that predates it: `probe --exec-without-clone3`), in either
/// containment (the fallback's cgroup by a write to `cgroup.procs`): the child's `PATH`
/// (here from `[run.env]`) is searched in order, a file without `#!` runs under
/// `/bin/sh`, one found but not executable is 126 even when a later entry has
/// nothing, none is 127; the child gets the supervisor's environment with the
/// policy's and the supervisor's own changes, the locked descriptor, and the
/// workspace as its directory.
#[test]
fn the_command_starts_alike_in_its_cgroup_and_by_std_spawn() {
    use std::os::unix::fs::PermissionsExt;
    let in_cgroup = cgroup_or_skip("the command started in its cgroup").is_some();
    let ws = Workspace::new();
    let dir = |name: &str| {
        let d = ws.path.join("bin").join(name);
        std::fs::create_dir_all(&d).unwrap();
        d.to_str().unwrap().to_string()
    };
    let (empty, scripts, denied) = (dir("empty"), dir("scripts"), dir("denied"));
    let tool = format!("{scripts}/tool");
    std::fs::write(
        &tool,
        "echo \"tool $1 cwd=$(pwd) foo=$FOO token=${RALPH_FENCING_TOKEN-unset}\"\n\
         test -e /proc/self/fd/$RALPH_LOCK_FD && echo lock-fd-open\n\
         while read -r l; do case $l in 0::*) echo \"$l\";; esac; done </proc/$$/cgroup\n",
    )
    .unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(format!("{denied}/tool"), "#!/bin/sh\necho ran\n").unwrap();
    let modes: &[&str] = if in_cgroup {
        &["cgroup", "tree"]
    } else {
        &["tree"]
    };
    let mut seen = Vec::new();
    for path in [
        format!("{empty}:{scripts}"),
        format!("{denied}:{empty}"),
        empty.clone(),
    ] {
        ws.write_policy(&format!("[run.env]\nPATH = \"{path}\"\nFOO = \"bar\"\n"));
        let mut outcomes = Vec::new();
        for (mode, std_spawn) in modes.iter().flat_map(|m| [(m, false), (m, true)]) {
            let mut cmd = run_cmd(&ws, mode, std_spawn, &["tool", "x"]);
            cmd.env("RALPH_FENCING_TOKEN", "7");
            let out = Proc::spawn(cmd).finish();
            let (cgroup, rest): (Vec<&str>, Vec<&str>) =
                out.stdout.lines().partition(|l| l.starts_with("0::"));
            if out.code() == 0 {
                let named = cgroup
                    .first()
                    .is_some_and(|l| l.contains("/ralph-supervise-"));
                assert_eq!(named, *mode == "cgroup", "{mode}: {out:?}");
            }
            outcomes.push((out.code(), rest.join("\n"), out.stderr.clone()));
        }
        assert!(outcomes.windows(2).all(|w| w[0] == w[1]), "{outcomes:#?}");
        seen.push(outcomes.swap_remove(0));
    }
    let cwd = ws.path.canonicalize().unwrap();
    assert_eq!(seen[0].0, 0, "{seen:?}");
    assert_eq!(
        seen[0].1,
        format!(
            "tool x cwd={} foo=bar token=unset\nlock-fd-open",
            cwd.display()
        )
    );
    assert_eq!(seen[1].0, 126, "{seen:?}");
    assert_eq!(
        seen[1].2.trim(),
        "ralph-supervise: tool: cannot execute: Permission denied (os error 13); check that it is an executable file"
    );
    assert_eq!(seen[2].0, 127, "{seen:?}");
    assert_eq!(
        seen[2].2.trim(),
        "ralph-supervise: tool: command not found; check the name and PATH"
    );
}

/// A large environment (1.2 MB in `[run.env]`) and argument list (20,000 arguments)
/// reach the command whole, and one past the kernel's limit (a 200 KB variable: E2BIG)
/// is one line and 125, alike by `clone3` and by std's spawn, in the tree and the cgroup.
#[test]
fn large_environments_and_argument_lists_start_alike_or_fail_alike() {
    let in_cgroup = cgroup_or_skip("large environments in the cgroup").is_some();
    let modes: &[&str] = if in_cgroup {
        &["cgroup", "tree"]
    } else {
        &["tree"]
    };
    let ws = Workspace::new();
    let value = "v".repeat(100_000);
    let mut policy = String::from("[run.env]\n");
    for i in 0..12 {
        policy.push_str(&format!("BIG{i} = \"{value}\"\n"));
    }
    ws.write_policy(&policy);
    let args: Vec<String> = (1..=20_000).map(|n| format!("a{n}")).collect();
    let script = "env | grep -c '^BIG'; printf %s \"$BIG11\" | wc -c; echo $#; eval echo \\${$#}";
    let mut command = vec!["sh", "-c", script, "sh"];
    command.extend(args.iter().map(String::as_str));
    for mode in modes {
        for std_spawn in [false, true] {
            let out = Proc::spawn(run_cmd(&ws, mode, std_spawn, &command)).finish();
            assert_eq!(out.code(), 0, "{mode} {std_spawn}: {}", out.stderr);
            let lines: Vec<&str> = out.stdout.lines().collect();
            assert_eq!(
                lines,
                ["12", "100000", "20000", "a20000"],
                "{mode} {std_spawn}"
            );
        }
    }
    // One string longer than the kernel takes (MAX_ARG_STRLEN, 128 KiB).
    ws.write_policy(&format!("[run.env]\nHUGE = \"{}\"\n", "v".repeat(200_000)));
    for mode in modes {
        for std_spawn in [false, true] {
            let out = Proc::spawn(run_cmd(&ws, mode, std_spawn, &["true"])).finish();
            assert_eq!(out.code(), 125, "{mode} {std_spawn}: {out:?}");
            assert_eq!(
                out.stderr.trim(),
                "ralph-supervise: cannot start true: Argument list too long (os error 7)",
                "{mode} {std_spawn}"
            );
        }
    }
}
