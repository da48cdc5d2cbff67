//! Real etcd members for the fleet tests: Debian's `etcd` on loopback ports in a temp
//! dir, one member or a cluster of three, killed (continued first, if stopped) on drop;
//! or one member serving TLS and asking for client certificates, with certificates
//! made by openssl ([`Tls`]).

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

/// A certificate authority, etcd's certificate for 127.0.0.1 and a client certificate,
/// made by openssl in a temp dir; and a second authority, which signed another client
/// certificate (`other-client.pem`).
pub struct Tls {
    dir: tempfile::TempDir,
}

impl Tls {
    /// `None` without openssl: the reason printed, or a failure under CI.
    pub fn make() -> Option<Tls> {
        let tls = Tls {
            dir: tempfile::tempdir().unwrap(),
        };
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(tls.dir.path())
                .output();
            match out {
                Ok(out) if out.status.success() => true,
                Ok(out) => panic!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr)),
                Err(_) => false,
            }
        };
        let new_key = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        for ca in ["ca", "other-ca"] {
            let (key, pem, subject) = (
                format!("{ca}.key"),
                format!("{ca}.pem"),
                format!("/CN={ca}"),
            );
            let mut args = vec!["req", "-x509", "-days", "2", "-subj", &subject];
            args.extend(new_key);
            args.extend(["-keyout", &key, "-out", &pem]);
            if !openssl(&args) {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "openssl is needed for the fleet TLS test (Debian: openssl); .ci/run installs it"
                );
                eprintln!("skipped: openssl not installed (Debian: openssl)");
                return None;
            }
        }
        let signed = [
            ("server", "serverAuth", "ca"),
            ("client", "clientAuth", "ca"),
            ("other-client", "clientAuth", "other-ca"),
        ];
        for (name, usage, ca) in signed {
            let (key, csr, pem) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
            );
            let ext = format!("{name}.ext");
            let text = format!("subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\n");
            std::fs::write(tls.dir.path().join(&ext), text).unwrap();
            let subject = format!("/CN={name}");
            let mut args = vec!["req", "-subj", &subject];
            args.extend(new_key);
            args.extend(["-keyout", &key, "-out", &csr]);
            assert!(openssl(&args));
            let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
            let mut args = vec!["x509", "-req", "-in", &csr, "-days", "2", "-extfile", &ext];
            args.extend([
                "-CA",
                &ca_pem,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &pem,
            ]);
            assert!(openssl(&args));
        }
        Some(tls)
    }

    /// A file made: `ca.pem`, `other-ca.pem`, `client.pem`, `client.key`, ...
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

pub struct Member {
    child: Child,
    pub client_url: String,
    stopped: bool,
    /// How it was started, to start it again on the same data ([`Cluster::restart`]).
    argv: Vec<std::ffi::OsString>,
    log: PathBuf,
}

pub struct Cluster {
    _dir: tempfile::TempDir,
    pub members: Vec<Member>,
    /// With TLS: the authority, and etcdctl's client certificate and key.
    tls: Option<[PathBuf; 3]>,
    /// With authentication on: etcdctl's `--user` (root).
    root: Option<String>,
}

/// The user [`Cluster::enable_auth`] makes for ralph-supervise, and its password.
pub const USER: (&str, &str) = ("ralph", "Ra1ph-pw");

