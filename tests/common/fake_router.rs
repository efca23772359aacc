//! A Bolt 4.4 server on loopback that plays a cluster member which lost the leadership: it
//! answers `ROUTE` with a routing table (first naming itself as the writer, then, once it has
//! refused a write, the real server), and refuses every statement with
//! `Neo.ClientError.Cluster.NotALeader`, as a follower of a Neo4j or ArcadeDB cluster does. The
//! only statement it runs is the direct `RETURN 1 AS ok` a routed store checks the database
//! with. The client is the real driver (neo4rs); the real server behind the second table
//! stores the rows, so persistence is checked where it happens. [`FakeRouter::start_with`]
//! gives other tables (other fakes as writer or routers), and [`FakeRouter::stop`] takes a
//! member down.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The fake member, and what it saw.
pub struct FakeRouter {
    /// `host:port` it listens on.
    pub address: String,
    state: Arc<Shared>,
    /// The accepting task and every connection's, aborted by [`FakeRouter::stop`].
    tasks: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

/// The routing tables a fake gives: its writer before and after it has refused
/// `switch_after` statements (`usize::MAX`: never), and its routers. [`OWN`] stands for the
/// fake's own address.
pub struct Tables {
    pub writer_before: String,
    pub writer_after: String,
    pub routers: Vec<String>,
    pub switch_after: usize,
}

/// The fake's own address, in [`Tables`].
pub const OWN: &str = "own";

struct Shared {
    own: String,
    tables: Tables,
    database: String,
    routes: AtomicUsize,
    refusals: AtomicUsize,
}

impl FakeRouter {
    /// Starts the fake. Its tables name itself as the writer and router, and `leader`
    /// (`host:port` of the real server) as the writer once it has refused `switch_after`
    /// statements; `database` is the database they are for.
    pub async fn start(leader: &str, database: &str, switch_after: usize) -> Self {
        let tables = Tables {
            writer_before: OWN.to_owned(),
            writer_after: leader.to_owned(),
            routers: vec![OWN.to_owned()],
            switch_after,
        };
        Self::start_with(tables, database).await
    }

    /// Starts a fake that gives these tables.
    pub async fn start_with(tables: Tables, database: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let state = Arc::new(Shared {
            own: address.clone(),
            tables,
            database: database.to_owned(),
            routes: AtomicUsize::new(0),
            refusals: AtomicUsize::new(0),
        });
        let tasks = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (shared, spawned) = (Arc::clone(&state), Arc::clone(&tasks));
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = Arc::clone(&shared);
                let connection = tokio::spawn(async move {
                    // A client that hangs up ends its connection; nothing to report.
                    let _ = serve(stream, &shared).await;
                });
                spawned.lock().expect("tasks").push(connection);
            }
        });
        tasks.lock().expect("tasks").push(accept);
        Self {
            address,
            state,
            tasks,
        }
    }

    /// Takes the member down: no new connection is accepted and every open one is closed.
    pub fn stop(&self) {
        for task in self.tasks.lock().expect("tasks").drain(..) {
            task.abort();
        }
    }

    /// How many routing tables it gave.
    pub fn routes(&self) -> usize {
        self.state.routes.load(Ordering::SeqCst)
    }

    /// How many statements it refused as not the leader.
    pub fn refusals(&self) -> usize {
        self.state.refusals.load(Ordering::SeqCst)
    }
}

impl Drop for FakeRouter {
    fn drop(&mut self) {
        self.stop();
    }
}

const HELLO: u8 = 0x01;
const GOODBYE: u8 = 0x02;
const RESET: u8 = 0x0F;
const RUN: u8 = 0x10;
const BEGIN: u8 = 0x11;
const COMMIT: u8 = 0x12;
const ROLLBACK: u8 = 0x13;
const DISCARD: u8 = 0x2F;
const PULL: u8 = 0x3F;
const ROUTE: u8 = 0x66;

const SUCCESS: u8 = 0x70;
const RECORD: u8 = 0x71;
const IGNORED: u8 = 0x7E;
const FAILURE: u8 = 0x7F;

