//! Fleet mode (`--features fleet`) against a real etcd: two "hosts" are two clones of
//! one repository (same `origin`, same branch, so the same default key), each with its
//! own local lock; etcd is started by the test on loopback ports ([`etcd`]).

mod etcd;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::harness::{LIMIT, Proc, Workspace, alive, bin, children_of, wait_until};
use etcd::Cluster;

/// A clone of "the" repository: origin `url`, branch main.
fn host(url: &str) -> Workspace {
    let ws = Workspace::git();
    ws.git_cmd(&["remote", "add", "origin", url]);
    ws
}

/// The two hosts of most tests: two URL forms of one repository, one key.
fn two_hosts() -> (Workspace, Workspace) {
    (
        host("git@git.example.com:acme/api.git"),
        host("https://ci:secret@git.example.com/acme/api"),
    )
}

/// One etcd member and two "hosts" using it; `None` without etcd (the reason printed, or
/// a failure under CI: see `etcd::available`).
fn one_member_two_hosts() -> Option<(Cluster, String, Workspace, Workspace)> {
    if !etcd::available() {
        return None;
    }
    let cluster = Cluster::start(1);
    let endpoints = cluster.endpoints();
    let (a, b) = two_hosts();
    Some((cluster, endpoints, a, b))
}

const KEY: &str = "git.example.com/acme/api/main";

fn fleet_args<'a>(endpoints: &'a str, ttl: &'a str) -> Vec<&'a str> {
    vec!["--fleet-endpoints", endpoints, "--fleet-ttl", ttl]
}

/// `run <fleet args> <opts> -- probe`, ready.
fn start_holder(ws: &Workspace, endpoints: &str, opts: &[&str]) -> Proc {
    let mut args = fleet_args(endpoints, "10s");
    args.extend_from_slice(opts);
    ws.start_probe(&args, &["--exit-on", "TERM"])
}

fn token_of(p: &Proc) -> i64 {
    p.value("fencing_token").parse().unwrap()
}

fn stderr_has(p: &Proc, what: &str) -> bool {
    p.stderr().contains(what)
}

#[test]
fn the_holder_gets_a_fencing_token_in_its_environment_metadata_and_history() {
    if !etcd::available() {
        return;
    }
    let cluster = Cluster::start(1);
    let (a, _) = two_hosts();
    let p = start_holder(&a, &cluster.endpoints(), &[]);
    let token = token_of(&p);
    assert!(token > 0);
    let meta = a.metadata();
    assert_eq!(meta["fleet"]["key"], KEY, "{meta}");
    assert_eq!(meta["fleet"]["fencing_token"], token, "{meta}");
    // The key, as etcd's lock recipe lays it out, with who holds it.
    let got = cluster.etcdctl(&["get", "--prefix", "ralph-supervise/lock/"]);
    let text = String::from_utf8_lossy(&got.stdout);
    assert!(
        text.contains(&format!("ralph-supervise/lock/{KEY}/")),
        "{text}"
    );
    assert!(text.contains(&format!("\"pid\":{}", p.pid())), "{text}");
    p.signal(Signal::SIGTERM);
    let out = p.finish();
    assert_eq!(out.code(), 143, "{}", out.stderr);
    let history = std::fs::read_to_string(a.path.join(".ralph/supervise/runs.jsonl")).unwrap();
    let record: serde_json::Value = serde_json::from_str(history.lines().last().unwrap()).unwrap();
    assert_eq!(record["fleet"]["fencing_token"], token, "{record}");
    // Released: the key is gone at once (the lease was revoked).
    let got = cluster.etcdctl(&["get", "--prefix", "ralph-supervise/lock/", "--keys-only"]);
    assert!(String::from_utf8_lossy(&got.stdout).trim().is_empty());
}

#[test]
fn fail_across_hosts_names_the_holders_host_pid_and_since() {
    if !etcd::available() {
        return;
    }
    let cluster = Cluster::start(1);
    let (a, b) = two_hosts();
    let holder = start_holder(&a, &cluster.endpoints(), &[]);
    let mut args = vec!["run"];
    let endpoints = cluster.endpoints();
    args.extend(fleet_args(&endpoints, "10s"));
    let marker = b.path.join("ran");
    let script = format!("touch {}", marker.display());
    args.extend(["--on-conflict", "fail", "--", "sh", "-c", &script]);
    let out = b.run(&args);
    assert_eq!(out.code(), 75, "{}", out.stderr);
    let host = nix::unistd::gethostname().unwrap();
    let line = out.stderr.trim();
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(
        line.contains(&format!("fleet key {KEY} is taken")),
        "{line}"
    );
    assert!(
        line.contains(&format!("host {}", host.to_string_lossy())),
        "{line}"
    );
    assert!(line.contains(&format!("pid {}", holder.pid())), "{line}");
    assert!(line.contains("since 20"), "{line}");
    assert!(!marker.exists(), "nothing ran");
    // B's local lock was let go, and B left nothing queued in etcd.
    assert!(!b.lock_held());
    let got = cluster.etcdctl(&["get", "--prefix", "ralph-supervise/lock/", "--keys-only"]);
    assert_eq!(
        String::from_utf8_lossy(&got.stdout).trim().lines().count(),
        1
    );
}

