use super::read::line_col;
use super::*;
use crate::limits::{Cpu, Memory, Pids};
use crate::present::policy as show;
use crate::setting::short_duration as format_duration;
use crate::supervisor::machine::ExitRule;
use std::collections::HashMap;

/// The value file `$f` sets for `$sec.$key`, if it sets it.
macro_rules! set {
    ($f:expr, $sec:ident . $key:ident) => {{
        let f = &$f;
        let key = concat!(stringify!($sec), ".", stringify!($key));
        f.set.contains(key).then(|| f.values.$sec.$key.clone())
    }};
}

/// Every key as `"section.key"`, in the table's order.
const KEYS: &[&str] = &[
    "conflict.policy",
    "conflict.wait_timeout",
    "conflict.after_timeout",
    "conflict.exit_code",
    "worktree.dir",
    "worktree.branch_prefix",
    "worktree.sync",
    "worktree.on_exit",
    "worktree.copy",
    "stop.signal",
    "stop.grace",
    "stop.orphans",
    "stop.containment",
    "restart.policy",
    "restart.max",
    "restart.backoff_initial",
    "restart.backoff_max",
    "restart.window",
    "restart.exit",
    "run.max_runtime",
    "run.stall_timeout",
    "run.env",
    "lock.handover",
    "limits.memory_max",
    "limits.pids_max",
    "limits.cpu_max",
    "limits.required",
    "hooks.on_start",
    "hooks.on_exit",
    "hooks.timeout",
    "fleet.endpoints",
    "fleet.key",
    "fleet.ttl",
    "fleet.tls_ca",
    "fleet.tls_cert",
    "fleet.tls_key",
    "log.format",
    "log.level",
];