async fn serve(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut handshake = [0u8; 20];
    stream.read_exact(&mut handshake).await?;
    stream.write_all(&[0, 0, 4, 4]).await?;
    // After a FAILURE, Bolt ignores everything until RESET.
    let mut failed = false;
    loop {
        let message = read_message(&mut stream).await?;
        let signature = message.get(1).copied().unwrap_or(0);
        let reply = match signature {
            GOODBYE => return Ok(()),
            HELLO => vec![success(map(vec![
                ("server", s("Neo4j/5.26.0")),
                ("connection_id", s("fake-1")),
            ]))],
            RESET => {
                failed = false;
                vec![success(map(vec![]))]
            }
            _ if failed => vec![message_of(IGNORED, vec![])],
            ROUTE => {
                shared.routes.fetch_add(1, Ordering::SeqCst);
                vec![success(map(vec![("rt", routing_table(shared))]))]
            }
            BEGIN | ROLLBACK => vec![success(map(vec![]))],
            COMMIT => vec![success(map(vec![("bookmark", s("fake:1"))]))],
            RUN if contains(&message, b"RETURN 1 AS ok") => {
                vec![success(map(vec![("fields", V::L(vec![s("ok")]))]))]
            }
            RUN => {
                shared.refusals.fetch_add(1, Ordering::SeqCst);
                failed = true;
                vec![failure(
                    "Neo.ClientError.Cluster.NotALeader",
                    "this server is not the leader",
                )]
            }
            PULL => vec![
                message_of(RECORD, vec![V::L(vec![V::I(1)])]),
                success(map(vec![("has_more", V::B(false))])),
            ],
            DISCARD => vec![success(map(vec![("has_more", V::B(false))]))],
            other => {
                failed = true;
                vec![failure(
                    "Neo.ClientError.Request.Invalid",
                    &format!("message 0x{other:02X} not expected"),
                )]
            }
        };
        for payload in reply {
            write_message(&mut stream, &payload).await?;
        }
    }
}

fn routing_table(shared: &Shared) -> V {
    let tables = &shared.tables;
    let named = |address: &str| {
        if address == OWN {
            s(&shared.own)
        } else {
            s(address)
        }
    };
    let switched = shared.refusals.load(Ordering::SeqCst) >= tables.switch_after;
    let writer = if switched {
        &tables.writer_after
    } else {
        &tables.writer_before
    };
    let role = |addresses: Vec<V>, role: &str| {
        map(vec![("addresses", V::L(addresses)), ("role", s(role))])
    };
    map(vec![
        ("ttl", V::I(300)),
        ("db", s(&shared.database)),
        (
            "servers",
            V::L(vec![
                role(vec![named(writer)], "WRITE"),
                role(vec![named(writer)], "READ"),
                role(tables.routers.iter().map(|r| named(r)).collect(), "ROUTE"),
            ]),
        ),
    ])
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// One message, de-chunked.
async fn read_message(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut message = Vec::new();
    loop {
        let size = stream.read_u16().await?;
        if size == 0 {
            if message.is_empty() {
                continue; // a NOOP chunk
            }
            return Ok(message);
        }
        let start = message.len();
        message.resize(start + usize::from(size), 0);
        stream.read_exact(&mut message[start..]).await?;
    }
}

async fn write_message(stream: &mut TcpStream, payload: &[u8]) -> std::io::Result<()> {
    for chunk in payload.chunks(u16::MAX as usize) {
        stream.write_u16(chunk.len() as u16).await?;
        stream.write_all(chunk).await?;
    }
    stream.write_u16(0).await?;
    stream.flush().await
}

/// The PackStream values these replies need.
enum V {
    B(bool),
    I(i64),
    S(String),
    L(Vec<V>),
    M(Vec<(String, V)>),
}

fn s(text: &str) -> V {
    V::S(text.to_owned())
}

fn map(entries: Vec<(&str, V)>) -> V {
    V::M(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    )
}

fn success(metadata: V) -> Vec<u8> {
    message_of(SUCCESS, vec![metadata])
}

fn failure(code: &str, message: &str) -> Vec<u8> {
    message_of(
        FAILURE,
        vec![map(vec![("code", s(code)), ("message", s(message))])],
    )
}

fn message_of(signature: u8, fields: Vec<V>) -> Vec<u8> {
    let mut out = vec![0xB0 | fields.len() as u8, signature];
    for field in &fields {
        encode(field, &mut out);
    }
    out
}

fn encode(value: &V, out: &mut Vec<u8>) {
    match value {
        V::B(b) => out.push(if *b { 0xC3 } else { 0xC2 }),
        V::I(i) if (-16..=127).contains(i) => out.push(*i as u8),
        V::I(i) => {
            out.push(0xCB);
            out.extend_from_slice(&i.to_be_bytes());
        }
        V::S(text) => {
            header(text.len(), 0x80, 0xD0, out);
            out.extend_from_slice(text.as_bytes());
        }
        V::L(items) => {
            header(items.len(), 0x90, 0xD4, out);
            for item in items {
                encode(item, out);
            }
        }
        V::M(entries) => {
            header(entries.len(), 0xA0, 0xD8, out);
            for (key, item) in entries {
                encode(&V::S(key.clone()), out);
                encode(item, out);
            }
        }
    }
}

/// A tiny marker for sizes below 16, else the 8- or 16-bit sized one (`sized8`, `sized8 + 1`).
fn header(len: usize, tiny: u8, sized8: u8, out: &mut Vec<u8>) {
    if len < 16 {
        out.push(tiny | len as u8);
    } else if len <= 0xFF {
        out.push(sized8);
        out.push(len as u8);
    } else {
        out.push(sized8 + 1);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    }
}