#[test]
fn wait_across_hosts_watches_and_honours_wait_timeout() {
    let Some((_cluster, endpoints, a, b)) = one_member_two_hosts() else {
        return;
    };
    let holder = start_holder(&a, &endpoints, &[]);
    let first = token_of(&holder);
    let mut args = vec!["run"];
    args.extend(fleet_args(&endpoints, "10s"));
    args.extend([
        "--on-conflict",
        "wait",
        "--wait-timeout",
        "1s",
        "--",
        "true",
    ]);
    let out = b.run(&args);
    assert_eq!(out.code(), 75, "{}", out.stderr);
    assert!(
        out.stderr.contains("gave up waiting after 1s"),
        "{}",
        out.stderr
    );

    let mut waiter = Proc::spawn(b.cmd(&[
        "run",
        "--fleet-endpoints",
        &endpoints,
        "--on-conflict",
        "wait",
        "--",
        bin(),
        "probe",
    ]));
    wait_until("the waiter to queue", LIMIT, || {
        stderr_has(&waiter, "waiting for it")
    });
    assert!(
        children_of(waiter.pid().as_raw()).is_empty(),
        "nothing runs while waiting"
    );
    // A third host sees the holder and the waiter, in queue order.
    let c = host("https://git.example.com/acme/api.git");
    c.write_policy(&format!("[fleet]\nendpoints = [\"{endpoints}\"]\n"));
    let status = c.run(&["status", "--fleet"]);
    assert_eq!(status.code(), 0, "{}", status.stderr);
    let rows: Vec<&str> = status.stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{}", status.stdout);
    assert!(rows[0].contains("holder") && rows[0].contains(&holder.pid().to_string()));
    assert!(rows[1].contains("waiter") && rows[1].contains(&waiter.pid().to_string()));
    assert!(rows[0].contains(&first.to_string()), "{}", status.stdout);
    // Meanwhile B's local lock is held and names B's supervisor (never empty for ralph).
    assert!(b.lock_held());
    assert_eq!(
        b.metadata()["pid"],
        waiter.pid().as_raw(),
        "{}",
        b.metadata()
    );
    let holder_child = a.child_pid();
    holder.signal(Signal::SIGTERM);
    waiter.expect_line("ready");
    assert!(
        !alive(holder_child),
        "the waiter runs only after the holder's child is gone"
    );
    let second = token_of(&waiter);
    assert!(second > first, "{second} > {first}");
    assert_eq!(holder.finish().code(), 143);
}

#[test]
fn fifty_alternations_between_two_hosts_never_overlap_and_tokens_increase() {
    let Some((_cluster, endpoints, a, b)) = one_member_two_hosts() else {
        return;
    };
    let log = tempfile::NamedTempFile::new().unwrap();
    let log_path = log.path().to_path_buf();
    // The lock is a queue (oldest key first): a host that lets go queues behind the
    // other, which is queued already while its child runs (0.1 s, longer than a restart).
    let runs = 40;
    let loops: Vec<_> = [("A", a), ("B", b)]
        .into_iter()
        .map(|(name, ws)| {
            let (endpoints, log_path) = (endpoints.clone(), log_path.clone());
            std::thread::spawn(move || {
                let script = format!(
                    "echo \"start {name} $RALPH_FENCING_TOKEN\" >> {log}; sleep 0.1; echo \"end {name} $RALPH_FENCING_TOKEN\" >> {log}",
                    log = log_path.display()
                );
                for _ in 0..runs {
                    let out = ws.run(&[
                        "run",
                        "--fleet-endpoints",
                        &endpoints,
                        "--on-conflict",
                        "wait",
                        "--",
                        "sh",
                        "-c",
                        &script,
                    ]);
                    assert_eq!(out.code(), 0, "{}", out.stderr);
                }
            })
        })
        .collect();
    for l in loops {
        l.join().unwrap();
    }
    let text = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(lines.len(), 2 * 2 * runs, "{text}");
    let (mut last_token, mut last_host, mut alternations) = (0i64, "", 0);
    for pair in lines.chunks(2) {
        let (start, end) = (&pair[0], &pair[1]);
        assert_eq!(start[0], "start", "overlap:\n{text}");
        assert_eq!(end[0], "end", "overlap:\n{text}");
        assert_eq!((start[1], start[2]), (end[1], end[2]), "overlap:\n{text}");
        let token: i64 = start[2].parse().unwrap();
        assert!(token > last_token, "tokens must increase:\n{text}");
        if start[1] != last_host {
            alternations += 1;
        }
        (last_token, last_host) = (token, start[1]);
    }
    assert!(alternations >= 50, "{alternations} alternations:\n{text}");
}

