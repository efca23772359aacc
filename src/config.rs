//! Configuration: where the database is and how runtally batches its writes.
//!
//! Builders are consuming (`with_*` setters), every default is a documented `DEFAULT_*` constant,
//! and `build()` names the field it rejects. Environment variables are read only by the explicit
//! `from_env()` constructors.

use std::fmt;
use std::time::Duration;

use crate::error::ConfigError;

/// Default pool size: a writer with a few flushes in flight plus readers.
pub const DEFAULT_MAX_CONNECTIONS: usize = 8;
/// Default time to open one connection before the attempt counts as failed.
pub const DEFAULT_CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// Default database user (ArcadeDB's root; set `NEO4J_USER=neo4j` for Neo4j).
pub const DEFAULT_USER: &str = "neo4j";

/// A password that never shows in `Debug` or `Display` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(password: impl Into<String>) -> Self {
        Self(password.into())
    }

    /// The password itself, for the driver.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<&str> for Password {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl From<String> for Password {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}

/// How to reach the Neo4j (or Bolt-compatible) database.
///
/// The URI's scheme picks the transport, passed straight to the driver: `bolt://` and
/// `neo4j://` in the clear, `bolt+s://` and `neo4j+s://` with TLS (`+ssc` accepts a self-signed
/// certificate). A bare `host:port` means `bolt://`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neo4jConfig {
    uri: String,
    user: String,
    password: Password,
    database: Option<String>,
    max_connections: usize,
    connection_timeout: Duration,
}

impl Neo4jConfig {
    /// Starts a builder with a URI, user and password; every other setting at its default.
    pub fn builder(
        uri: impl Into<String>,
        user: impl Into<String>,
        password: impl Into<Password>,
    ) -> Neo4jConfigBuilder {
        Neo4jConfigBuilder {
            uri: uri.into(),
            user: user.into(),
            password: password.into(),
            database: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            connection_timeout: DEFAULT_CONNECTION_TIMEOUT,
        }
    }

    /// Reads `NEO4J_URI` (required), `NEO4J_USER` (default [`DEFAULT_USER`]), `NEO4J_PASSWORD`
    /// (required) and `NEO4J_DATABASE` (optional) into a builder.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Missing`] naming the variable that is not set, or
    /// [`ConfigError::Invalid`] if one is not valid UTF-8.
    pub fn from_env() -> Result<Neo4jConfigBuilder, ConfigError> {
        let uri = env_var("NEO4J_URI")?.ok_or(ConfigError::Missing("NEO4J_URI"))?;
        let user = env_var("NEO4J_USER")?.unwrap_or_else(|| DEFAULT_USER.to_owned());
        let password = env_var("NEO4J_PASSWORD")?.ok_or(ConfigError::Missing("NEO4J_PASSWORD"))?;
        let mut builder = Self::builder(uri, user, password);
        if let Some(db) = env_var("NEO4J_DATABASE")? {
            builder = builder.with_database(db);
        }
        Ok(builder)
    }

    /// The server URI.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The password (redacted in `Debug`).
    pub fn password(&self) -> &Password {
        &self.password
    }

    /// The database name, or `None` for the server's default database.
    pub fn database(&self) -> Option<&str> {
        self.database.as_deref()
    }

    /// The connection pool's size.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// How long opening one connection may take.
    pub fn connection_timeout(&self) -> Duration {
        self.connection_timeout
    }
}

/// Builds a [`Neo4jConfig`]; see [`Neo4jConfig::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct Neo4jConfigBuilder {
    uri: String,
    user: String,
    password: Password,
    database: Option<String>,
    max_connections: usize,
    connection_timeout: Duration,
}

impl Neo4jConfigBuilder {
    /// Replaces the URI.
    pub fn with_uri(mut self, uri: impl Into<String>) -> Self {
        self.uri = uri.into();
        self
    }

    /// Replaces the user.
    pub fn with_user(mut self, user: impl Into<String>) -> Self {
        self.user = user.into();
        self
    }

    /// Replaces the password.
    pub fn with_password(mut self, password: impl Into<Password>) -> Self {
        self.password = password.into();
        self
    }

    /// The database to use. Default: the server's default database.
    pub fn with_database(mut self, database: impl Into<String>) -> Self {
        self.database = Some(database.into());
        self
    }

