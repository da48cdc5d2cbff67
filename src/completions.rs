//! Shell completion scripts, generated from the clap command by `clap_complete`.
//!
//! Install (the file names each shell looks for):
//!
//! - bash: `ralph-supervise completions bash > /usr/share/bash-completion/completions/ralph-supervise`
//! - zsh: `ralph-supervise completions zsh > /usr/share/zsh/site-functions/_ralph-supervise`
//! - fish: `ralph-supervise completions fish > /usr/share/fish/vendor_completions.d/ralph-supervise.fish`

use std::io::Write;

pub use clap_complete::Shell;

/// Writes the completion script for `shell` to `out`. The command's name (normally
/// `ralph-supervise`) is the name completed. Hidden flags are left out; hidden
/// subcommands are still offered by some shells' scripts (a `clap_complete` limitation).
///
/// `Shell` also has variants for elvish and PowerShell; they work the same way.
pub fn generate(shell: Shell, cmd: clap::Command, out: &mut dyn Write) {
    let mut cmd = cmd;
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell, &mut cmd, name, out);
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
