//! Shell completion scripts, generated from the clap command by `clap_complete`.
//!
//! Install (the file names each shell looks for):
//!
//! - bash: `ralph-supervise completions bash > /usr/share/bash-completion/completions/ralph-supervise`
//! - zsh: `ralph-supervise completions zsh > /usr/share/zsh/site-functions/_ralph-supervise`
//! - fish: `ralph-supervise completions fish > /usr/share/fish/vendor_completions.d/ralph-supervise.fish`

use std::io::Write;

pub(crate) use clap_complete::Shell;

/// Writes the completion script for `shell` to `out`. The command's name (normally
/// `ralph-supervise`) is the name completed. Hidden subcommands (`man`, `probe`) and
/// hidden flags are left out.
///
/// `Shell` also has variants for elvish and PowerShell; they work the same way.
pub(crate) fn generate(shell: Shell, cmd: clap::Command, out: &mut dyn Write) {
    let name = cmd.get_name().to_string();
    let mut cmd = visible(&cmd);
    if shell != Shell::Bash || !name.contains('-') {
        clap_complete::generate(shell, &mut cmd, name, out);
        return;
    }
    // clap_complete's bash script names the states of its word loop from the binary
    // name with `-` spelt `__` in one place and `__subcmd__` in another, so for a dashed
    // name no case label below the top level matches and subcommands get nothing. Have
    // it spell a name without dashes, then complete the real name.
    let spelt = name.replace('-', "_");
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, spelt.clone(), &mut script);
    let script = String::from_utf8_lossy(&script);
    let mut fixed = String::with_capacity(script.len());
    for line in script.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        match body.strip_suffix(&format!(" {spelt}")) {
            Some(head) if body.trim_start().starts_with("complete ") => {
                fixed.push_str(&format!("{head} {name}\n"));
            }
            _ => fixed.push_str(line),
        }
    }
    let _ = out.write_all(fixed.as_bytes());
}

/// `cmd` without its hidden subcommands (clap_complete offers them all), rebuilt: clap
/// has no way to remove a subcommand.
fn visible(cmd: &clap::Command) -> clap::Command {
    // clap wants `'static` names; this runs once, in a process that prints and exits.
    fn leak(s: &str) -> &'static str {
        Box::leak(s.to_owned().into_boxed_str())
    }
    let mut out = clap::Command::new(leak(cmd.get_name()))
        .args(cmd.get_arguments().filter(|a| !a.is_hide_set()).cloned())
        .groups(cmd.get_groups().cloned())
        .subcommands(
            cmd.get_subcommands()
                .filter(|s| !s.is_hide_set())
                .map(visible),
        )
        .visible_aliases(cmd.get_visible_aliases().map(leak).collect::<Vec<_>>())
        .subcommand_required(cmd.is_subcommand_required_set())
        .arg_required_else_help(cmd.is_arg_required_else_help_set())
        .disable_help_subcommand(cmd.is_disable_help_subcommand_set())
        .disable_version_flag(cmd.is_disable_version_flag_set())
        .propagate_version(cmd.is_propagate_version_set());
    if let Some(about) = cmd.get_about() {
        out = out.about(about.clone());
    }
    if let Some(about) = cmd.get_long_about() {
        out = out.long_about(about.clone());
    }
    if let Some(version) = cmd.get_version() {
        out = out.version(leak(version));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_shell_gets_a_script_that_knows_run() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut out = Vec::new();
            generate(shell, crate::cli::command(), &mut out);
            let text = String::from_utf8(out).expect("UTF-8");
            assert!(!text.is_empty(), "{shell}: empty");
            assert!(text.contains("run"), "{shell}: no `run` in\n{text}");
            assert!(text.contains("ralph-supervise"), "{shell}: no command name");
            assert!(text.contains("stop-grace"), "{shell}: no run flags");
        }
    }
}