    /// Connection pool size. Default: [`DEFAULT_MAX_CONNECTIONS`].
    pub fn with_max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Time allowed to open one connection. Default: [`DEFAULT_CONNECTION_TIMEOUT`].
    pub fn with_connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the field: an empty URI or one with a scheme the driver
    /// does not speak, an empty user or database name, a pool of size 0, a zero timeout.
    pub fn build(self) -> Result<Neo4jConfig, ConfigError> {
        check_uri(&self.uri)?;
        if self.user.is_empty() {
            return Err(invalid("user", "must not be empty"));
        }
        if self.database.as_deref() == Some("") {
            return Err(invalid("database", "must not be empty"));
        }
        if self.max_connections == 0 {
            return Err(invalid("max_connections", "must be at least 1"));
        }
        if self.connection_timeout.is_zero() {
            return Err(invalid("connection_timeout", "must be above zero"));
        }
        Ok(Neo4jConfig {
            uri: self.uri,
            user: self.user,
            password: self.password,
            database: self.database,
            max_connections: self.max_connections,
            connection_timeout: self.connection_timeout,
        })
    }
}

/// The schemes the driver speaks; `+s` is TLS, `+ssc` TLS with a self-signed certificate.
const SCHEMES: [&str; 6] = [
    "bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc",
];

fn check_uri(uri: &str) -> Result<(), ConfigError> {
    if uri.trim().is_empty() {
        return Err(invalid("uri", "must not be empty"));
    }
    if let Some((scheme, rest)) = uri.split_once("://") {
        if !SCHEMES.contains(&scheme) {
            return Err(invalid(
                "uri",
                format!("scheme {scheme:?} is not one of {}", SCHEMES.join(", ")),
            ));
        }
        if rest.is_empty() {
            return Err(invalid("uri", "has no host"));
        }
    }
    Ok(())
}

pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

pub(crate) fn env_var(name: &'static str) -> Result<Option<String>, ConfigError> {
    match std::env::var(name) {
        Ok(v) if v.is_empty() => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(invalid(name, "is not valid UTF-8")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_redacted_in_debug_and_display() {
        let config = Neo4jConfig::builder("bolt://localhost:7687", "root", "hunter2-secret")
            .build()
            .expect("valid");
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
        assert_eq!(config.password().to_string(), "<redacted>");
        assert_eq!(config.password().expose(), "hunter2-secret");
    }

    #[test]
    fn defaults_are_the_documented_constants() {
        let config = Neo4jConfig::builder("127.0.0.1:7687", "root", "pw")
            .build()
            .expect("valid");
        assert_eq!(config.max_connections(), DEFAULT_MAX_CONNECTIONS);
        assert_eq!(config.connection_timeout(), DEFAULT_CONNECTION_TIMEOUT);
        assert_eq!(config.database(), None);
    }

    #[test]
    fn tls_schemes_are_accepted_unknown_schemes_rejected() {
        for uri in [
            "bolt://h:7687",
            "bolt+s://h:7687",
            "neo4j+s://h",
            "neo4j+ssc://h",
            "h:7687",
        ] {
            Neo4jConfig::builder(uri, "u", "p").build().expect(uri);
        }
        let err = Neo4jConfig::builder("http://h:7474", "u", "p")
            .build()
            .expect_err("http");
        assert!(matches!(err, ConfigError::Invalid { field: "uri", .. }));
        assert_eq!(
            Neo4jConfig::builder("", "u", "p")
                .build()
                .expect_err("empty")
                .to_string(),
            "uri is invalid: must not be empty"
        );
    }

    #[test]
    fn bad_fields_are_named() {
        let b = || Neo4jConfig::builder("bolt://h", "u", "p");
        let field = |e: ConfigError| match e {
            ConfigError::Invalid { field, .. } => field,
            ConfigError::Missing(f) => f,
        };
        assert_eq!(
            field(b().with_max_connections(0).build().expect_err("0")),
            "max_connections"
        );
        assert_eq!(
            field(b().with_database("").build().expect_err("db")),
            "database"
        );
        assert_eq!(
            field(
                b().with_connection_timeout(Duration::ZERO)
                    .build()
                    .expect_err("t")
            ),
            "connection_timeout"
        );
        assert_eq!(field(b().with_user("").build().expect_err("u")), "user");
    }
}
