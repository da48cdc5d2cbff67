//! The default fleet key: the repository's `origin` URL and the current branch, so that
//! clones of one repository on different hosts, on the same branch, name one lock
//! without configuration. URLs are normalised (scheme, user, password, port and `.git`
//! dropped; `host:path` scp syntax read as `host/path`; the host lower-cased), so that
//! `git@github.com:acme/api.git` and `https://github.com/acme/api` give the same key. On
//! GitHub, GitLab and Bitbucket, whose paths are case-insensitive, the path is
//! lower-cased too (`Acme/API` is `acme/api` there); elsewhere its case is kept.

use std::path::Path;

use crate::exit::{ExitStatus, Failure};
use crate::worktree::git;

/// What `run` says to do when no key can be made.
pub(crate) const FIX_RUN: &str = "set [fleet] key in the policy or pass --fleet-key";
/// What `status --fleet` says (it takes no `--fleet-key`, nor `--policy`).
pub(crate) const FIX_STATUS: &str = "set [fleet] key in the policy (.ralph/supervise.toml, or the file $RALPH_SUPERVISE_POLICY names), or run it in a clone of the repository (or name one with -C)";

/// `github.com/acme/api/main` for the repository at `repo`, from `origin` and the branch
/// checked out; a clear error when either is missing, saying to do `fix`.
pub(crate) fn default_key(repo: Option<&Path>, fix: &str) -> Result<String, Failure> {
    let Some(repo) = repo else {
        let msg = format!("fleet mode: no key, and not in a git repository to make one; {fix}");
        return Err(Failure::msg(ExitStatus::Usage, msg));
    };
    let out = git::run(repo, ["remote", "get-url", "origin"], None)?;
    if !out.ok {
        let msg = format!(
            "fleet mode: no key, and {} has no remote \"origin\" to make one from; {fix}",
            repo.display()
        );
        return Err(Failure::msg(ExitStatus::Usage, msg));
    }
    let Some(branch) = crate::worktree::current_branch(repo) else {
        let msg = format!(
            "fleet mode: no key, and {} has no branch checked out (detached HEAD) to make one from; {fix}",
            repo.display()
        );
        return Err(Failure::msg(ExitStatus::Usage, msg));
    };
    Ok(key_from(&out.text(), &branch))
}

/// The key for remote URL `url` and branch `branch`.
pub(crate) fn key_from(url: &str, branch: &str) -> String {
    let key = format!("{}/{}", normalise_url(url), branch);
    clean(&key)
}

/// `host/org/repo` from any of git's URL forms.
pub(crate) fn normalise_url(url: &str) -> String {
    let url = url.trim();
    let (host, path) = match url.split_once("://") {
        Some((_scheme, rest)) => rest.split_once('/').unwrap_or((rest, "")),
        // scp-like `user@host:path`; a local path otherwise.
        None => match url.split_once(':') {
            Some((host, path)) if !host.contains('/') => (host, path),
            _ => ("", url),
        },
    };
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    let path = path.trim_end_matches('/');
    if host.is_empty() {
        return path.to_string();
    }
    let host = host.to_ascii_lowercase();
    let host = (FORGES.iter())
        .find(|(name, ssh)| host == *name || host == *ssh)
        .map_or(host.as_str(), |(name, _)| name);
    match FORGES.iter().any(|(name, _)| host == *name) {
        // `Acme/API` and `acme/api` are one repository there.
        true => format!("{host}/{}", path.to_ascii_lowercase()),
        false => format!("{host}/{path}"),
    }
}

/// Hosts whose repository paths are case-insensitive, with the other name their SSH
/// service answers to (on port 443). Elsewhere a path's case is kept: on a plain git
/// server, as on its file system, `Acme/api` and `acme/api` may be two repositories.
const FORGES: [(&str, &str); 3] = [
    ("github.com", "ssh.github.com"),
    ("gitlab.com", "altssh.gitlab.com"),
    ("bitbucket.org", "altssh.bitbucket.org"),
];

/// Characters outside `[A-Za-z0-9._/-]` become `-`; empty parts are dropped.
fn clean(key: &str) -> String {
    let mapped: String = key
        .chars()
        .map(|c| match c.is_ascii_alphanumeric() || "._/-".contains(c) {
            true => c,
            false => '-',
        })
        .collect();
    let parts: Vec<&str> = mapped.split('/').filter(|p| !p.is_empty()).collect();
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_repository_one_key_whatever_the_url_form() {
        let forms = [
            "git@github.com:acme/api.git",
            "https://github.com/acme/api",
            "https://github.com/acme/api.git/",
            "https://alice:s3cret@github.com/acme/api.git",
            "ssh://git@GitHub.com:22/acme/api.git",
            "git+ssh://git@github.com/acme/api",
            "https://github.com/Acme/API.git",
            "ssh://git@ssh.github.com:443/ACME/api.git",
        ];
        for url in forms {
            assert_eq!(key_from(url, "main"), "github.com/acme/api/main", "{url}");
        }
        let gitlab = [
            "git@gitlab.com:Acme/Group/API.git",
            "https://gitlab.com/acme/group/api",
        ];
        for url in gitlab {
            assert_eq!(
                key_from(url, "dev"),
                "gitlab.com/acme/group/api/dev",
                "{url}"
            );
        }
        // Branches are case-sensitive everywhere, and so are paths on other hosts.
        assert_eq!(
            key_from("https://github.com/acme/api", "Main"),
            "github.com/acme/api/Main"
        );
        assert_eq!(
            key_from("git@Git.Example.com:Acme/API.git", "main"),
            "git.example.com/Acme/API/main"
        );
    }

    #[test]
    fn credentials_never_reach_the_key() {
        let key = key_from("https://bob:hunter2@git.example.org/x/y", "dev");
        assert_eq!(key, "git.example.org/x/y/dev");
        assert!(!key.contains("hunter2"));
    }

    #[test]
    fn odd_characters_are_replaced_and_the_result_is_a_valid_key() {
        let key = key_from("/srv/git/my repo.git", "feature/ünïcode+x");
        assert_eq!(key, "srv/git/my-repo/feature/-n-code-x");
        assert!(crate::fleet_settings::check_fleet_key(&key).is_ok());
    }
}