/// A policy file setting `keys` to the values `values` gives them.
fn file_setting(keys: &[&'static str], values: impl FnOnce(&mut Policy)) -> PolicyFile {
    let mut file = PolicyFile::default();
    values(&mut file.values);
    file.set.extend(keys);
    file
}

/// Writes `text` to `<tmp>/supervise.toml` and loads it.
fn load_text(text: &str) -> (tempfile::TempDir, PathBuf, Result<PolicyFile, Failure>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("supervise.toml");
    std::fs::write(&path, text).unwrap();
    let result = load(&path);
    (dir, path, result)
}

fn parsed(text: &str) -> PolicyFile {
    let (_dir, _path, result) = load_text(text);
    result.unwrap_or_else(|e| panic!("{text:?}: {:#}", e.error))
}

/// The one error line for `text`, with the temp path replaced by `P`; asserts 78.
fn error(text: &str) -> String {
    let (_dir, path, result) = load_text(text);
    let failure = result.expect_err(text);
    assert_eq!(failure.status, ExitStatus::BadPolicy, "{text:?}");
    assert_eq!(failure.status.code(), 78);
    let msg = format!("{:#}", failure.error);
    assert!(!msg.contains('\n'), "one line: {msg:?}");
    msg.replace(&path.display().to_string(), "P")
}

const FULL: &str = r#"
[conflict]
policy = "wait"
wait_timeout = "5m"
after_timeout = "worktree"
exit_code = 9

[worktree]
dir = "trees"
branch_prefix = "agents/"
sync = false
on_exit = "queue-merge"
copy = [".env", "config/*.local.toml"]

[stop]
signal = "INT"
grace = "1m30s"
orphans = "leave"
containment = "tree"

[restart]
policy = "always"
max = 4
backoff_initial = "250ms"
backoff_max = "1h"
window = "6h"

[restart.exit]
0 = "stop"
1 = "restart"
75 = "30m"

[run]
max_runtime = "2h"
stall_timeout = "15m"
env = { FOO = "bar", "WITH SPACE" = "x y" }

[lock]
handover = "always"
[limits]
memory_max = "1.5G"
pids_max = 512
cpu_max = "150%"
required = true

[hooks]
on_start = ["make", "up"]
on_exit = ["sh", "-c", "echo done"]
timeout = "5s"

[fleet]
endpoints = ["http://etcd-1:2379", "https://etcd-2.example:2379/"]
key = "acme/api/main"
ttl = "15s"
tls_ca = "Cargo.toml"
tls_cert = "Cargo.toml"
tls_key = "src/lib.rs"

[log]
format = "json"
level = "trace"
"#;

fn full_file() -> PolicyFile {
    file_setting(KEYS, |p| {
        p.conflict = Conflict {
            policy: Some(OnConflict::Wait),
            wait_timeout: Some(Duration::from_secs(300)),
            after_timeout: AfterTimeout::Worktree,
            exit_code: 9,
        };
        p.worktree = Worktree {
            dir: PathBuf::from("trees"),
            branch_prefix: "agents/".into(),
            sync: false,
            on_exit: OnExit::QueueMerge,
            copy: vec![".env".into(), "config/*.local.toml".into()],
        };
        p.stop = Stop {
            signal: libc::SIGINT,
            grace: Duration::from_secs(90),
            orphans: Orphans::Leave,
            containment: ContainmentMode::Tree,
        };
        p.restart = Restart {
            policy: RestartWhen::Always,
            max: Some(4),
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(3600),
            window: Some(Duration::from_secs(6 * 3600)),
            exit: BTreeMap::from([
                (0, ExitRule::Stop),
                (1, ExitRule::Backoff),
                (75, ExitRule::After(Duration::from_secs(1800))),
            ]),
        };
        p.run = Run {
            max_runtime: Some(Duration::from_secs(7200)),
            stall_timeout: Some(Duration::from_secs(900)),
            env: BTreeMap::from([
                ("FOO".to_string(), "bar".to_string()),
                ("WITH SPACE".to_string(), "x y".to_string()),
            ]),
        };
        p.lock = Lock {
            handover: Handover::Always,
        };
        p.limits = Limits {
            memory_max: Some(Memory::Bytes(3 << 29)),
            pids_max: Some(Pids::Count(512)),
            cpu_max: Some(Cpu::Permyriad(15000)),
            required: true,
        };
        p.hooks = Hooks {
            on_start: Some(vec!["make".into(), "up".into()]),
            on_exit: Some(vec!["sh".into(), "-c".into(), "echo done".into()]),
            timeout: Duration::from_secs(5),
        };
        p.fleet = Fleet {
            endpoints: Some(vec![
                "http://etcd-1:2379".into(),
                "https://etcd-2.example:2379".into(),
            ]),
            key: Some("acme/api/main".into()),
            ttl: Duration::from_secs(15),
            tls_ca: Some(PathBuf::from("Cargo.toml")),
            tls_cert: Some(PathBuf::from("Cargo.toml")),
            tls_key: Some(PathBuf::from("src/lib.rs")),
        };
        p.log = Log {
            format: LogFormat::Json,
            level: LogLevel::Trace,
        };
    })
}

#[test]
fn every_key_parses() {
    assert_eq!(parsed(FULL), full_file());
}

#[test]
fn every_enum_value_parses() {
    for v in OnConflict::ALL {
        let f = parsed(&format!("[conflict]\npolicy = \"{v}\"\n"));
        assert_eq!(set!(f, conflict.policy).flatten(), Some(*v));
    }
    for v in AfterTimeout::ALL {
        let f = parsed(&format!("[conflict]\nafter_timeout = \"{v}\"\n"));
        assert_eq!(set!(f, conflict.after_timeout), Some(*v));
    }
    for v in OnExit::ALL {
        let f = parsed(&format!("[worktree]\non_exit = \"{v}\"\n"));
        assert_eq!(set!(f, worktree.on_exit), Some(*v));
    }
    for v in Orphans::ALL {
        let f = parsed(&format!("[stop]\norphans = \"{v}\"\n"));
        assert_eq!(set!(f, stop.orphans), Some(*v));
    }
    for v in RestartWhen::ALL {
        let f = parsed(&format!("[restart]\npolicy = \"{v}\"\n"));
        assert_eq!(set!(f, restart.policy), Some(*v));
    }
    for v in LogLevel::ALL {
        let f = parsed(&format!("[log]\nlevel = \"{v}\"\n"));
        assert_eq!(set!(f, log.level), Some(*v));
    }
    assert_eq!(
        set!(parsed("[log]\nformat = \"text\"\n"), log.format),
        Some(LogFormat::Text)
    );
}

#[test]
fn signals_by_name_and_number() {
    for text in ["\"TERM\"", "\"SIGTERM\"", "\"term\"", "15", "\"15\""] {
        let f = parsed(&format!("[stop]\nsignal = {text}\n"));
        assert_eq!(set!(f, stop.signal), Some(libc::SIGTERM), "{text}");
    }
    assert_eq!(
        set!(parsed("[stop]\nsignal = 0x1\n"), stop.signal),
        Some(libc::SIGHUP)
    );
    assert_eq!(
        set!(parsed("[stop]\nsignal = \"USR1\"\n"), stop.signal),
        Some(libc::SIGUSR1)
    );
}

#[test]
fn durations() {
    let f = parsed("[conflict]\nwait_timeout = \"1h30m\"\n[run]\nmax_runtime = \"1h 30m\"\n");
    assert_eq!(
        set!(f, conflict.wait_timeout).flatten(),
        Some(Duration::from_secs(5400))
    );
    assert_eq!(
        set!(f, run.max_runtime).flatten(),
        Some(Duration::from_secs(5400))
    );
    assert_eq!(
        set!(parsed("[stop]\ngrace = \"0s\"\n"), stop.grace),
        Some(Duration::ZERO)
    );
    for d in [1, 90, 5400, 86_400 + 3] {
        let d = Duration::from_secs(d);
        assert_eq!(humantime::parse_duration(&format_duration(d)), Ok(d));
    }
    assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
    assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
}

#[test]
fn other_spellings_of_sections() {
    // Dotted keys, inline tables, a [run.env] header, and an empty file.
    let f =
        parsed("stop.grace = \"3s\"\nrestart = { policy = \"always\" }\n[run.env]\nA = \"1\"\n");
    assert_eq!(set!(f, stop.grace), Some(Duration::from_secs(3)));
    assert_eq!(set!(f, restart.policy), Some(RestartWhen::Always));
    assert_eq!(
        set!(f, run.env),
        Some(BTreeMap::from([("A".into(), "1".into())]))
    );
    assert_eq!(parsed(""), PolicyFile::default());
    assert_eq!(parsed("# only a comment\n[stop]\n"), PolicyFile::default());
    // Exit codes at both ends, restart.max 0.
    assert_eq!(
        set!(parsed("[conflict]\nexit_code = 1\n"), conflict.exit_code),
        Some(1)
    );
    assert_eq!(
        set!(parsed("[conflict]\nexit_code = 255\n"), conflict.exit_code),
        Some(255)
    );
    assert_eq!(
        set!(parsed("[restart]\nmax = 0\n"), restart.max).flatten(),
        Some(0)
    );
    assert_eq!(
        set!(
            parsed("[worktree]\nbranch_prefix = \"\"\n"),
            worktree.branch_prefix
        ),
        Some(String::new())
    );
}

#[test]
fn defaults() {
    let e = resolve(None, &Overrides::default());
    assert_eq!(e.file, None);
    assert_eq!(e.sources.len(), KEYS.len());
    assert!(e.sources.values().all(|s| *s == Source::Default));
    let p = e.policy;
    assert_eq!(p, Policy::default());
    assert_eq!(p.conflict.policy, None);
    assert_eq!(p.conflict.wait_timeout, None);
    assert_eq!(p.conflict.after_timeout, AfterTimeout::Fail);
    assert_eq!(p.conflict.exit_code, 75);
    assert_eq!(p.worktree.dir, PathBuf::from(".worktrees"));
    assert_eq!(p.worktree.branch_prefix, "ralph/");
    assert!(p.worktree.sync);
    assert_eq!(p.worktree.on_exit, OnExit::Keep);
    assert_eq!(p.stop.signal, libc::SIGTERM);
    assert_eq!(p.stop.grace, Duration::from_secs(10));
    assert_eq!(p.stop.orphans, Orphans::Kill);
    assert_eq!(p.restart.policy, RestartWhen::Never);
    assert_eq!(p.restart.max, None);
    assert_eq!(p.restart.backoff_initial, Duration::from_secs(1));
    assert_eq!(p.restart.backoff_max, Duration::from_secs(60));
    assert_eq!(p.run.max_runtime, None);
    assert!(p.run.env.is_empty());
    assert_eq!(p.log.format, LogFormat::Text);
    assert_eq!(p.log.level, LogLevel::Info);
    // An empty file changes nothing but the provenance of nothing.
    let e = resolve(
        Some(("/x.toml".into(), PolicyFile::default())),
        &Overrides::default(),
    );
    assert_eq!(e.policy, Policy::default());
    assert_eq!(e.file, Some(PathBuf::from("/x.toml")));
    assert!(e.sources.values().all(|s| *s == Source::Default));
}

#[test]
fn file_overrides_defaults_and_flags_override_file() {
    let path = PathBuf::from("/etc/ralph/supervise.toml");
    let keys = [
        "conflict.policy",
        "stop.grace",
        "stop.signal",
        "restart.policy",
        "restart.max",
        "log.level",
    ];
    let file = file_setting(&keys, |p| {
        p.conflict.policy = Some(OnConflict::Wait);
        p.stop.grace = Duration::from_secs(20);
        p.stop.signal = libc::SIGINT;
        p.restart.policy = RestartWhen::OnFailure;
        p.restart.max = Some(3);
        p.log.level = LogLevel::Debug;
    });
    let flags = flags(&[
        ("on_conflict", "takeover"),
        ("stop_grace", "5s"),
        ("max_runtime", "60s"),
    ]);
    let e = resolve(Some((path.clone(), file)), &flags);
    let p = &e.policy;
    // Flag over file.
    assert_eq!(p.conflict.policy, Some(OnConflict::Takeover));
    assert_eq!(e.sources["conflict.policy"], Source::Flag);
    assert_eq!(p.stop.grace, Duration::from_secs(5));
    assert_eq!(e.sources["stop.grace"], Source::Flag);
    // Flag over default.
    assert_eq!(p.run.max_runtime, Some(Duration::from_secs(60)));
    assert_eq!(e.sources["run.max_runtime"], Source::Flag);
    // File over default.
    assert_eq!(p.stop.signal, libc::SIGINT);
    assert_eq!(e.sources["stop.signal"], Source::File(path.clone()));
    assert_eq!(p.restart.policy, RestartWhen::OnFailure);
    assert_eq!(p.restart.max, Some(3));
    assert_eq!(e.sources["restart.max"], Source::File(path.clone()));
    assert_eq!(p.log.level, LogLevel::Debug);
    // Default.
    assert_eq!(p.stop.orphans, Orphans::Kill);
    assert_eq!(e.sources["stop.orphans"], Source::Default);
    assert_eq!(e.sources["conflict.exit_code"], Source::Default);

    let flagged: Vec<_> = e
        .sources
        .iter()
        .filter(|(_, s)| **s == Source::Flag)
        .map(|(k, _)| *k)
        .collect();
    assert_eq!(
        flagged,
        ["conflict.policy", "run.max_runtime", "stop.grace"]
    );
    let from_file: Vec<_> = e
        .sources
        .iter()
        .filter(|(_, s)| matches!(s, Source::File(_)))
        .map(|(k, _)| *k)
        .collect();
    assert_eq!(
        from_file,
        ["log.level", "restart.max", "restart.policy", "stop.signal"]
    );
}

#[test]
fn every_flag_overrides_the_full_file() {
    let path = PathBuf::from("/p.toml");
    let flags = flags(&[
        ("on_conflict", "fail"),
        ("wait_timeout", "7s"),
        ("conflict_exit_code", "99"),
        ("stop_grace", "2s"),
        ("stop_signal", "HUP"),
        ("restart", "never"),
        ("max_restarts", "1"),
        ("restart_delay", "3s"),
        ("restart_window", "2m"),
        ("restart_exit", "75=stop"),
        ("restart_exit", "3=1m"),
        ("max_runtime", "4s"),
        ("stall_timeout", "5s"),
        ("handover", "never"),
        ("log_format", "text"),
        ("fleet_endpoints", "http://a:1, http://b:2"),
        ("fleet_key", "x/y"),
        ("fleet_ttl", "2s"),
        ("containment", "cgroup"),
    ]);
    let e = resolve(Some((path.clone(), full_file())), &flags);
    let p = &e.policy;
    assert_eq!(p.conflict.policy, Some(OnConflict::Fail));
    assert_eq!(p.conflict.wait_timeout, Some(Duration::from_secs(7)));
    assert_eq!(p.conflict.exit_code, 99);
    assert_eq!(p.stop.grace, Duration::from_secs(2));
    assert_eq!(p.stop.signal, libc::SIGHUP);
    assert_eq!(p.restart.policy, RestartWhen::Never);
    assert_eq!(p.restart.max, Some(1));
    assert_eq!(p.restart.backoff_initial, Duration::from_secs(3));
    assert_eq!(p.restart.window, Some(Duration::from_secs(120)));
    assert_eq!(p.run.stall_timeout, Some(Duration::from_secs(5)));
    // Each --restart-exit adds its entry over the file's.
    let exit = Vec::from_iter(p.restart.exit.clone());
    let (stop, restart) = (ExitRule::Stop, ExitRule::Backoff);
    let minute = ExitRule::After(Duration::from_secs(60));
    assert_eq!(exit, [(0, stop), (1, restart), (3, minute), (75, stop)]);
    assert_eq!(p.run.max_runtime, Some(Duration::from_secs(4)));
    assert_eq!(p.lock.handover, Handover::Never);
    assert_eq!(p.log.format, LogFormat::Text);
    let endpoints = ["http://a:1".to_string(), "http://b:2".to_string()];
    assert_eq!(p.fleet.endpoints.as_deref(), Some(&endpoints[..]));
    assert_eq!(p.fleet.key.as_deref(), Some("x/y"));
    assert_eq!(p.fleet.ttl, Duration::from_secs(2));
    assert_eq!(p.stop.containment, ContainmentMode::Cgroup);
    // Keys without a flag keep the file's values.
    assert_eq!(p.conflict.after_timeout, AfterTimeout::Worktree);
    assert_eq!(p.worktree.on_exit, OnExit::QueueMerge);
    assert_eq!(p.restart.backoff_max, Duration::from_secs(3600));
    assert_eq!(p.log.level, LogLevel::Trace);
    for key in KEYS {
        let expected = if super::key(key).unwrap().flag.is_some() {
            Source::Flag
        } else {
            Source::File(path.clone())
        };
        assert_eq!(e.sources[key], expected, "{key}");
    }
}

#[test]
fn restart_delay_raises_a_shorter_backoff_max() {
    let flags = flags(&[("restart_delay", "120s")]);
    let e = resolve(None, &flags);
    assert_eq!(e.policy.restart.backoff_initial, Duration::from_secs(120));
    assert_eq!(e.policy.restart.backoff_max, Duration::from_secs(120));
    assert_eq!(e.sources["restart.backoff_max"], Source::Flag);
}

#[test]
fn show_defaults() {
    let shown = show(&resolve(None, &Overrides::default()));
    let expected = r#"# effective policy; no policy file, built-in defaults

[conflict]
# policy not set: worktree in a git repository, fail elsewhere  # default
# wait_timeout not set: wait without limit  # default
after_timeout = "fail"  # default
exit_code = 75  # default

[worktree]
dir = ".worktrees"  # default
branch_prefix = "ralph/"  # default
sync = true  # default
on_exit = "keep"  # default
copy = []  # default

[stop]
signal = "SIGTERM"  # default
grace = "10s"  # default
orphans = "kill"  # default
containment = "auto"  # default

[restart]
policy = "never"  # default
# max not set: unlimited  # default
backoff_initial = "1s"  # default
backoff_max = "1m"  # default
# window not set: every restart of the run counts  # default
# exit not set: every exit status follows `policy`  # default

[run]
# max_runtime not set: no limit  # default
# stall_timeout not set: no stall watchdog  # default
env = {}  # default

[lock]
handover = "auto"  # default

[limits]
# memory_max not set: no limit  # default
# pids_max not set: no limit  # default
# cpu_max not set: no limit  # default
required = false  # default

[hooks]
# on_start not set: no hook  # default
# on_exit not set: no hook  # default
timeout = "1m"  # default

[fleet]
# endpoints not set: no fleet lock  # default
# key not set: from `git remote get-url origin` and the current branch, like "github.com/acme/api/main"  # default
ttl = "10s"  # default
# tls_ca not set: none (an https endpoint needs it)  # default
# tls_cert not set: none  # default
# tls_key not set: none  # default

[log]
format = "text"  # default
level = "info"  # default
"#;
    assert_eq!(shown, expected);
}

#[test]
fn show_names_each_source() {
    let path = PathBuf::from("/w/.ralph/supervise.toml");
    let file = file_setting(&["stop.grace", "conflict.policy", "run.env"], |p| {
        p.stop.grace = Duration::from_secs(20);
        p.conflict.policy = Some(OnConflict::Wait);
        p.run.env = BTreeMap::from([("A B".into(), "say \"hi\"".into())]);
    });
    let flags = flags(&[("wait_timeout", "5400s"), ("stop_signal", "INT")]);
    let shown = show(&resolve(Some((path, file)), &flags));
    let lines: Vec<&str> = shown.lines().collect();
    for line in [
        "# effective policy; file: /w/.ralph/supervise.toml",
        "policy = \"wait\"  # /w/.ralph/supervise.toml",
        "wait_timeout = \"1h30m\"  # --wait-timeout",
        "signal = \"SIGINT\"  # --stop-signal",
        "grace = \"20s\"  # /w/.ralph/supervise.toml",
        "orphans = \"kill\"  # default",
        "env = { \"A B\" = 'say \"hi\"' }  # /w/.ralph/supervise.toml",
    ] {
        assert!(lines.contains(&line), "{line:?} missing from:\n{shown}");
    }
}

#[test]
fn show_output_is_a_policy_file_for_the_same_policy() {
    let e = resolve(Some(("/p.toml".into(), full_file())), &Overrides::default());
    let (_dir, path, loaded) = load_text(&show(&e));
    let again = resolve(Some((path, loaded.unwrap())), &Overrides::default());
    assert_eq!(again.policy, e.policy);
    let (_dir, path, loaded) = load_text(&show(&resolve(None, &Overrides::default())));
    let again = resolve(Some((path, loaded.unwrap())), &Overrides::default());
    assert_eq!(again.policy, Policy::default());
}

/// A fake environment.
fn env_of(vars: &[(&str, &Path)]) -> impl Fn(&str) -> Option<OsString> + use<> {
    let map: HashMap<String, OsString> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_os_str().to_owned()))
        .collect();
    move |name| map.get(name).cloned()
}