#[test]
fn lease_loss_stops_the_child_before_the_ttl_and_the_waiter_takes_over_after() {
    if !etcd::available() {
        return;
    }
    let mut cluster = Cluster::start(3);
    // The holder talks to one member only (a follower: no election follows the freeze);
    // the waiter to the two others.
    let frozen_member = cluster.follower();
    let only_it = cluster.members[frozen_member].client_url.clone();
    let others: Vec<&str> = (cluster.members.iter().enumerate())
        .filter(|(i, _)| *i != frozen_member)
        .map(|(_, m)| m.client_url.as_str())
        .collect();
    let others = others.join(",");
    let (a, b) = two_hosts();
    let ttl = Duration::from_secs(3);
    let holder = a.start_probe(
        &[
            "--fleet-endpoints",
            &only_it,
            "--fleet-ttl",
            "3s",
            "--stop-grace",
            "10s",
        ],
        &[],
    );
    let first = token_of(&holder);
    let holder_child = a.child_pid();
    let mut waiter = Proc::spawn(b.cmd(&[
        "run",
        "--fleet-endpoints",
        &others,
        "--fleet-ttl",
        "10s",
        "--on-conflict",
        "wait",
        "--",
        bin(),
        "probe",
    ]));
    wait_until("the waiter to queue", LIMIT, || {
        stderr_has(&waiter, "waiting for it")
    });
    // The holder's member goes silent; the other two keep quorum.
    cluster.freeze(frozen_member);
    let frozen = Instant::now();
    wait_until("the holder's child to be gone", LIMIT, || {
        !alive(holder_child)
    });
    let gone = frozen.elapsed();
    // The supervisor gives up 5/6 of the TTL after the last keep-alive etcd answered
    // (at the latest at the freeze), so the child is gone before the lease can lapse,
    // a TTL after that keep-alive.
    assert!(
        gone < ttl,
        "the child lived {gone:?} after the freeze, the TTL is {ttl:?}"
    );
    // And the waiter's child has not started yet: its supervisor still waits.
    assert!(
        b.metadata()["child_pid"].is_null(),
        "the waiter's child ran while the holder's lived: {}",
        b.metadata()
    );
    let out = holder.finish();
    assert_eq!(out.code(), 69, "{}", out.stderr);
    assert!(out.stderr.contains("might lapse"), "{}", out.stderr);
    waiter.expect_line("ready");
    let second = token_of(&waiter);
    assert!(second > first, "{second} > {first}");
    let history = std::fs::read_to_string(a.path.join(".ralph/supervise/runs.jsonl")).unwrap();
    assert!(
        history.contains("\"stopped_by\":\"fleet-lease-lost\""),
        "{history}"
    );
    cluster.thaw(frozen_member);
}

#[test]
fn etcd_down_at_start_is_one_line_and_exit_69_with_nothing_run() {
    if !etcd::available() {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ws = host("git@git.example.com:acme/api.git");
    let marker = ws.path.join("ran");
    let script = format!("touch {}", marker.display());
    let url = format!("http://127.0.0.1:{port}");
    let out = ws.run(&["run", "--fleet-endpoints", &url, "--", "sh", "-c", &script]);
    assert_eq!(out.code(), 69, "{}", out.stderr);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains(&url), "{}", out.stderr);
    assert!(
        out.stderr.contains("Connection refused"),
        "the cause: {}",
        out.stderr
    );
    assert!(!marker.exists());
    assert!(
        !ws.lock_path().exists(),
        "etcd is asked before the workspace is touched"
    );
}

