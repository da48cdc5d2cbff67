//! The service files in `config/`: the systemd template unit and the launchd plist.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::bin;

fn config(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(rel)
}

const UNIT: &str = "systemd/ralph-supervise@.service";
const PLIST: &str = "launchd/dev.ralph.supervise.plist";

/// The unit's directives, `Section.Key` -> every value given (in order), with comments
/// and blank lines skipped. Panics on a line that is none of those.
fn directives(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut section = String::new();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        assert!(
            !line.ends_with('\\'),
            "line {}: no continuation lines, please",
            n + 1
        );
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {}: not a directive: {line}", n + 1));
        assert!(
            !section.is_empty(),
            "line {}: directive outside a section",
            n + 1
        );
        out.entry(format!("{section}.{}", key.trim()))
            .or_default()
            .push(value.trim().to_string());
    }
    out
}

#[test]
fn the_unit_has_the_required_directives() {
    let text = std::fs::read_to_string(config(UNIT)).unwrap();
    let d = directives(&text);
    let one = |key: &str| -> &str {
        let values = d.get(key).unwrap_or_else(|| panic!("{key} missing"));
        assert_eq!(values.len(), 1, "{key} given more than once: {values:?}");
        &values[0]
    };
    assert_eq!(one("Service.Type"), "notify");
    assert_eq!(one("Service.NotifyAccess"), "main");
    assert_eq!(one("Service.KillMode"), "mixed");
    // The agent's cgroup is made below the service's (containment, limits, accounting);
    // a read-only cgroup file system would forbid that.
    assert_eq!(one("Service.Delegate"), "yes");
    assert!(!d.contains_key("Service.ProtectControlGroups"));
    assert_eq!(one("Service.Restart"), "on-failure");
    assert_eq!(one("Service.WorkingDirectory"), "%f");
    let mut prevent: Vec<&str> = one("Service.RestartPreventExitStatus")
        .split_whitespace()
        .collect();
    prevent.sort();
    assert_eq!(prevent, ["75", "78"]);

    // Longer than the supervisor's default stop grace (10s), so it can clean up.
    let stop = one("Service.TimeoutStopSec");
    let stop = ralph_supervise::cli::parse_duration(stop).expect("TimeoutStopSec");
    assert!(stop > std::time::Duration::from_secs(10), "{stop:?}");
    // Waiting for the lock happens before READY=1: no start timeout may cut it short.
    assert_eq!(one("Service.TimeoutStartSec"), "infinity");

    let exec = one("Service.ExecStart");
    let argv: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(argv[0], "/usr/local/bin/ralph-supervise");
    let run = argv.iter().position(|a| *a == "run").expect("run");
    let c = argv.iter().position(|a| *a == "-C").expect("-C");
    assert!(c < run, "-C goes before run: {exec}");
    assert!(
        argv[c + 1].contains("%f"),
        "-C takes the instance path: {exec}"
    );
    let dashes = argv.iter().position(|a| *a == "--").expect("--");
    assert!(run < dashes && dashes + 1 < argv.len(), "{exec}");
    assert_eq!(&argv[run + 1..dashes], ["--on-conflict", "wait"]);

    assert_eq!(one("Install.WantedBy"), "multi-user.target");
    // The hardening never hides the workspace or home directory.
    assert!(!d.contains_key("Service.ProtectHome"));
    assert_ne!(
        d.get("Service.ProtectSystem").map(|v| v[0].as_str()),
        Some("strict")
    );
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipping: systemd-analyze is not installed");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // The unit as installed, pointing at the binary under test (verify checks that the
    // ExecStart program exists), instantiated for the workspace /tmp.
    let text = std::fs::read_to_string(config(UNIT))
        .unwrap()
        .replace("/usr/local/bin/ralph-supervise", bin());
    assert!(text.contains(bin()));
    let unit = tmp.path().join("ralph-supervise@.service");
    std::fs::write(&unit, text).unwrap();
    let instance = tmp.path().join("ralph-supervise@tmp.service");

    // Documentation= names our man pages: install them where man looks for them.
    let manpath = tmp.path().join("man");
    for (name, bytes) in ralph_supervise::man::render(ralph_supervise::cli::command()) {
        let section = name.rsplit('.').next().unwrap();
        let dir = manpath.join(format!("man{section}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    }

    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&instance)
        .env("MANPATH", &manpath)
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("ralph-supervise"))
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify (exit {:?}):\n{stderr}",
        out.status.code()
    );
}

#[test]
fn the_plist_parses_and_has_the_required_keys() {
    let check = r#"
import json, plistlib, sys
with open(sys.argv[1], "rb") as f:
    p = plistlib.load(f)
print(json.dumps(p))
"#;
    let out = match Command::new("python3")
        .args(["-c", check])
        .arg(config(PLIST))
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            eprintln!("skipping: python3 cannot be run: {e}");
            return;
        }
    };
    assert!(
        out.status.success(),
        "plistlib cannot read {PLIST}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    assert_eq!(p["Label"], "dev.ralph.supervise");
    let args: Vec<&str> = p["ProgramArguments"]
        .as_array()
        .expect("ProgramArguments is an array")
        .iter()
        .map(|a| a.as_str().expect("strings"))
        .collect();
    assert!(args[0].ends_with("/ralph-supervise"), "{args:?}");
    let run = args
        .iter()
        .position(|a| *a == "run")
        .expect("run in ProgramArguments");
    let dashes = args.iter().position(|a| *a == "--").expect("--");
    assert!(run < dashes && dashes + 1 < args.len(), "{args:?}");
    let c = args.iter().position(|a| *a == "-C").expect("-C");
    assert_eq!(
        p["WorkingDirectory"].as_str(),
        Some(args[c + 1]),
        "WorkingDirectory is the workspace given to -C"
    );
    assert_eq!(p["KeepAlive"]["SuccessfulExit"], false);
    assert!(
        p["ExitTimeOut"].as_u64().expect("ExitTimeOut") > 10,
        "ExitTimeOut must exceed the default stop grace"
    );
    for key in ["StandardOutPath", "StandardErrorPath"] {
        assert!(
            p[key].as_str().is_some_and(|s| s.starts_with('/')),
            "{key} is an absolute path"
        );
    }
    assert_eq!(p["ProcessType"], "Background");
}
