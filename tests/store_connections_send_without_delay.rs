//! The driver leaves Nagle's algorithm on its Bolt connections, which holds every statement over
//! 8 KiB back by the server's delayed ACK (40 ms on Linux). The store sets `TCP_NODELAY` on them,
//! unless told not to. Checked on the sockets themselves, against the live server.
#![cfg(unix)]
#![allow(unsafe_code)] // borrowing this process's descriptors to read their socket options

mod common;

use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::BorrowedFd;

use common::*;
use runtally::store::{GraphStore, Neo4jStore};

/// The server's addresses, from `NEO4J_URI`.
fn server() -> Vec<SocketAddr> {
    let uri = neo4j_config().uri().to_owned();
    let authority = uri.split_once("://").map_or(uri.as_str(), |(_, rest)| rest);
    let authority = authority.split('/').next().expect("authority");
    authority.to_socket_addrs().expect("resolvable").collect()
}

/// `TCP_NODELAY` of every socket of this process connected to the server.
fn nodelay_of_bolt_sockets() -> Vec<bool> {
    let targets = server();
    std::fs::read_dir("/proc/self/fd")
        .or_else(|_| std::fs::read_dir("/dev/fd"))
        .expect("fd list")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|fd| {
            // SAFETY: the descriptor stays open for these two calls (nothing else in this
            // test closes descriptors meanwhile); a stale one only makes the calls fail.
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            let socket = socket2::SockRef::from(&fd);
            let peer = socket.peer_addr().ok()?.as_socket()?;
            targets
                .contains(&peer)
                .then(|| socket.nodelay().expect("readable"))
        })
        .collect()
}

#[tokio::test]
async fn the_stores_connections_have_nodelay_unless_disabled() {
    let store = Neo4jStore::new(&neo4j_config()).expect("pool");
    store.ping().await.expect("reachable");
    let sockets = nodelay_of_bolt_sockets();
    assert!(!sockets.is_empty(), "the store holds a connection");
    assert!(sockets.iter().all(|&on| on), "{sockets:?}");

    // Opted out: the next store's connection keeps the system default (Nagle on).
    let config = runtally::config::Neo4jConfig::from_env()
        .expect("NEO4J_* settings")
        .with_tcp_nodelay(false)
        .build()
        .expect("config");
    let plain = Neo4jStore::new(&config).expect("pool");
    plain.ping().await.expect("reachable");
    // One connection through a `bolt://` URI; a routed `neo4j://` one also keeps its
    // router's connection, so at least one there.
    let sockets = nodelay_of_bolt_sockets();
    let plain_sockets = sockets.iter().filter(|&&on| !on).count();
    if config.uri().starts_with("neo4j") {
        assert!(plain_sockets >= 1, "{sockets:?}");
    } else {
        assert_eq!(plain_sockets, 1, "{sockets:?}");
    }
    drop(store);
}