#[test]
fn lookup_order() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let workspace = root.join("ws");
    let home = root.join("home");
    let xdg = root.join("xdg");
    let explicit = root.join("explicit.toml");
    let named = root.join("named.toml");
    let ws_file = workspace.join(".ralph/supervise.toml");
    let xdg_file = xdg.join("ralph-supervise/policy.toml");
    let home_file = home.join(".config/ralph-supervise/policy.toml");
    for f in [&explicit, &named, &ws_file, &xdg_file, &home_file] {
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, "").unwrap();
    }
    let all = env_of(&[
        (ENV_POLICY, &named),
        ("XDG_CONFIG_HOME", &xdg),
        ("HOME", &home),
    ]);
    let no_env = env_of(&[("XDG_CONFIG_HOME", &xdg), ("HOME", &home)]);
    let found = |explicit: Option<&Path>, env: &dyn Fn(&str) -> Option<OsString>| {
        find(explicit, &workspace, env).unwrap()
    };

    assert_eq!(found(Some(&explicit), &all), Some(explicit.clone()));
    assert_eq!(found(None, &all), Some(named.clone()));
    // An empty variable counts as unset.
    let empty = env_of(&[(ENV_POLICY, Path::new("")), ("HOME", &home)]);
    assert_eq!(found(None, &empty), Some(ws_file.clone()));
    assert_eq!(found(None, &no_env), Some(ws_file.clone()));
    std::fs::remove_file(&ws_file).unwrap();
    assert_eq!(found(None, &no_env), Some(xdg_file.clone()));
    // XDG_CONFIG_HOME unset, empty or relative: $HOME/.config.
    let home_only = env_of(&[("HOME", &home)]);
    assert_eq!(found(None, &home_only), Some(home_file.clone()));
    let relative = env_of(&[("XDG_CONFIG_HOME", Path::new("rel")), ("HOME", &home)]);
    assert_eq!(found(None, &relative), Some(home_file.clone()));
    let blank = env_of(&[("XDG_CONFIG_HOME", Path::new("")), ("HOME", &home)]);
    assert_eq!(found(None, &blank), Some(home_file.clone()));
    // The XDG directory is used even if $HOME/.config also has a file.
    assert_eq!(found(None, &no_env), Some(xdg_file.clone()));
    // A set XDG_CONFIG_HOME replaces $HOME/.config; it is not searched as well.
    std::fs::remove_file(&xdg_file).unwrap();
    assert_eq!(found(None, &no_env), None);
    assert_eq!(found(None, &home_only), Some(home_file.clone()));
    std::fs::remove_file(&home_file).unwrap();
    assert_eq!(found(None, &home_only), None);
    assert_eq!(found(None, &env_of(&[])), None);
}

