//! `TCP_NODELAY` on the driver's Bolt connections.
//!
//! neo4rs 0.9 leaves Nagle's algorithm on, and it writes a Bolt message as a 2-byte chunk header
//! and the chunk through an 8 KiB write buffer. A message over 8 KiB (every batch runtally
//! writes) so leaves in two writes: the header alone, then the chunk, which Nagle holds back
//! until the server acknowledges the header, and the server delays that acknowledgement (40 ms
//! on Linux). Measured on loopback: statements of 9–70 KB took 44 ms, 0.4 ms with
//! `TCP_NODELAY`; it was most of every batch's write time and of failure visibility's tail.
//!
//! The driver exposes no socket options, so runtally sets the option itself: it finds this
//! process's TCP sockets connected to the configured server and sets `TCP_NODELAY` on those that
//! lack it, after connecting and then before writes (at most every [`SWEEP_INTERVAL`], since the
//! pool opens connections on demand). Other connections of the process to the same server get
//! the option too (Neo4j's official drivers set it on theirs by default). Unix only; elsewhere,
//! and with `Neo4jConfigBuilder::with_tcp_nodelay(false)`, a store sweeps nothing.
//!
//! A routed store (`neo4j://`) connects to the servers its routing table names, which only the
//! driver knows: it sweeps every connected TCP socket of the process instead, so the process's
//! other connections get the option too (harmless for request/response protocols such as
//! HTTP, where the official clients set it as well).
//!
//! A sweep costs a directory listing and a system call or two per open descriptor: tens of
//! microseconds in a small process, a few milliseconds with thousands of descriptors, at most
//! every [`SWEEP_INTERVAL`].

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sync::lock;

/// Longest a connection the pool opened between sweeps may go without the option.
const SWEEP_INTERVAL: Duration = Duration::from_millis(250);

/// Finds and fixes the Bolt sockets of one store.
#[derive(Debug)]
pub(crate) struct NoDelay {
    /// `host:port` from the URI; `None` when disabled.
    server: Option<(String, u16)>,
    /// Every connected socket, not only those to `server` (a routed store).
    any_peer: bool,
    state: Mutex<SweepState>,
}

#[derive(Debug, Default)]
struct SweepState {
    /// The server's addresses, once resolved.
    targets: Vec<SocketAddr>,
    last: Option<Instant>,
}

impl NoDelay {
    /// For the server in `uri` (`scheme://host:port/...` or `host:port`), or with `any_peer`
    /// for every connected socket; inactive if `enabled` is false or the URI names no host.
    pub(crate) fn new(uri: &str, enabled: bool, any_peer: bool) -> Self {
        let server = if enabled && cfg!(unix) {
            let server = server_of(uri);
            if server.is_none() {
                tracing::warn!(uri, "no host and port in the URI: TCP_NODELAY is not set");
            }
            server
        } else {
            None
        };
        Self {
            server,
            any_peer,
            state: Mutex::new(SweepState::default()),
        }
    }

    /// Sweeps unless one ran within [`SWEEP_INTERVAL`]. Returns how many sockets it changed.
    pub(crate) async fn sweep_if_due(&self) -> usize {
        let due = {
            let state = lock(&self.state);
            state.last.is_none_or(|at| at.elapsed() >= SWEEP_INTERVAL)
        };
        if due {
            self.sweep().await
        } else {
            0
        }
    }

    /// Sets `TCP_NODELAY` on every socket of this process connected to the server. Returns how
    /// many it changed. Never fails: a socket it cannot read or change is left as it is (the
    /// writes are only slower), and logged at DEBUG.
    async fn sweep(&self) -> usize {
        let Some((host, port)) = &self.server else {
            return 0;
        };
        if self.any_peer {
            lock(&self.state).last = Some(Instant::now());
            return sockets::set_nodelay_towards(None).changed;
        }
        let unresolved = {
            let mut state = lock(&self.state);
            state.last = Some(Instant::now());
            state.targets.is_empty()
        };
        if unresolved {
            match tokio::net::lookup_host((host.as_str(), *port)).await {
                Ok(addrs) => lock(&self.state).targets = addrs.collect(),
                Err(error) => {
                    tracing::debug!(%error, host, "cannot resolve the Bolt server for TCP_NODELAY");
                    return 0;
                }
            }
        }
        let mut state = lock(&self.state);
        let found = sockets::set_nodelay_towards(Some(&state.targets));
        if found.connected == 0 {
            // Sweeps follow a connection's use, so none matching suggests the name now
            // resolves elsewhere (the driver resolves it at each connect): resolve it again.
            state.targets.clear();
        }
        found.changed
    }
}

