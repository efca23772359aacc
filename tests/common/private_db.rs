//! A database of a test's own: a second local server on free ports with its own data, started
//! through `scripts/db`, for tests that stop and restart the server or change its schema
//! without disturbing the tests that share the main one. The server is the one
//! `RUNTALLY_SERVER` names (ArcadeDB by default, or Neo4j 5), as for the shared one.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct PrivateDb {
    state: PathBuf,
    bolt: u16,
    http: u16,
    user: String,
    password: String,
    database: String,
    /// Extra Neo4j settings (`key=value`, space-separated); ArcadeDB ignores them.
    settings: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl PrivateDb {
    /// Starts a fresh server; fails the test if it cannot.
    pub fn start(tag: &str) -> Self {
        Self::start_with(tag, "")
    }

    /// Starts a fresh server with extra Neo4j settings (`key=value`, space-separated; ignored
    /// by ArcadeDB).
    pub fn start_with(tag: &str, settings: &str) -> Self {
        let state = std::env::temp_dir().join(super::unique(&format!("runtally-db-{tag}")));
        let mut db = Self {
            state,
            bolt: free_port(),
            http: free_port(),
            user: String::new(),
            password: String::new(),
            database: String::new(),
            settings: settings.to_owned(),
        };
        let out = db.script("start");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let export = |name: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!("scripts/db start prints {name}"))
                .trim_matches('\'')
                .to_owned()
        };
        db.user = export("NEO4J_USER");
        db.password = export("NEO4J_PASSWORD");
        db.database = export("NEO4J_DATABASE");
        db
    }

    /// Whether this is a Neo4j server (else ArcadeDB).
    pub fn is_neo4j(&self) -> bool {
        is_neo4j()
    }

    fn script(&self, verb: &str) -> Output {
        // The library's tests and the CLI's (cli/) share this file: the script is at the
        // repository's root, the first ancestor that has it.
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .map(|dir| dir.join("scripts/db"))
            .find(|script| script.exists())
            .expect("scripts/db in the repository");
        let out = Command::new(script)
            .arg(verb)
            .env_remove("NEO4J_URI")
            .env_remove("NEO4J_USER")
            .env_remove("NEO4J_PASSWORD")
            .env_remove("NEO4J_DATABASE")
            .env("RUNTALLY_STATE", &self.state)
            .env("RUNTALLY_BOLT_PORT", self.bolt.to_string())
            .env("RUNTALLY_HTTP_PORT", self.http.to_string())
            .env("RUNTALLY_DB_HEAP", "512m")
            .env("RUNTALLY_NEO4J_SETTINGS", &self.settings)
            .output()
            .expect("run scripts/db");
        assert!(
            out.status.success(),
            "scripts/db {verb} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Stops the server (its data stays).
    pub fn stop(&self) {
        self.script("stop");
    }

    /// Starts it again on the same ports and data.
    pub fn restart(&self) {
        self.script("start");
    }

    pub fn uri(&self) -> String {
        format!("bolt://127.0.0.1:{}", self.bolt)
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// `NEO4J_*` settings for this server (for child processes).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("NEO4J_URI", self.uri()),
            ("NEO4J_USER", self.user.clone()),
            ("NEO4J_PASSWORD", self.password.clone()),
            ("NEO4J_DATABASE", self.database.clone()),
        ]
    }

    pub fn neo4j(&self) -> runtally::Neo4jConfigBuilder {
        runtally::Neo4jConfig::builder(self.uri(), self.user.as_str(), self.password.as_str())
            .with_database(self.database.as_str())
    }

    pub fn store(&self) -> runtally::store::Neo4jStore {
        runtally::store::Neo4jStore::new(&self.neo4j().build().expect("config")).expect("store")
    }

    pub fn graph(&self) -> neo4rs::Graph {
        let config = neo4rs::ConfigBuilder::default()
            .uri(self.uri())
            .user(self.user.as_str())
            .password(self.password.as_str())
            .db(self.database.as_str())
            .max_connections(2)
            .build()
            .expect("driver config");
        neo4rs::Graph::connect(config).expect("graph")
    }
}

impl Drop for PrivateDb {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| self.script("stop"));
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// Whether the tests run against Neo4j (`RUNTALLY_SERVER=neo4j`), else ArcadeDB.
pub fn is_neo4j() -> bool {
    std::env::var("RUNTALLY_SERVER").is_ok_and(|s| s == "neo4j")
}