#[test]
fn named_files_must_exist() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing.toml");
    let ws = tmp.path();
    let m = missing.display().to_string();

    let e = find(Some(&missing), ws, &env_of(&[])).unwrap_err();
    assert_eq!(e.status, ExitStatus::BadPolicy);
    assert_eq!(
        format!("{:#}", e.error),
        format!("{m}: policy file not found (given by --policy); check the path")
    );

    let e = find(None, ws, &env_of(&[(ENV_POLICY, &missing)])).unwrap_err();
    assert_eq!(e.status.code(), 78);
    assert_eq!(
        format!("{:#}", e.error),
        format!(
            "{m}: policy file not found (named by $RALPH_SUPERVISE_POLICY); check the path, or unset the variable"
        )
    );

    // An explicit file beats a broken variable.
    let present = tmp.path().join("present.toml");
    std::fs::write(&present, "").unwrap();
    let env = env_of(&[(ENV_POLICY, &missing)]);
    assert_eq!(
        find(Some(&present), ws, &env).unwrap(),
        Some(present.clone())
    );
}

#[test]
fn effective_finds_loads_and_resolves() {
    let tmp = tempfile::tempdir().unwrap();
    let ws_file = tmp.path().join(".ralph/supervise.toml");
    std::fs::create_dir_all(ws_file.parent().unwrap()).unwrap();
    std::fs::write(&ws_file, "[stop]\ngrace = \"3s\"\n").unwrap();
    let e = effective(None, tmp.path(), &env_of(&[]), &Overrides::default()).unwrap();
    assert_eq!(e.file, Some(ws_file.clone()));
    assert_eq!(e.policy.stop.grace, Duration::from_secs(3));
    assert_eq!(e.sources["stop.grace"], Source::File(ws_file.clone()));
    std::fs::write(&ws_file, "[stop]\ngrace = 3\n").unwrap();
    let err = effective(None, tmp.path(), &env_of(&[]), &Overrides::default()).unwrap_err();
    assert_eq!(err.status, ExitStatus::BadPolicy);
}