/// `host` and `port` of a Bolt URI (default port 7687).
fn server_of(uri: &str) -> Option<(String, u16)> {
    let rest = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        // [v6]:port
        let (host, after) = bracketed.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        Some(port) => port.parse().ok()?,
        None => 7687,
    };
    Some((host.to_owned(), port))
}

/// What a sweep found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Found {
    /// Sockets connected to the server.
    connected: usize,
    /// Of those, the ones it set the option on.
    changed: usize,
}

#[cfg(unix)]
#[allow(unsafe_code)]
mod sockets {
    use std::net::SocketAddr;
    use std::os::fd::{BorrowedFd, RawFd};

    use socket2::SockRef;

    use super::Found;

    /// File descriptors to look at: the open ones where the OS lists them, else the low ones.
    fn open_fds() -> Vec<RawFd> {
        match std::fs::read_dir("/proc/self/fd").or_else(|_| std::fs::read_dir("/dev/fd")) {
            Ok(dir) => dir
                .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
                .collect(),
            Err(_) => (0..1024).collect(),
        }
    }

    /// Sets the option on the sockets connected to one of `targets`, or on every connected
    /// TCP socket when `targets` is `None`.
    pub(super) fn set_nodelay_towards(targets: Option<&[SocketAddr]>) -> Found {
        let mut found = Found::default();
        for fd in open_fds() {
            // SAFETY: the borrow lasts only for the `dup` below. If another thread closes the
            // number first, `dup` fails (EBADF) or duplicates whatever reused it; either way
            // the calls that follow act on our own duplicate, which keeps the file it refers
            // to open, so the peer check really describes the socket whose option is set.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            let Ok(owned) = borrowed.try_clone_to_owned() else {
                continue;
            };
            let socket = SockRef::from(&owned);
            let Ok(peer) = socket.peer_addr() else {
                continue; // not a connected socket
            };
            let Some(peer) = peer.as_socket() else {
                continue; // not an IP socket
            };
            match targets {
                Some(targets) if !targets.contains(&peer) => continue,
                // Any peer: only TCP sockets have the option.
                None if !socket.r#type().is_ok_and(|t| t == socket2::Type::STREAM) => continue,
                _ => {}
            }
            found.connected += 1;
            match socket.nodelay() {
                Ok(true) => {}
                Ok(false) => match socket.set_nodelay(true) {
                    Ok(()) => found.changed += 1,
                    Err(error) => tracing::debug!(%error, "cannot set TCP_NODELAY"),
                },
                Err(error) => tracing::debug!(%error, "cannot read TCP_NODELAY"),
            }
        }
        found
    }
}

#[cfg(not(unix))]
mod sockets {
    pub(super) fn set_nodelay_towards(_: Option<&[std::net::SocketAddr]>) -> super::Found {
        super::Found::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_come_from_every_uri_form() {
        let cases = [
            ("bolt://127.0.0.1:7687", Some(("127.0.0.1", 7687))),
            (
                "neo4j+s://db.example.com:7688/",
                Some(("db.example.com", 7688)),
            ),
            ("bolt://user@host", Some(("host", 7687))),
            ("localhost:9000", Some(("localhost", 9000))),
            ("bolt://[::1]:7690?x=1", Some(("::1", 7690))),
            ("bolt://[::1]", Some(("::1", 7687))),
            ("bolt://:7687", None),
            ("bolt://host:notaport", None),
        ];
        for (uri, expected) in cases {
            let got = server_of(uri);
            let got = got.as_ref().map(|(h, p)| (h.as_str(), *p));
            assert_eq!(got, expected, "{uri}");
        }
    }

    #[tokio::test]
    async fn a_socket_connected_to_the_server_gets_nodelay_and_others_do_not() {
        let server = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let other = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let to_server =
            std::net::TcpStream::connect(server.local_addr().expect("addr")).expect("connect");
        let to_other =
            std::net::TcpStream::connect(other.local_addr().expect("addr")).expect("connect");
        assert!(!to_server.nodelay().expect("read"));
        let uri = format!("bolt://{}", server.local_addr().expect("addr"));
        let nodelay = NoDelay::new(&uri, true, false);
        assert_eq!(nodelay.sweep().await, 1);
        assert!(to_server.nodelay().expect("read"));
        assert!(!to_other.nodelay().expect("read"));
        // Already set: nothing to change; and a sweep just ran, so none is due.
        assert_eq!(nodelay.sweep().await, 0);
        assert_eq!(nodelay.sweep_if_due().await, 0);
    }

    #[tokio::test]
    async fn disabled_it_touches_nothing() {
        let server = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let to_server =
            std::net::TcpStream::connect(server.local_addr().expect("addr")).expect("connect");
        let uri = format!("bolt://{}", server.local_addr().expect("addr"));
        assert_eq!(NoDelay::new(&uri, false, false).sweep().await, 0);
        assert!(!to_server.nodelay().expect("read"));
    }
}
