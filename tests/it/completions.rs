//! The completion scripts, run in the real shells: bash (the completion function called
//! with `COMP_WORDS` set, as bash-completion calls it), zsh (an interactive zsh in a
//! pseudo-terminal, `compadd` captured) and fish (`complete -C`).
//!
//! A missing shell skips its test with a printed reason, except under CI (`CI` set),
//! where it fails: CI installs all three.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::harness::*;

const HIDDEN: [&str; 2] = ["man", "probe"];

/// Whether `shell` can run here; outside CI a missing one skips the test.
fn have(shell: &str) -> bool {
    let ok = Command::new(shell)
        .args(["-c", "exit 0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{shell} is not installed, and CI must test its completions"
        );
        println!("skipping: {shell} is not installed (apt-get install {shell})");
    }
    ok
}

/// Writes `ralph-supervise completions SHELL` into `dir/file`.
fn script(ws: &Workspace, shell: &str, file: &str) -> PathBuf {
    let out = ws.run(&["completions", shell]);
    assert_eq!(out.code(), 0, "{out:?}");
    let dir = ws.path.join(format!("completions-{shell}"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(file);
    std::fs::write(&path, out.stdout + "\n").unwrap();
    path
}

/// `PATH` with the binary's directory first.
fn path_with_bin() -> String {
    let dir = Path::new(bin()).parent().unwrap();
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}

fn assert_has(got: &[String], want: &[&str], what: &str) {
    for w in want {
        assert!(got.iter().any(|g| g == w), "{what}: no {w} in {got:?}");
    }
}

fn assert_hidden_left_out(got: &[String], what: &str) {
    for h in HIDDEN {
        assert!(!got.iter().any(|g| g == h), "{what}: hidden {h} in {got:?}");
    }
}

/// Runs a bash script with a time limit; returns its stdout.
fn run_with_limit(mut cmd: Command) -> String {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = Proc::spawn(cmd).finish();
    assert_eq!(out.code(), 0, "{out:?}");
    out.stdout
}

#[test]
fn bash_completes_subcommands_and_their_flags() {
    if !have("bash") {
        return;
    }
    let ws = Workspace::new();
    let file = script(&ws, "bash", "ralph-supervise");
    // Each query: the words typed, the last being the one completed; one line of
    // results per query, as bash-completion would call the function.
    let queries: [&[&str]; 7] = [
        &[""],
        &["stop", "--"],
        &["policy", ""],
        &["-C", "/tmp", "stop", "--ti"],
        &["run", "--on-conflict", ""],
        &["policy", "show", "--on"],
        &["help", ""],
    ];
    let mut text = format!(
        "source {}\n\
         spec=$(complete -p ralph-supervise) || exit 1\n\
         fn=${{spec#*-F }}; fn=${{fn%% *}}\n\
         q() {{\n\
           COMP_WORDS=(ralph-supervise \"$@\"); COMP_CWORD=$#\n\
           COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}; COMPREPLY=()\n\
           \"$fn\" ralph-supervise \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
           echo \"result: ${{COMPREPLY[*]}}\"\n\
         }}\n",
        file.display()
    );
    for q in queries {
        let args: Vec<String> = q.iter().map(|w| format!("'{w}'")).collect();
        text.push_str(&format!("q {}\n", args.join(" ")));
    }
    let mut cmd = Command::new("bash");
    cmd.args(["--norc", "--noprofile", "-c", &text]);
    let out = run_with_limit(cmd);
    let results: Vec<Vec<String>> = out
        .lines()
        .filter_map(|l| l.strip_prefix("result:"))
        .map(words)
        .collect();
    assert_eq!(results.len(), queries.len(), "{out}");
    assert_has(&results[0], &["run", "stop", "policy", "-C"], "top level");
    assert_hidden_left_out(&results[0], "top level");
    assert_has(
        &results[1],
        &["--signal", "--timeout", "--kill"],
        "stop --<TAB>",
    );
    assert_has(&results[2], &["show", "check"], "policy <TAB>");
    assert!(!results[2].contains(&"run".to_string()), "{:?}", results[2]);
    assert_eq!(results[3], ["--timeout"], "-C DIR stop --ti<TAB>");
    assert_has(
        &results[4],
        &["worktree", "wait", "fail", "takeover"],
        "run --on-conflict <TAB>",
    );
    assert_eq!(results[5], ["--on-conflict"], "policy show --on<TAB>");
    assert_hidden_left_out(&results[6], "help <TAB>");
}

#[test]
fn fish_completes_subcommands_and_their_flags() {
    if !have("fish") {
        return;
    }
    let ws = Workspace::new();
    let file = script(&ws, "fish", "ralph-supervise.fish");
    let queries = [
        "ralph-supervise st",
        "ralph-supervise stop --",
        "ralph-supervise policy ",
        "ralph-supervise ",
    ];
    let mut text = format!("source {}\n", file.display());
    for q in queries {
        text.push_str(&format!("echo '@@'; complete -C '{q}'\n"));
    }
    let mut cmd = Command::new("fish");
    cmd.args(["--no-config", "-c", &text])
        .env("PATH", path_with_bin())
        .env("HOME", &ws.path)
        .env("XDG_CONFIG_HOME", ws.path.join("config"))
        .env("XDG_DATA_HOME", ws.path.join("data"));
    let out = run_with_limit(cmd);
    // One candidate per line, `word<TAB>description`.
    let results: Vec<Vec<String>> = out
        .split("@@\n")
        .skip(1)
        .map(|block| {
            block
                .lines()
                .map(|l| l.split('\t').next().unwrap().to_string())
                .collect()
        })
        .collect();
    assert_eq!(results.len(), queries.len(), "{out}");
    assert_eq!(results[0], ["status", "stop"], "st<TAB>");
    assert_has(
        &results[1],
        &["--signal", "--timeout", "--kill"],
        "stop --<TAB>",
    );
    assert_has(&results[2], &["show", "check"], "policy <TAB>");
    assert_has(&results[3], &["run", "stop", "policy"], "top level");
    assert_hidden_left_out(&results[3], "top level");
}

/// Sets up an interactive zsh to complete with the script in `fpath_dir`: `compadd` is
/// wrapped to print each match as `<HIT:word>`, and Ctrl-T runs completion between
/// `<BEGIN>` and `<END>`.
const ZSH_INIT: &str = r#"PS1='ZP> '; fpath=(FPATH $fpath); autoload -Uz compinit; compinit -u -D
compadd() { if [[ "${@[1,(i)(-|--)]}" == *-(O|A|D)\ * ]]; then builtin compadd "$@"; return; fi; local -a __hits; builtin compadd -A __hits "$@"; local h; for h in $__hits; do print -rn -- "<HIT:$h>"; done; }
capture() { print -rn -- "<BEGIN>"; zle complete-word; print -rn -- "<END>"; }; zle -N capture; bindkey '^T' capture
print "READY$((40 + 2))"
"#;

#[test]
fn zsh_completes_subcommands_and_their_flags() {
    if !have("zsh") {
        return;
    }
    let ws = Workspace::new();
    let file = script(&ws, "zsh", "_ralph-supervise");
    let mut cmd = Command::new("setsid");
    cmd.args(["--ctty", "zsh", "-f", "-i"])
        .current_dir(&ws.path)
        .env("TERM", "dumb")
        .env("HOME", &ws.path)
        .env("PATH", path_with_bin());
    let mut zsh = PtyShell::spawn(cmd);
    zsh.send(&ZSH_INIT.replace("FPATH", &file.parent().unwrap().display().to_string()));
    zsh.expect("READY42");
    let mut complete = |line: &str| -> Vec<String> {
        zsh.send(&format!("{line}\x14"));
        zsh.expect("<BEGIN>");
        let hits = zsh.expect("<END>");
        // Ctrl-U: clear the line for the next query.
        zsh.send("\x15");
        hits.split("<HIT:")
            .skip(1)
            .map(|h| h.split('>').next().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        complete("ralph-supervise st"),
        ["status", "stop"],
        "st<TAB>"
    );
    assert_has(
        &complete("ralph-supervise stop --"),
        &["--signal", "--timeout", "--kill"],
        "stop --<TAB>",
    );
    assert_has(
        &complete("ralph-supervise policy "),
        &["show", "check"],
        "policy <TAB>",
    );
    let top = complete("ralph-supervise ");
    assert_has(&top, &["run", "stop", "policy"], "top level");
    assert_hidden_left_out(&top, "top level");
}
