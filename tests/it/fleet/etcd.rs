//! Real etcd members for the fleet tests: Debian's `etcd` on loopback ports in a temp
//! dir, one member or a cluster of three, killed (continued first, if stopped) on drop.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::harness::wait_until;

/// Whether etcd is here; outside CI a missing one skips the test (with the reason
/// printed), in CI (`CI` set) it fails it.
pub fn available() -> bool {
    let found = [("etcd", "--version"), ("etcdctl", "version")]
        .iter()
        .all(|(tool, arg)| {
            Command::new(tool)
                .arg(arg)
                .env("ETCDCTL_API", "3")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "etcd and etcdctl are needed for the fleet tests (Debian: etcd-server, etcd-client); .ci/run installs them"
        );
        eprintln!("skipped: etcd or etcdctl not installed (Debian: etcd-server, etcd-client)");
    }
    found
}

/// A free loopback port (bound and let go; the member binds it right after).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Member {
    child: Child,
    pub client_url: String,
    stopped: bool,
}

pub struct Cluster {
    _dir: tempfile::TempDir,
    pub members: Vec<Member>,
}

impl Cluster {
    /// Starts `n` members and waits until the cluster answers.
    pub fn start(n: usize) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial: Vec<String> = (ports.iter().enumerate())
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect();
        let initial = initial.join(",");
        let token = format!("t{}", std::process::id());
        let members = (ports.iter().enumerate())
            .map(|(i, (client, peer))| {
                let client_url = format!("http://127.0.0.1:{client}");
                let peer_url = format!("http://127.0.0.1:{peer}");
                let data: PathBuf = dir.path().join(format!("m{i}"));
                let log = std::fs::File::create(dir.path().join(format!("m{i}.log"))).unwrap();
                let child = Command::new("etcd")
                    .args(["--name", &format!("m{i}")])
                    .arg("--data-dir")
                    .arg(&data)
                    .args(["--listen-client-urls", &client_url])
                    .args(["--advertise-client-urls", &client_url])
                    .args(["--listen-peer-urls", &peer_url])
                    .args(["--initial-advertise-peer-urls", &peer_url])
                    .args(["--initial-cluster", &initial])
                    .args(["--initial-cluster-state", "new"])
                    .args(["--initial-cluster-token", &token])
                    .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().unwrap())
                    .stderr(log)
                    .spawn()
                    .expect("etcd");
                Member {
                    child,
                    client_url,
                    stopped: false,
                }
            })
            .collect();
        let cluster = Cluster { _dir: dir, members };
        wait_until("etcd to answer", Duration::from_secs(30), || {
            cluster
                .etcdctl(&["put", "ralph-supervise-test/ready", "1"])
                .status
                .success()
        });
        cluster
    }

    /// Every member's client URL, comma-separated.
    pub fn endpoints(&self) -> String {
        let urls: Vec<&str> = self.members.iter().map(|m| m.client_url.as_str()).collect();
        urls.join(",")
    }

    /// `etcdctl --endpoints <all> args`.
    pub fn etcdctl(&self, args: &[&str]) -> std::process::Output {
        self.etcdctl_cmd(args).output().expect("etcdctl")
    }

    pub fn etcdctl_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoints()])
            .args(["--dial-timeout", "2s", "--command-timeout", "5s"])
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// The index of a member that is not the leader (freezing it costs no election).
    pub fn follower(&self) -> usize {
        let out = self.etcdctl(&["endpoint", "status", "-w", "json"]);
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status");
        let statuses = status.as_array().expect("one status per endpoint");
        (self.members.iter().enumerate())
            .find_map(|(i, m)| {
                let s = statuses
                    .iter()
                    .find(|s| s["Endpoint"] == m.client_url.as_str())?;
                let header = &s["Status"]["header"];
                (header["member_id"] != s["Status"]["leader"]).then_some(i)
            })
            .expect("a follower")
    }

    /// SIGSTOP member `i` (its peers keep quorum; its clients hear nothing).
    pub fn freeze(&mut self, i: usize) {
        let m = &mut self.members[i];
        kill(Pid::from_raw(m.child.id() as i32), Signal::SIGSTOP).unwrap();
        m.stopped = true;
    }

    pub fn thaw(&mut self, i: usize) {
        let m = &mut self.members[i];
        kill(Pid::from_raw(m.child.id() as i32), Signal::SIGCONT).unwrap();
        m.stopped = false;
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        if self.stopped {
            let _ = kill(pid, Signal::SIGCONT);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
