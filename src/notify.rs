//! sd_notify(3) without libsystemd: readiness and status for `Type=notify` units.
//!
//! systemd passes the address of its notification socket in `$NOTIFY_SOCKET`: a
//! filesystem path (`/run/systemd/notify`) or an abstract socket name written with a
//! leading `@`. A message is one datagram of newline-separated `KEY=VALUE` assignments
//! (`READY=1`, `STATUS=...`, `STOPPING=1`), sent with `sendto` on an unbound
//! `AF_UNIX`/`SOCK_DGRAM` socket.
//!
//! Notification is best effort: a service must not die because the notify socket went
//! away, so failures are logged at debug level (the first one; later ones at trace) and
//! otherwise ignored.
//!
//! The socket is close-on-exec (std opens every socket with `SOCK_CLOEXEC`), so the
//! child never inherits it. `$NOTIFY_SOCKET` itself is left in the environment; whoever
//! spawns the child should remove it ([`ENV`]) so that the child does not mistake
//! itself for the service's main process.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The environment variable systemd sets for `Type=notify` services.
pub(crate) const ENV: &str = "NOTIFY_SOCKET";

/// How long one send may block when systemd's receive queue is full. Long enough for
/// a busy systemd to catch up, short enough not to stall the supervisor's event loop.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub(crate) struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// What `$NOTIFY_SOCKET` said, for log messages.
    name: OsString,
    /// Whether a failure was already logged at debug level.
    failed_once: AtomicBool,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` names; `None` when the variable is unset or empty
    /// (not running under systemd) or the address cannot be used (logged at debug).
    pub(crate) fn from_env() -> Option<Notifier> {
        let value = std::env::var_os(ENV)?;
        if value.is_empty() {
            return None;
        }
        match Notifier::new(&value) {
            Ok(notifier) => Some(notifier),
            Err(e) => {
                tracing::debug!(
                    "${ENV}={}: not notifying systemd: {e}",
                    value.to_string_lossy()
                );
                None
            }
        }
    }

    /// A notifier for one address in `$NOTIFY_SOCKET` syntax: an absolute or relative
    /// filesystem path, or `@name` for the abstract socket `name`.
    pub(crate) fn new(address: &OsStr) -> io::Result<Notifier> {
        let bytes = address.as_bytes();
        let addr = match bytes.split_first() {
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "empty notify socket address",
                ));
            }
            Some((b'@', name)) => crate::sys::abstract_socket_addr(name)?,
            Some(_) => SocketAddr::from_pathname(address)?,
        };
        let socket = UnixDatagram::unbound()?;
        socket.set_write_timeout(Some(SEND_TIMEOUT))?;
        Ok(Notifier {
            socket,
            addr,
            name: address.to_owned(),
            failed_once: AtomicBool::new(false),
        })
    }

    /// `STATUS=<text>`: a one-line status shown by `systemctl status`. Control
    /// characters in `text` are escaped (a newline would start a new assignment).
    pub(crate) fn status(&self, text: &str) -> bool {
        self.send(&format!("STATUS={}", one_line(text)))
    }

    /// `READY=1` and `STATUS=<text>` in one datagram.
    pub(crate) fn ready_with_status(&self, text: &str) -> bool {
        self.send(&format!("READY=1\nSTATUS={}", one_line(text)))
    }

    /// `STOPPING=1`: the service is shutting down.
    pub(crate) fn stopping(&self) -> bool {
        self.send("STOPPING=1")
    }

    /// Sends `message` as is, in one datagram. Returns whether it was sent; a failure
    /// is logged (at debug level the first time, at trace level after) and ignored.
    pub(crate) fn send(&self, message: &str) -> bool {
        match self.socket.send_to_addr(message.as_bytes(), &self.addr) {
            Ok(_) => true,
            Err(e) => {
                let name = self.name.to_string_lossy();
                if self.failed_once.swap(true, Ordering::Relaxed) {
                    tracing::trace!("notify {name}: {message:?} not sent: {e}");
                } else {
                    tracing::debug!("notify {name}: {message:?} not sent: {e} (ignored)");
                }
                false
            }
        }
    }
}

/// `text` on one line, with no control character (the escaping of everything
/// ralph-supervise prints: a newline would end the assignment).
fn one_line(text: &str) -> String {
    crate::present::escape(text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::linux::net::SocketAddrExt;

    fn recv(socket: &UnixDatagram) -> Vec<u8> {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = socket.recv(&mut buf).expect("a datagram");
        buf.truncate(n);
        buf
    }

    #[test]
    fn filesystem_socket_gets_each_message_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::new(path.as_os_str()).unwrap();

        assert!(notifier.send("READY=1"));
        assert_eq!(recv(&server), b"READY=1");
        assert!(notifier.status("running pid 42 as primary"));
        assert_eq!(recv(&server), b"STATUS=running pid 42 as primary");
        assert!(notifier.status("two\nlines"));
        assert_eq!(recv(&server), b"STATUS=two\\nlines");
        assert!(notifier.ready_with_status("up"));
        assert_eq!(recv(&server), b"READY=1\nSTATUS=up");
        assert!(notifier.stopping());
        assert_eq!(recv(&server), b"STOPPING=1");
        assert!(notifier.send("WATCHDOG=1\nEXTEND_TIMEOUT_USEC=5000000"));
        assert_eq!(recv(&server), b"WATCHDOG=1\nEXTEND_TIMEOUT_USEC=5000000");
    }

    #[test]
    fn abstract_socket_gets_each_message_exactly() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("ralph-supervise-test-{}-{nanos}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        let notifier = Notifier::new(OsStr::new(&format!("@{name}"))).unwrap();

        assert!(notifier.send("READY=1"));
        assert_eq!(recv(&server), b"READY=1");
        assert!(notifier.status("waiting for the lock held by pid 7"));
        assert_eq!(recv(&server), b"STATUS=waiting for the lock held by pid 7");
        assert!(notifier.stopping());
        assert_eq!(recv(&server), b"STOPPING=1");
    }

    #[test]
    fn a_vanished_socket_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::new(path.as_os_str()).unwrap();
        drop(server);
        std::fs::remove_file(&path).unwrap();
        assert!(!notifier.send("READY=1"));
        assert!(!notifier.status("still alive"));
    }

    #[test]
    fn bad_addresses_are_refused() {
        assert!(Notifier::new(OsStr::new("")).is_err());
        let too_long = "/".repeat(200);
        assert!(Notifier::new(OsStr::new(&too_long)).is_err());
    }

    #[test]
    fn the_socket_is_close_on_exec() {
        let dir = tempfile::tempdir().unwrap();
        let notifier = Notifier::new(dir.path().join("n").as_os_str()).unwrap();
        let flags = nix::fcntl::fcntl(&notifier.socket, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
    }
}