impl Cluster {
    /// Starts `n` members and waits until the cluster answers.
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with(n, None, &[])
    }

    /// Starts `n` members with these extra etcd flags.
    pub fn start_args(n: usize, args: &[&str]) -> Cluster {
        Cluster::start_with(n, None, args)
    }

    /// One member serving https with `tls`'s certificate and asking every client for a
    /// certificate its authority signed.
    pub fn start_tls(tls: &Tls) -> Cluster {
        Cluster::start_with(1, Some(tls), &[])
    }

    fn start_with(n: usize, tls: Option<&Tls>, extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial: Vec<String> = (ports.iter().enumerate())
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect();
        let initial = initial.join(",");
        let token = format!("t{}", std::process::id());
        let members = (ports.iter().enumerate())
            .map(|(i, (client, peer))| {
                let client_url = format!("{scheme}://127.0.0.1:{client}");
                let peer_url = format!("http://127.0.0.1:{peer}");
                let data: PathBuf = dir.path().join(format!("m{i}"));
                let log_path = dir.path().join(format!("m{i}.log"));
                let mut etcd = Command::new("etcd");
                if let Some(tls) = tls {
                    let file = |name| tls.file(name);
                    etcd.arg("--cert-file").arg(file("server.pem"));
                    etcd.arg("--key-file").arg(file("server.key"));
                    etcd.arg("--trusted-ca-file").arg(file("ca.pem"));
                    etcd.arg("--client-cert-auth");
                }
                etcd.args(["--name", &format!("m{i}")])
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
                    .args(extra);
                let argv: Vec<_> = etcd.get_args().map(|a| a.to_os_string()).collect();
                Member {
                    child: spawn_etcd(&argv, &log_path),
                    client_url,
                    stopped: false,
                    argv,
                    log: log_path,
                }
            })
            .collect();
        let tls = tls.map(|tls| ["ca.pem", "client.pem", "client.key"].map(|f| tls.file(f)));
        let cluster = Cluster {
            _dir: dir,
            members,
            tls,
            root: None,
        };
        cluster.wait_ready();
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
            .args(["--dial-timeout", "2s", "--command-timeout", "5s"]);
        if let Some([ca, cert, key]) = &self.tls {
            cmd.arg("--cacert").arg(ca);
            cmd.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        if let Some(root) = &self.root {
            cmd.args(["--user", root]);
        }
        cmd.args(args).stdin(Stdio::null());
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

    /// SIGKILLs member `i` (and reaps it).
    pub fn kill(&mut self, i: usize) {
        let m = &mut self.members[i];
        let _ = m.child.kill();
        let _ = m.child.wait();
    }

    /// Kills every member and starts them again on their data; waits until the
    /// cluster answers.
    pub fn restart(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        for m in &mut self.members {
            m.child = spawn_etcd(&m.argv, &m.log);
        }
        self.wait_ready();
    }

    fn wait_ready(&self) {
        wait_until("etcd to answer", Duration::from_secs(30), || {
            self.etcdctl(&["put", "ralph-supervise-test/ready", "1"])
                .status
                .success()
        });
    }

    /// Turns authentication on: a root user, and [`USER`] with read and write on
    /// `ralph-supervise/` only; etcdctl uses root from then on.
    pub fn enable_auth(&mut self) {
        let ok = |c: &Cluster, args: &[&str]| {
            let out = c.etcdctl(args);
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let user = format!("{}:{}", USER.0, USER.1);
        ok(
            self,
            &["user", "add", "root:R00t-pw", "--interactive=false"],
        );
        ok(self, &["user", "add", &user, "--interactive=false"]);
        ok(self, &["role", "add", "rs"]);
        ok(
            self,
            &[
                "role",
                "grant-permission",
                "rs",
                "readwrite",
                "--prefix=true",
                "ralph-supervise/",
            ],
        );
        ok(self, &["user", "grant-role", USER.0, "rs"]);
        ok(self, &["auth", "enable"]);
        self.root = Some("root:R00t-pw".into());
    }

    /// The current revision (etcd's header).
    pub fn revision(&self) -> i64 {
        let out = self.etcdctl(&["endpoint", "status", "-w", "json"]);
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status");
        (status.as_array().into_iter().flatten())
            .filter_map(|s| s["Status"]["header"]["revision"].as_i64())
            .max()
            .expect("a revision")
    }

    /// A few puts, then a compaction at the current revision: every watch from before
    /// it is cancelled.
    pub fn compact(&self) {
        for _ in 0..3 {
            assert!(
                self.etcdctl(&["put", "ralph-supervise-test/x", "1"])
                    .status
                    .success()
            );
        }
        let rev = self.revision().to_string();
        let out = self.etcdctl(&["compact", &rev]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn spawn_etcd(argv: &[std::ffi::OsString], log: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new("etcd")
        .args(argv)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("etcd")
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