#[test]
fn refused_credentials_exit_77_and_credentials_never_show() {
    if !etcd::available() {
        return;
    }
    let cluster = Cluster::start(1);
    let ok = |args: &[&str]| {
        let out = cluster.etcdctl(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(&["user", "add", "root:R00t-pw", "--interactive=false"]);
    ok(&["auth", "enable"]);
    let ws = host("git@git.example.com:acme/api.git");
    let endpoints = cluster.endpoints();
    let run = |user: Option<(&str, &str)>| {
        let mut cmd = ws.cmd(&[
            "run",
            "--fleet-endpoints",
            &endpoints,
            "--",
            "sh",
            "-c",
            "env",
        ]);
        cmd.env_remove("RALPH_SUPERVISE_ETCD_USER");
        cmd.env_remove("RALPH_SUPERVISE_ETCD_PASSWORD");
        if let Some((user, password)) = user {
            cmd.env("RALPH_SUPERVISE_ETCD_USER", user);
            cmd.env("RALPH_SUPERVISE_ETCD_PASSWORD", password);
        }
        Proc::spawn(cmd).finish()
    };
    let wrong = run(Some(("root", "wr0ng-pw")));
    assert_eq!(wrong.code(), 77, "{}", wrong.stderr);
    assert_eq!(wrong.stderr.trim().lines().count(), 1, "{}", wrong.stderr);
    assert!(
        wrong.stderr.contains("RALPH_SUPERVISE_ETCD_USER"),
        "{}",
        wrong.stderr
    );
    assert!(!wrong.stderr.contains("wr0ng-pw"));
    let none = run(None);
    assert_eq!(none.code(), 77, "{}", none.stderr);
    let right = run(Some(("root", "R00t-pw")));
    assert_eq!(right.code(), 0, "{}", right.stderr);
    // Neither the child, the log, the metadata nor the history sees the password.
    assert!(!right.stdout.contains("R00t-pw") && !right.stderr.contains("R00t-pw"));
    for file in [".ralph/loop.lock", ".ralph/supervise/runs.jsonl"] {
        let text = std::fs::read_to_string(ws.path.join(file)).unwrap();
        assert!(!text.contains("R00t-pw"), "{file}: {text}");
    }
    let shown = ws.run(&["policy", "show", "--fleet-endpoints", &endpoints]);
    assert!(!shown.stdout.contains("R00t-pw"));
}

/// An etcd that serves TLS and asks for client certificates: taken with the
/// authority's file and a client certificate (by `run`, `list --fleet` and `status
/// --fleet`); refused, one line, 69 and nothing run, without a client certificate or
/// with one of another authority (naming `tls_cert`), with another authority in
/// `tls_ca` (naming it) and with a name the certificate does not list (naming the
/// endpoints).
#[test]
fn tls_with_a_client_certificate_and_each_mistake_named() {
    if !etcd::available() {
        return;
    }
    let Some(tls) = etcd::Tls::make() else {
        return;
    };
    let cluster = Cluster::start_tls(&tls);
    let url = cluster.endpoints();
    let ws = host("git@git.example.com:acme/api.git");
    let marker = ws.path.join("ran");
    let script = format!(
        "echo token=$RALPH_FENCING_TOKEN; touch {}",
        marker.display()
    );
    let run = |url: &str, files: &[(&str, &str)]| {
        let mut policy = format!("[fleet]\nendpoints = [{url:?}]\n");
        for (key, file) in files {
            policy.push_str(&format!("{key} = {:?}\n", tls.file(file)));
        }
        ws.write_policy(&policy);
        ws.run(&["run", "--", "sh", "-c", &script])
    };
    let refused = |out: &crate::harness::Output, fix: &str| {
        assert_eq!(out.code(), 69, "{}", out.stderr);
        assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
        assert!(out.stderr.contains(fix), "{}", out.stderr);
        assert!(!marker.exists(), "the command ran: {}", out.stderr);
    };
    let ca = ("tls_ca", "ca.pem");
    let client = [ca, ("tls_cert", "client.pem"), ("tls_key", "client.key")];
    refused(&run(&url, &[ca]), "set [fleet] tls_cert and tls_key");
    let other_client = [
        ca,
        ("tls_cert", "other-client.pem"),
        ("tls_key", "other-client.key"),
    ];
    refused(
        &run(&url, &other_client),
        "check [fleet] tls_cert and tls_key",
    );
    // A file that holds the wrong thing is named when it is read (78).
    let swapped: [(&[(&str, &str)], &str); 3] = [
        (
            &[ca, client[1], ("tls_key", "client.pem")],
            "[fleet] tls_key",
        ),
        (
            &[ca, ("tls_cert", "client.key"), client[2]],
            "[fleet] tls_cert",
        ),
        (
            &[("tls_ca", "ca.key"), client[1], client[2]],
            "[fleet] tls_ca",
        ),
    ];
    for (files, named) in swapped {
        let out = run(&url, files);
        assert_eq!(out.code(), 78, "{}", out.stderr);
        assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
        assert!(out.stderr.contains(named), "{}", out.stderr);
        let wanted = match named {
            "[fleet] tls_key" => "not a private key",
            _ => "not a certificate",
        };
        assert!(out.stderr.contains(wanted), "{}", out.stderr);
        assert!(!marker.exists(), "the command ran: {}", out.stderr);
    }
    let other_ca = [("tls_ca", "other-ca.pem"), client[1], client[2]];
    refused(&run(&url, &other_ca), "set [fleet] tls_ca");
    let by_name = url.replace("127.0.0.1", "localhost");
    refused(&run(&by_name, &client), "name etcd in [fleet] endpoints");
    let out = run(&url, &client);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let token: i64 = (out.stdout.trim().strip_prefix("token="))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no fencing token: {}", out.stdout));
    assert!(token > 0 && marker.exists());
    // Released: the key is gone (etcdctl over TLS with the client certificate); and the
    // control commands connect with the same files.
    let got = cluster.etcdctl(&["get", "--prefix", "ralph-supervise/lock/", "--keys-only"]);
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert!(String::from_utf8_lossy(&got.stdout).trim().is_empty());
    let list = ws.run(&["list", "--fleet"]);
    assert_eq!(list.code(), 0, "{}", list.stderr);
    let status = ws.run(&["status", "--fleet"]);
    assert_eq!(status.code(), 3, "not held: {}", status.stderr);
}

/// `etcdctl lock` and a supervisor see each other's locks.
#[test]
fn a_key_held_with_etcdctl_lock_is_respected_and_etcdctl_waits_for_us() {
    if !etcd::available() {
        return;
    }
    let cluster = Cluster::start(1);
    let endpoints = cluster.endpoints();
    let ws = host("git@git.example.com:acme/api.git");
    let name = format!("ralph-supervise/lock/{KEY}");
    let lock_cmd = [
        "lock",
        "--ttl",
        "2",
        &name,
        "--",
        "sh",
        "-c",
        "echo held; exec sleep 60",
    ];
    let mut tool = Proc::spawn(cluster.etcdctl_cmd(&lock_cmd));
    tool.expect_line("held");
    let out = ws.run(&[
        "run",
        "--fleet-endpoints",
        &endpoints,
        "--on-conflict",
        "fail",
        "--",
        "true",
    ]);
    assert_eq!(out.code(), 75, "{}", out.stderr);
    assert!(out.stderr.contains("another tool"), "{}", out.stderr);
    assert!(out.stderr.contains(&name), "{}", out.stderr);
    // It cannot be asked to stop: not advised, and refused with 69 (documented).
    assert!(!out.stderr.contains("stop --fleet"), "{}", out.stderr);
    assert!(
        out.stderr.contains("end it where it runs"),
        "{}",
        out.stderr
    );
    ws.write_policy(&format!("[fleet]\nendpoints = [\"{endpoints}\"]\n"));
    let stop = ws.run(&["stop", "--fleet", KEY]);
    assert_eq!(stop.code(), 69, "{}", stop.stderr);
    assert!(
        stop.stderr
            .contains("cannot be asked to stop; stop it where it runs"),
        "{}",
        stop.stderr
    );
    // Killed, its key stays until its lease (2s) expires: a waiter gets it then.
    drop(tool);
    let holder = start_holder(&ws, &endpoints, &["--on-conflict", "wait"]);
    // Now the other way round.
    let mut tool = Proc::spawn(cluster.etcdctl_cmd(&lock_cmd));
    wait_until("etcdctl to queue", LIMIT, || {
        let got = cluster.etcdctl(&["get", "--prefix", &format!("{name}/"), "--keys-only"]);
        String::from_utf8_lossy(&got.stdout)
            .trim()
            .lines()
            .filter(|l| !l.is_empty())
            .count()
            == 2
    });
    assert!(children_of(tool.pid().as_raw()).is_empty(), "etcdctl waits");
    let child = ws.child_pid();
    holder.signal(Signal::SIGTERM);
    tool.expect_line("held");
    assert!(!alive(child));
    assert_eq!(holder.finish().code(), 143);
}

#[test]
fn takeover_across_hosts_asks_the_holder_through_etcd_then_acquires() {
    let Some((_cluster, endpoints, a, b)) = one_member_two_hosts() else {
        return;
    };
    let mut holder = start_holder(&a, &endpoints, &[]);
    let first = token_of(&holder);
    let mut taker = Proc::spawn(b.cmd(&[
        "run",
        "--fleet-endpoints",
        &endpoints,
        "--on-conflict",
        "takeover",
        "--",
        bin(),
        "probe",
    ]));
    holder.expect_line("signal SIGTERM");
    taker.expect_line("ready");
    assert!(token_of(&taker) > first);
    let out = holder.finish();
    assert_eq!(out.code(), 143, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("stop asked through the fleet lock by host"),
        "{}",
        out.stderr
    );
    let history = std::fs::read_to_string(a.path.join(".ralph/supervise/runs.jsonl")).unwrap();
    assert!(
        history.contains("\"stopped_by\":\"stop-request\""),
        "{history}"
    );
}

#[test]
fn worktree_ids_are_reserved_fleet_wide_and_listed() {
    let Some((cluster, endpoints, a, b)) = one_member_two_hosts() else {
        return;
    };
    let holder = start_holder(&a, &endpoints, &[]);
    // The default policy in a git repository: a worktree, on this host.
    let other = b.start_probe(&["--fleet-endpoints", &endpoints], &["--exit-on", "TERM"]);
    let line = other.stderr();
    let id = line
        .split("running in worktree ")
        .nth(1)
        .and_then(|rest| rest.split(" (branch").next())
        .and_then(|path| path.rsplit('/').next())
        .unwrap_or_else(|| panic!("no worktree line in {line}"))
        .to_string();
    let reserved = format!("ralph-supervise/worktree/{KEY}/{id}");
    let keys = |prefix: &str| {
        let got = cluster.etcdctl(&["get", "--prefix", prefix, "--keys-only"]);
        String::from_utf8_lossy(&got.stdout).to_string()
    };
    assert!(
        keys("ralph-supervise/worktree/").contains(&reserved),
        "{reserved}"
    );
    // Inspection from either host sees both.
    b.write_policy(&format!("[fleet]\nendpoints = [\"{endpoints}\"]\n"));
    let listed = b.run(&["list", "--fleet"]);
    assert_eq!(listed.code(), 0, "{}", listed.stderr);
    assert!(listed.stdout.contains("holder"), "{}", listed.stdout);
    assert!(
        listed.stdout.contains(&format!("worktree {id}")),
        "{}",
        listed.stdout
    );
    assert!(
        listed.stdout.contains(&holder.pid().to_string()),
        "{}",
        listed.stdout
    );
    let json = b.run(&["status", "--fleet", "--json"]);
    assert_eq!(json.code(), 0, "{}", json.stderr);
    let entries: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(entries[0]["role"], "holder", "{entries}");
    assert_eq!(entries[0]["key"], KEY, "{entries}");
    assert_eq!(entries[0]["pid"], holder.pid().as_raw(), "{entries}");
    assert_eq!(entries[0]["token"], token_of(&holder), "{entries}");
    // The documented shape (ralph-supervise-status(1)): an array of objects, each with
    // every key, in alphabetical order; `id` null but for a reservation.
    let documented = [
        "foreign", "host", "id", "key", "pid", "role", "since", "token",
    ];
    let listed = b.run(&["list", "--fleet", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    for entries in [&entries, &listed] {
        for entry in entries.as_array().unwrap() {
            let keys: Vec<&str> = entry
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.as_str())
                .collect();
            assert_eq!(keys, documented, "{entry}");
            let reserved = entry["role"] == "worktree";
            assert_eq!(entry["id"].is_string(), reserved, "{entry}");
        }
    }
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    // (serde_json's map sorts keys: the order is read from the text.)
    let first = json.stdout.split('}').next().unwrap();
    let at: Vec<usize> = (documented.iter())
        .map(|k| first.find(&format!("\"{k}\":")).unwrap_or(usize::MAX))
        .collect();
    assert!(at.is_sorted() && at[7] < usize::MAX, "{}", json.stdout);
    other.signal(Signal::SIGTERM);
    assert_eq!(other.finish().code(), 143);
    assert!(!keys("ralph-supervise/worktree/").contains(&reserved));
}

#[test]
fn stop_fleet_key_stops_a_loop_on_another_host() {
    let Some((_cluster, endpoints, a, b)) = one_member_two_hosts() else {
        return;
    };
    let holder = start_holder(&a, &endpoints, &[]);
    b.write_policy(&format!("[fleet]\nendpoints = [\"{endpoints}\"]\n"));
    let out = b.run(&["stop", "--fleet", KEY]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains(&format!("stopped: fleet key {KEY} was held by host")),
        "{}",
        out.stdout
    );
    assert_eq!(holder.finish().code(), 143);
    let status = b.run(&["status", "--fleet"]);
    assert_eq!(status.code(), 3, "{}", status.stderr);
    assert!(status.stdout.contains("is free"), "{}", status.stdout);
    let again = b.run(&["stop", "--fleet", KEY]);
    assert_eq!(again.code(), 3, "{}", again.stderr);
}

/// `run <fleet args: ttl> -- <writes started>` in `ws`, whose `on_start` hook (a probe
/// that exits on TERM) is ready; the files in the returned directory.
fn holder_in_on_start(ws: &Workspace, endpoints: &str, ttl: &str) -> (Proc, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("hook.ready");
    let on_start = format!(
        "[\"{}\", \"probe\", \"--exit-on\", \"TERM\", \"--ready-file\", \"{}\"]",
        bin(),
        ready.display()
    );
    ws.write_policy(&format!(
        "[hooks]\non_start = {on_start}\ntimeout = \"20s\"\n"
    ));
    let mut args = fleet_args(endpoints, ttl);
    let touch = format!("touch {}", dir.path().join("started").display());
    args.extend(["--", "sh", "-c", &touch]);
    let holder = Proc::spawn(ws.cmd(&[&["run"][..], &args].concat()));
    wait_until("the on_start hook to be ready", LIMIT, || ready.exists());
    (holder, dir)
}

/// `stop --fleet` while the holder's `on_start` hook runs: the hook gets the stop
/// signal, the command never starts, the key is let go.
#[test]
fn stop_fleet_during_on_start_means_the_command_never_starts() {
    let Some((_cluster, endpoints, a, b)) = one_member_two_hosts() else {
        return;
    };
    let (holder, dir) = holder_in_on_start(&a, &endpoints, "10s");
    let started = dir.path().join("started");
    b.write_policy(&format!("[fleet]\nendpoints = [\"{endpoints}\"]\n"));
    let out = b.run(&["stop", "--fleet", KEY]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let held = holder.finish();
    assert_eq!(held.code(), 143, "{held:?}");
    assert!(
        !started.exists(),
        "the command ran after the stop: {held:?}"
    );
    assert!(
        held.stderr
            .contains("stopped before the command started (stop-request)"),
        "{held:?}"
    );
    let status = b.run(&["status", "--fleet"]);
    assert!(status.stdout.contains("is free"), "{}", status.stdout);
}

/// The lease is lost while `on_start` runs (etcd frozen): the hook gets the stop signal,
/// the command never starts without the key, and the run ends with 69.
#[test]
fn a_lease_lost_during_on_start_means_the_command_never_starts() {
    if !etcd::available() {
        return;
    }
    let mut cluster = Cluster::start(1);
    let ws = host("git@git.example.com:acme/api.git");
    let (holder, dir) = holder_in_on_start(&ws, &cluster.endpoints(), "3s");
    cluster.freeze(0);
    let out = holder.finish();
    cluster.thaw(0);
    assert_eq!(out.code(), 69, "{out:?}");
    assert!(!dir.path().join("started").exists(), "{out:?}");
    assert!(
        out.stderr
            .contains("stopped before the command started (fleet-lease-lost)"),
        "{out:?}"
    );
}

#[test]
fn a_timed_out_wait_across_hosts_can_fall_back_to_a_worktree() {
    let Some((_cluster, endpoints, a, b)) = one_member_two_hosts() else {
        return;
    };
    let holder = start_holder(&a, &endpoints, &[]);
    b.write_policy(&format!(
        "[fleet]\nendpoints = [\"{endpoints}\"]\n[conflict]\npolicy = \"wait\"\nwait_timeout = \"500ms\"\nafter_timeout = \"worktree\"\n"
    ));
    let out = b.run(&[
        "run",
        "--",
        "sh",
        "-c",
        "pwd; echo token=$RALPH_FENCING_TOKEN",
    ]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("gave up waiting after 500ms"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.contains("/.worktrees/"), "{}", out.stdout);
    // Not the fleet lock's holder: no fencing token.
    assert!(
        out.stdout.contains("token=\n") || out.stdout.ends_with("token="),
        "{}",
        out.stdout
    );
    drop(holder);
}

mod resilience;

/// Keys nested in one another are separate locks: a holder of `acme/api` does not hold
/// `acme`.
#[test]
fn a_nested_key_is_another_lock() {
    let Some((_cluster, endpoints, a, b)) = one_member_two_hosts() else {
        return;
    };
    let holder = start_holder(&a, &endpoints, &["--fleet-key", "acme/api"]);
    let mut args = vec!["run"];
    args.extend(fleet_args(&endpoints, "10s"));
    args.extend(["--fleet-key", "acme", "--on-conflict", "fail", "--", "true"]);
    let out = b.run(&args);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    b.write_policy(&format!(
        "[fleet]\nendpoints = [\"{endpoints}\"]\nkey = \"acme\"\n"
    ));
    let status = b.run(&["status", "--fleet"]);
    assert_eq!(status.code(), 3, "{}{}", status.stdout, status.stderr);
    let stop = b.run(&["stop", "--fleet", "acme", "--timeout", "5s"]);
    assert_eq!(stop.code(), 3, "{}", stop.stderr);
    assert!(alive(a.child_pid()), "the acme/api holder was stopped");
    holder.signal(Signal::SIGTERM);
    assert_eq!(holder.finish().code(), 143);
}

/// The holder's lock key deleted by hand, or its lease revoked: it notices at once (a
/// watch, not its next keep-alive), stops its command and exits 69, as for a lost
/// lease; then another host can hold the key. Its own release is no loss.
#[test]
fn a_holder_whose_lock_key_is_deleted_or_lease_revoked_stops_at_once() {
    let Some((cluster, endpoints, a, b)) = one_member_two_hosts() else {
        return;
    };
    let prefix = format!("ralph-supervise/lock/{KEY}/");
    for how in ["del", "revoke"] {
        // A long TTL: the next keep-alive is 15 s away, so only a watch notices in time.
        let holder = a.start_probe(&fleet_args(&endpoints, "60s"), &["--exit-on", "TERM"]);
        let child = a.child_pid();
        let got = cluster.etcdctl(&["get", "--prefix", &prefix, "--keys-only"]);
        let got = String::from_utf8_lossy(&got.stdout).to_string();
        let name = got.lines().find(|l| !l.is_empty()).expect("the lock key");
        let lease = name.rsplit('/').next().unwrap();
        let done = match how {
            "del" => cluster.etcdctl(&["del", "--prefix", &prefix]),
            _ => cluster.etcdctl(&["lease", "revoke", lease]),
        };
        assert!(done.status.success(), "{how}: {done:?}");
        wait_until(
            "the holder's command to stop",
            Duration::from_secs(8),
            || !alive(child),
        );
        let out = holder.finish();
        assert_eq!(out.code(), 69, "{how}: {}", out.stderr);
        assert!(
            out.stderr.contains("fleet lock key was deleted"),
            "{how}: {}",
            out.stderr
        );
        let mut args = vec!["run"];
        args.extend(fleet_args(&endpoints, "10s"));
        args.extend(["--on-conflict", "fail", "--", "true"]);
        let next = b.run(&args);
        assert_eq!(next.code(), 0, "{how}: {}", next.stderr);
        assert!(!next.stderr.contains("deleted"), "{}", next.stderr);
    }
}

/// `status --fleet` where no key can be made says what `status` takes (the policy's key,
/// $RALPH_SUPERVISE_POLICY, -C), not `--fleet-key`, which it rejects; and each works.
#[test]
fn status_fleet_without_a_key_says_what_status_takes() {
    let Some((_cluster, endpoints, a, _)) = one_member_two_hosts() else {
        return;
    };
    let plain = Workspace::new();
    let policy = format!("[fleet]\nendpoints = [\"{endpoints}\"]\n");
    plain.write_policy(&policy);
    let out = plain.run(&["status", "--fleet"]);
    assert_eq!(out.code(), 2, "{}", out.stderr);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
    assert!(!out.stderr.contains("--fleet-key"), "{}", out.stderr);
    for fix in ["set [fleet] key", "$RALPH_SUPERVISE_POLICY", "-C"] {
        assert!(out.stderr.contains(fix), "{fix}: {}", out.stderr);
    }
    let rejected = plain.run(&["status", "--fleet", "--fleet-key", KEY]);
    assert_eq!(rejected.code(), 2, "{}", rejected.stderr);
    // The policy named by the variable, with a key.
    let keyed = plain.path.join("keyed.toml");
    std::fs::write(&keyed, format!("{policy}key = \"{KEY}\"\n")).unwrap();
    let mut cmd = plain.cmd(&["status", "--fleet"]);
    cmd.env("RALPH_SUPERVISE_POLICY", &keyed);
    let out = Proc::spawn(cmd).finish();
    assert_eq!(out.code(), 3, "{}", out.stderr);
    assert!(out.stdout.contains(&format!("fleet key {KEY} is free")));
    // A clone of the repository, named with -C.
    a.write_policy(&policy);
    let out = a.run(&["status", "--fleet"]);
    assert_eq!(out.code(), 3, "{}", out.stderr);
    assert!(out.stdout.contains(&format!("fleet key {KEY} is free")));
}