#[test]
fn unknown_keys_and_sections() {
    assert_eq!(
        error("[stop]\ngrase = \"1s\"\n"),
        "P:2:1: unknown key \"grase\" in [stop]; expected one of signal, grace, orphans, containment"
    );
    assert_eq!(
        error("[stop]\nsignal = \"TERM\"\n  grase = \"1s\"\n"),
        "P:3:3: unknown key \"grase\" in [stop]; expected one of signal, grace, orphans, containment"
    );
    assert_eq!(
        error("# policy\n\n[stoop]\ngrace = \"1s\"\n"),
        "P:3:2: unknown section [stoop]; expected one of the sections conflict, worktree, stop, restart, run, lock, limits, hooks, fleet, log"
    );
    assert_eq!(
        error("grace = \"1s\"\n"),
        "P:1:1: unknown key \"grace\" at top level; expected one of the sections conflict, worktree, stop, restart, run, lock, limits, hooks, fleet, log"
    );
    assert_eq!(
        error("[stop.extra]\nx = 1\n"),
        "P:1:7: unknown key \"extra\" in [stop]; expected one of signal, grace, orphans, containment"
    );
    assert_eq!(
        error("[conflict]\npolicy = \"wait\"\n[restart]\nmax = 1\nbackof = \"1s\"\n"),
        "P:5:1: unknown key \"backof\" in [restart]; expected one of policy, max, backoff_initial, backoff_max, window, exit"
    );
    // The first problem in the file is reported, not the first in key order.
    assert_eq!(
        error("[stop]\nzzz = 1\naaa = 1\n"),
        "P:2:1: unknown key \"zzz\" in [stop]; expected one of signal, grace, orphans, containment"
    );
}

