//! The command's environment: the policy's `[run.env]`, then the variables ralph-supervise
//! sets or removes for every run over it ([`apply`]). A `[run.env]` name among those is
//! refused when the policy is read ([`EnvName`]): its value would be silently lost.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde::de::{Deserialize, Deserializer};

/// The variables ralph-supervise sets or removes for the command itself, after `[run.env]`
/// ([`apply`], and `RALPH_LOCK_FD` in `supervisor::spawn`): a value for them there would
/// be silently lost.
const OWN_ENV: [&str; 7] = [
    "RALPH_LOCK_FD",
    "RALPH_WORKSPACE_ROOT",
    "RALPH_LOOP_INDEX",
    "RALPH_FENCING_TOKEN",
    "RALPH_SUPERVISE_ETCD_USER",
    "RALPH_SUPERVISE_ETCD_PASSWORD",
    "NOTIFY_SOCKET",
];
#[derive(serde::Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(try_from = "String")]
/// A `[run.env]` variable name.
pub(crate) struct EnvName(pub(crate) String);
impl TryFrom<String> for EnvName {
    type Error = String;
    fn try_from(name: String) -> Result<EnvName, String> {
        if name.is_empty() || name.contains(['=', '\0']) {
            let use_ = "use a name without = or NUL, like RUST_LOG";
            return Err(format!("{name:?} is not a usable variable name; {use_}"));
        }
        match OWN_ENV.contains(&name.as_str()) {
            true => Err(format!(
                "{name} is ralph-supervise's to set (or remove) for every run, over [run.env]; remove it"
            )),
            false => Ok(EnvName(name)),
        }
    }
}

/// A `[run.env]` value.
pub(crate) struct EnvValue(pub(crate) String);
impl<'de> Deserialize<'de> for EnvValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<EnvValue, D::Error> {
        crate::setting::checked_str(d, |text| match text.contains('\0') {
            true => Err("the value contains a NUL character; remove it".into()),
            false => Ok(EnvValue(text)),
        })
    }
}

/// Sets the command's environment: `[run.env]` (`env`), then ours over it: the workspace
/// root and loop index, the fleet's fencing token (`token`, in fleet mode); the notify
/// socket and the etcd credentials removed.
pub(crate) fn apply(
    cmd: &mut Command,
    env: &BTreeMap<String, String>,
    workspace: &Path,
    loop_index: u32,
    token: Option<i64>,
) {
    cmd.envs(env);
    // The notify socket is ours: a child (say `ralph run`) must not report READY for us.
    cmd.env_remove(crate::notify::ENV);
    // ralph takes its workspace root from this, so it must name the workspace we locked.
    cmd.env("RALPH_WORKSPACE_ROOT", workspace);
    // Distinct among the repository's live loops, for port offsets.
    cmd.env("RALPH_LOOP_INDEX", loop_index.to_string());
    // Fleet mode: larger for every later holder of the key, on any host.
    cmd.env_remove("RALPH_FENCING_TOKEN");
    // The etcd credentials are the supervisor's, not the agent's (`main` has taken them
    // out of our own environment already: `fleet_settings::take_credentials`).
    cmd.env_remove("RALPH_SUPERVISE_ETCD_USER");
    cmd.env_remove("RALPH_SUPERVISE_ETCD_PASSWORD");
    if let Some(token) = token {
        cmd.env("RALPH_FENCING_TOKEN", token.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`OWN_ENV`] names exactly what [`apply`] sets or removes over `[run.env]`, with
    /// `RALPH_LOCK_FD`, which the spawn sets.
    #[test]
    fn own_env_is_what_apply_sets() {
        let mut cmd = Command::new("true");
        let env = BTreeMap::from([("A".to_string(), "1".to_string())]);
        apply(&mut cmd, &env, Path::new("/ws"), 3, Some(7));
        let mut set: Vec<String> = cmd
            .get_envs()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        set.retain(|name| name != "A");
        set.push("RALPH_LOCK_FD".into());
        set.sort();
        let mut own = OWN_ENV.map(String::from).to_vec();
        own.sort();
        assert_eq!(set, own);
        assert_eq!(
            EnvName::try_from("RALPH_LOOP_INDEX".to_string())
                .err()
                .unwrap(),
            "RALPH_LOOP_INDEX is ralph-supervise's to set (or remove) for every run, over [run.env]; remove it"
        );
        assert!(EnvName::try_from("RUST_LOG".to_string()).is_ok());
    }
}