#[test]
fn wrong_types() {
    let cases = [
        (
            "[stop]\ngrace = 10\n",
            "P:2:9: stop.grace must be a duration string, found an integer; write a duration like \"30s\", \"5m\" or \"1h30m\"",
        ),
        (
            "stop = 1\n",
            "P:1:1: stop must be a section, found an integer; put its keys under a [stop] header",
        ),
        (
            "[[stop]]\n",
            "P:1:3: stop must be a section, found an array; write a [stop] section (one pair of brackets)",
        ),
        (
            "log = [\"json\"]\n",
            "P:1:1: log must be a section, found an array; write a [log] section (one pair of brackets)",
        ),
        (
            "[conflict]\nexit_code = \"75\"\n",
            "P:2:13: conflict.exit_code must be an integer, found a string; write an exit code from 1 to 255 (default 75), without quotes",
        ),
        (
            "[worktree]\nsync = \"yes\"\n",
            "P:2:8: worktree.sync must be true or false, found a string; write true or false, without quotes",
        ),
        (
            "[worktree]\ndir = 1\n",
            "P:2:7: worktree.dir must be a string, found an integer; write a directory in quotes, like \".worktrees\"",
        ),
        (
            "[restart]\npolicy = true\n",
            "P:2:10: restart.policy must be a string, found a boolean; write one of never, on-failure, always, in quotes",
        ),
        (
            "[stop]\nsignal = 1.5\n",
            "P:2:10: stop.signal must be a signal name or number, found a float; use a name like \"TERM\" or \"SIGTERM\", or a number like 15",
        ),
        (
            "[run]\nenv = [\"A=1\"]\n",
            "P:2:7: run.env must be a table, found an array; write a [run.env] section with lines like NAME = \"value\"",
        ),
        (
            "[run.env]\nA = 1\n",
            "P:2:5: run.env.A must be a string, found an integer; write the value in quotes, like A = \"1\"",
        ),
        (
            "[hooks]\non_start = \"make up\"\n",
            "P:2:12: hooks.on_start must be an array of strings, found a string; write the program and its arguments as an array, like [\"make\", \"up\"]",
        ),
        (
            "[hooks]\non_exit = [\"sh\", 1]\n",
            "P:2:18: hooks.on_exit[1] must be a string, found an integer; write the program and its arguments as an array, like [\"make\", \"up\"]",
        ),
        (
            "[hooks]\ntimeout = 30\n",
            "P:2:11: hooks.timeout must be a duration string, found an integer; write a duration like \"30s\", \"5m\" or \"1h30m\"",
        ),
        (
            "[worktree]\ncopy = \".env\"\n",
            "P:2:8: worktree.copy must be an array of strings, found a string; write an array of globs relative to the repository, like [\".env\", \"config/*.local.toml\"]",
        ),
        (
            "[log]\nlevel = 3\n",
            "P:2:9: log.level must be a string, found an integer; write one of error, warn, info, debug, trace, in quotes",
        ),
        (
            "[run]\nmax_runtime = 1979-05-27\n",
            "P:2:15: run.max_runtime must be a duration string, found a datetime; write a duration like \"30s\", \"5m\" or \"1h30m\"",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(error(text), expected, "{text:?}");
    }
}

#[test]
fn bad_values() {
    let cases = [
        (
            "[stop]\ngrace = \"10 parsecs\"\n",
            "P:2:9: stop.grace: \"10 parsecs\" is not a duration (unknown time unit \"parsecs\"); write a duration like \"30s\", \"5m\" or \"1h30m\"",
        ),
        (
            "[conflict]\nwait_timeout = \"10\"\n",
            "P:2:16: conflict.wait_timeout: \"10\" is not a duration (time unit needed, for example 10sec or 10ms); write a duration like \"30s\", \"5m\" or \"1h30m\"",
        ),
        (
            "[stop]\nsignal = \"SIGFOO\"\n",
            "P:2:10: stop.signal: \"SIGFOO\" is not a signal; use a name like \"TERM\" or \"SIGTERM\", or a number like 15",
        ),
        (
            "[stop]\nsignal = 99\n",
            "P:2:10: stop.signal: 99 is not a signal number; use a name like \"TERM\" or \"SIGTERM\", or a number like 15",
        ),
        (
            "[restart]\npolicy = \"sometimes\"\n",
            "P:2:10: restart.policy: \"sometimes\" is not valid; expected one of never, on-failure, always",
        ),
        (
            "[conflict]\npolicy = \"Worktree\"\n",
            "P:2:10: conflict.policy: \"Worktree\" is not valid; expected one of worktree, wait, fail, takeover",
        ),
        (
            "[conflict]\nafter_timeout = \"wait\"\n",
            "P:2:17: conflict.after_timeout: \"wait\" is not valid; expected one of fail, worktree",
        ),
        (
            "[worktree]\non_exit = \"remove\"\n",
            "P:2:11: worktree.on_exit: \"remove\" is not valid; expected one of keep, remove-if-clean, queue-merge",
        ),
        (
            "[stop]\norphans = \"reap\"\n",
            "P:2:11: stop.orphans: \"reap\" is not valid; expected one of kill, leave",
        ),
        (
            "[conflict]\nexit_code = 0\n",
            "P:2:13: conflict.exit_code: 0 is out of range; use an exit code from 1 to 255 (default 75)",
        ),
        (
            "[conflict]\nexit_code = 256\n",
            "P:2:13: conflict.exit_code: 256 is out of range; use an exit code from 1 to 255 (default 75)",
        ),
        (
            "[conflict]\nexit_code = -75\n",
            "P:2:13: conflict.exit_code: -75 is out of range; use an exit code from 1 to 255 (default 75)",
        ),
        (
            "[restart]\nmax = -1\n",
            "P:2:7: restart.max: -1 is out of range; use 0 to 4294967295, or leave the key out for no limit",
        ),
        (
            "[log]\nlevel = \"verbose\"\n",
            "P:2:9: log.level: \"verbose\" is not valid; expected one of error, warn, info, debug, trace",
        ),
        (
            "[log]\nformat = \"xml\"\n",
            "P:2:10: log.format: \"xml\" is not valid; expected one of text, json",
        ),
        (
            "[worktree]\ndir = \"\"\n",
            "P:2:7: worktree.dir: the directory is empty; use a directory like \".worktrees\"",
        ),
        (
            "[worktree]\ndir = \"../wt\"\n",
            "P:2:7: worktree.dir: \"../wt\" is not a usable worktree directory (it may not leave the repository with ..); use a directory inside the repository like \".worktrees\", or an absolute path",
        ),
        (
            "[worktree]\ndir = \".git/wt\"\n",
            "P:2:7: worktree.dir: \".git/wt\" is not a usable worktree directory (git's and ralph's own directories are not for worktrees); use a directory inside the repository like \".worktrees\", or an absolute path",
        ),
        (
            "[worktree]\nbranch_prefix = \"a b/\"\n",
            "P:2:17: worktree.branch_prefix: \"a b/\" is not a usable branch prefix (it may not contain spaces, control characters or any of ~^:?*[\\); use a prefix like \"ralph/\"",
        ),
        (
            "[worktree]\nbranch_prefix = \"ralph/.x\"\n",
            "P:2:17: worktree.branch_prefix: \"ralph/.x\" is not a usable branch prefix (no part of it may start with a dot); use a prefix like \"ralph/\"",
        ),
        (
            "[hooks]\non_start = []\n",
            "P:2:12: hooks.on_start: the array is empty; write the program and its arguments as an array, like [\"make\", \"up\"], or leave the key out",
        ),
        (
            "[hooks]\non_exit = [\"\", \"x\"]\n",
            "P:2:12: hooks.on_exit[0]: the program name is empty; name a program, like \"make\"",
        ),
        (
            "[hooks]\ntimeout = \"soon\"\n",
            "P:2:11: hooks.timeout: \"soon\" is not a duration (expected number at 0); write a duration like \"30s\", \"5m\" or \"1h30m\"",
        ),
        (
            "[worktree]\ncopy = [\".env\", \"config/[ab.toml\"]\n",
            "P:2:17: worktree.copy[1]: \"config/[ab.toml\" is not a usable glob (a [ has no closing ] in the same path part); write an array of globs relative to the repository, like [\".env\", \"config/*.local.toml\"]",
        ),
        (
            "[worktree]\ncopy = [\"../secrets\"]\n",
            "P:2:9: worktree.copy[0]: \"../secrets\" is not a usable glob (it may not leave the repository with ..); write an array of globs relative to the repository, like [\".env\", \"config/*.local.toml\"]",
        ),
        (
            "[run.env]\n\"A=B\" = \"1\"\n",
            "P:2:1: run.env: \"A=B\" is not a usable variable name; use a name without = or NUL, like RUST_LOG",
        ),
        (
            "[restart]\nbackoff_max = \"1s\"\nbackoff_initial = \"5s\"\n",
            "P:2:15: restart.backoff_max \"1s\" is shorter than restart.backoff_initial \"5s\"; make it at least as long",
        ),
        // Columns count characters, not bytes.
        (
            "# é\n[stop]\nsignal = \"É\"\n",
            "P:3:10: stop.signal: \"É\" is not a signal; use a name like \"TERM\" or \"SIGTERM\", or a number like 15",
        ),
        (
            "[stop] # «x»\ngrace = \"x\" ; orphans = \"kill\"\n",
            "P:2:13: invalid TOML: unexpected key or value, expected newline, `#`; fix the syntax there",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(error(text), expected, "{text:?}");
    }
}

#[test]
fn invalid_toml() {
    let cases = [
        (
            "[stop\n",
            "P:1:6: invalid TOML: unclosed table, expected `]`; fix the syntax there",
        ),
        (
            "[stop]\ngrace = \n",
            "P:2:9: invalid TOML: string values must be quoted, expected literal string; fix the syntax there",
        ),
        (
            "[stop]\ngrace = \"1s\"\ngrace = \"2s\"\n",
            "P:3:1: invalid TOML: duplicate key; fix the syntax there",
        ),
        (
            "a = = 1",
            "P:1:5: invalid TOML: extra `=`, expected nothing; fix the syntax there",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(error(text), expected, "{text:?}");
    }
}

#[test]
fn not_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(&path, b"[stop]\ngrace = \"1\xffs\"\n").unwrap();
    let e = load(&path).unwrap_err();
    assert_eq!(e.status, ExitStatus::BadPolicy);
    assert_eq!(
        format!("{:#}", e.error),
        format!(
            "{}:2:11: the file is not valid UTF-8; save it as UTF-8 text",
            path.display()
        )
    );
}

#[test]
fn unreadable_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("gone.toml");
    let e = load(&missing).unwrap_err();
    assert_eq!(e.status, ExitStatus::BadPolicy);
    assert_eq!(
        format!("{:#}", e.error),
        format!(
            "{}: No such file or directory (os error 2); check that the policy file exists and is readable",
            missing.display()
        )
    );
    let e = load(dir.path()).unwrap_err();
    assert_eq!(e.status.code(), 78);
    assert_eq!(
        format!("{:#}", e.error),
        format!(
            "{}: Is a directory (os error 21); check that the policy file exists and is readable",
            dir.path().display()
        )
    );
}

#[test]
fn line_and_column() {
    let text = "ab\nçd\n\nx";
    assert_eq!(line_col(text, 0), (1, 1));
    assert_eq!(line_col(text, 2), (1, 3));
    assert_eq!(line_col(text, 3), (2, 1));
    assert_eq!(line_col(text, 5), (2, 2)); // after the two-byte ç
    assert_eq!(line_col(text, 4), (2, 1)); // inside ç: its start
    assert_eq!(line_col(text, 8), (4, 1));
    assert_eq!(line_col(text, 99), (4, 2));
    assert_eq!(line_col("a\r\nb", 3), (2, 1));
}

#[test]
fn shipped_examples_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let file = load(&path).unwrap_or_else(|e| panic!("{:#}", e.error));
            assert_ne!(
                file,
                PolicyFile::default(),
                "{} sets nothing",
                path.display()
            );
            names.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    names.sort();
    for expected in [
        "ci.toml",
        "interactive.toml",
        "overnight.toml",
        "parallel-agents.toml",
        "systemd.toml",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "config/{expected} missing"
        );
    }
    // Spot-check that each example says what its comments promise.
    let get = |name: &str| load(&dir.join(name)).unwrap();
    assert_eq!(
        set!(get("interactive.toml"), conflict.policy).flatten(),
        Some(OnConflict::Worktree)
    );
    let systemd = get("systemd.toml");
    assert_eq!(
        set!(systemd, conflict.policy).flatten(),
        Some(OnConflict::Wait)
    );
    assert_eq!(set!(systemd, restart.policy), Some(RestartWhen::OnFailure));
    assert!(set!(systemd, stop.grace).unwrap() > Duration::from_secs(10));
    assert_eq!(
        set!(get("ci.toml"), conflict.policy).flatten(),
        Some(OnConflict::Fail)
    );
    let overnight = get("overnight.toml");
    let exit = set!(overnight, restart.exit).unwrap();
    assert_eq!(exit.get(&0), Some(&ExitRule::Stop));
    assert!(matches!(exit.get(&75), Some(ExitRule::After(d)) if *d >= Duration::from_secs(60)));
    assert!(set!(overnight, restart.window).flatten().is_some());
    assert!(set!(overnight, restart.max).flatten().is_some());
    let parallel = get("parallel-agents.toml");
    assert_eq!(
        set!(parallel, conflict.policy).flatten(),
        Some(OnConflict::Worktree)
    );
    assert!(matches!(
        set!(parallel, worktree.on_exit),
        Some(OnExit::QueueMerge | OnExit::RemoveIfClean)
    ));
}

#[test]
fn the_key_docs_cover_every_key_with_its_default() {
    let documented: Vec<&str> = TABLE.iter().map(|d| d.full).collect();
    assert_eq!(documented, KEYS, "the key table must follow KEYS");
    let defaults: BTreeMap<&str, String> = KEYS
        .iter()
        .map(|key| {
            (
                *key,
                super::key(key)
                    .unwrap()
                    .default()
                    .unwrap_or_else(|u| format!("not set ({u})")),
            )
        })
        .collect();
    assert_eq!(defaults["stop.grace"], "\"10s\"");
    assert_eq!(defaults["conflict.exit_code"], "75");
    assert!(defaults["restart.max"].starts_with("not set ("));

    let grace = TABLE.iter().find(|k| k.full == "stop.grace").unwrap();
    assert_eq!(grace.long_flag().as_deref(), Some("--stop-grace"));
}

#[test]
fn keyword_values_match_the_code() {
    fn spelled<T: Copy>(all: &[T], f: fn(T) -> &'static str) -> Vec<&'static str> {
        all.iter().map(|v| f(*v)).collect()
    }
    let expected: [(&str, Vec<&str>); 7] = [
        (
            "conflict.policy",
            spelled(OnConflict::ALL, <OnConflict as Keyword>::as_str),
        ),
        (
            "conflict.after_timeout",
            spelled(AfterTimeout::ALL, <AfterTimeout as Keyword>::as_str),
        ),
        (
            "worktree.on_exit",
            spelled(OnExit::ALL, <OnExit as Keyword>::as_str),
        ),
        (
            "stop.orphans",
            spelled(Orphans::ALL, <Orphans as Keyword>::as_str),
        ),
        (
            "stop.containment",
            spelled(ContainmentMode::ALL, <ContainmentMode as Keyword>::as_str),
        ),
        (
            "restart.policy",
            spelled(RestartWhen::ALL, <RestartWhen as Keyword>::as_str),
        ),
        ("log.format", vec!["text", "json"]),
    ];
    for (key, values) in expected {
        let doc = super::key(key).unwrap();
        let listed: Vec<&str> = doc.values.iter().map(|(v, _)| *v).collect();
        assert_eq!(listed, values, "{key}");
    }
}

/// Overrides as the command line gives them: flag name and text.
fn flags(pairs: &[(&str, &str)]) -> Overrides {
    let mut flags = Overrides::default();
    for (name, text) in pairs {
        flags.set(name, text).unwrap();
    }
    flags
}

#[test]
fn a_flag_is_checked_as_the_key_in_the_file_is() {
    let mut flags = Overrides::default();
    let bad = [
        ("stop_grace", "soon"),
        ("conflict_exit_code", "0"),
        ("on_conflict", "Wait"),
    ];
    for (name, text) in bad {
        let e = flags.set(name, text).unwrap_err();
        assert!(e.contains(text), "{e}");
    }
    assert_eq!(flags, Overrides::default(), "a bad value is not kept");
    assert!(
        flags.set("grace", "1s").is_err(),
        "keys without a flag have none"
    );
}

#[test]
fn restart_exit_entries_and_window() {
    let f = parsed(
        "[restart]\nwindow = \"1h\"\n[restart.exit]\n0 = \"stop\"\n75 = \"30m\"\n137 = \"restart\"\n255 = \"0s\"\n",
    );
    assert_eq!(
        set!(f, restart.window),
        Some(Some(Duration::from_secs(3600)))
    );
    let exit = Vec::from_iter(set!(f, restart.exit).unwrap());
    assert_eq!(
        exit,
        [
            (0, ExitRule::Stop),
            (75, ExitRule::After(Duration::from_secs(1800))),
            (137, ExitRule::Backoff),
            (255, ExitRule::After(Duration::ZERO)),
        ]
    );
    // The inline spelling, as `policy show` writes it, is the same table.
    let inline = parsed(
        "[restart]\nexit = { 0 = \"stop\", 75 = \"30m\", 137 = \"restart\", 255 = \"0s\" }\n",
    );
    assert_eq!(set!(inline, restart.exit), set!(f, restart.exit));

    let cases = [
        (
            "[restart.exit]\n75 = \"later\"\n",
            "P:2:6: restart.exit.75: \"later\" is not an action; write \"stop\", \"restart\" or a delay like \"30m\"",
        ),
        (
            "[restart.exit]\n256 = \"stop\"\n",
            "P:2:1: restart.exit: 256 is out of range; use an exit code from 0 to 255 (128+N for death by signal N, 124 for a stall)",
        ),
        (
            "[restart.exit]\n99999999999 = \"stop\"\n",
            "P:2:1: restart.exit: 99999999999 is out of range; use an exit code from 0 to 255 (128+N for death by signal N, 124 for a stall)",
        ),
        (
            "[restart.exit]\n-1 = \"stop\"\n",
            "P:2:1: restart.exit: \"-1\" is not an exit code; use an exit code from 0 to 255 (128+N for death by signal N, 124 for a stall)",
        ),
        (
            "[restart.exit]\nTERM = \"stop\"\n",
            "P:2:1: restart.exit: \"TERM\" is not an exit code; use an exit code from 0 to 255 (128+N for death by signal N, 124 for a stall)",
        ),
        (
            "[restart.exit]\n7 = \"stop\"\n07 = \"restart\"\n",
            "P:3:1: restart.exit: exit code 7 is given twice; keep one",
        ),
        (
            "[restart.exit]\n75 = 30\n",
            "P:2:6: restart.exit.75 must be a string, found an integer; write \"stop\", \"restart\" or a delay like \"30m\"",
        ),
        (
            "[restart]\nexit = 3\n",
            "P:2:8: restart.exit must be a table, found an integer; write a [restart.exit] section with lines like 75 = \"30m\"",
        ),
        (
            "[restart]\nwindow = \"an hour\"\n",
            "P:2:10: restart.window: \"an hour\" is not a duration (expected number at 0); write a duration like \"30s\", \"5m\" or \"1h30m\"",
        ),
        (
            "[restart]\nwindow = 3600\n",
            "P:2:10: restart.window must be a duration string, found an integer; write a duration like \"30s\", \"5m\" or \"1h30m\"",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(error(text), want, "{text:?}");
    }
}

#[test]
fn restart_exit_flags_add_entries() {
    let mut flags = Overrides::default();
    for bad in ["75", "75=later", "256=stop", "x=stop", "75=30"] {
        assert!(flags.set("restart_exit", bad).is_err(), "{bad}");
    }
    assert_eq!(
        flags.set("restart_exit", "75"),
        Err("\"75\" is not CODE=ACTION; write it like 75=30m".into())
    );
    assert_eq!(flags, Overrides::default(), "a bad value is not kept");
    flags.set("restart_exit", "75=30m").unwrap();
    flags.set("restart_exit", " 0 = stop").unwrap();
    flags.set("restart_exit", "75=restart").unwrap();
    let e = resolve(None, &flags);
    let exit = Vec::from_iter(e.policy.restart.exit.clone());
    assert_eq!(
        exit,
        [(0, ExitRule::Stop), (75, ExitRule::Backoff)],
        "the last use of a code wins"
    );
    assert_eq!(e.sources["restart.exit"], Source::Flag);
    let shown = show(&e);
    assert!(
        shown.contains("exit = { 0 = \"stop\", 75 = \"restart\" }  # --restart-exit\n"),
        "{shown}"
    );
}

/// Integers past TOML's 64 bits: a kind that takes an integer names the number in its
/// own words, one that does not says it found an integer.
#[test]
fn integers_past_64_bits() {
    let cases = [
        (
            "[conflict]\nexit_code = 99999999999999999999\n",
            "P:2:13: conflict.exit_code: 99999999999999999999 is out of range; use an exit code from 1 to 255 (default 75)",
        ),
        (
            "[stop]\ngrace = 99999999999999999999\n",
            "P:2:9: stop.grace must be a duration string, found an integer; write a duration like \"30s\", \"5m\" or \"1h30m\"",
        ),
        (
            "[stop]\nsignal = 99999999999999999999\n",
            "P:2:10: stop.signal: 99999999999999999999 is not a signal number; use a name like \"TERM\" or \"SIGTERM\", or a number like 15",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(error(text), expected, "{text:?}");
    }
}
