//! `runtally serve`: the aggregator behind HTTP (see [`runtally_cli::serve`]).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use runtally::{Aggregator, AggregatorConfig};
use runtally_cli::serve::{serve, ServeConfig};

use crate::{BufferArgs, DbArgs};

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on. Anything but loopback needs a token.
    #[arg(long, default_value = "127.0.0.1:4319")]
    listen: SocketAddr,
    /// Bearer token every /v1/* and /metrics request must carry (compared in constant time).
    #[arg(long, env = "RUNTALLY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// TLS: the certificate chain (PEM, leaf first). With --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// TLS: the certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Largest request body in bytes, after decompression (413 beyond).
    #[arg(long, default_value_t = ServeConfig::default().max_body_bytes)]
    max_body_bytes: usize,
    /// Most events in one POST /v1/events (413 beyond).
    #[arg(long, default_value_t = ServeConfig::default().max_events)]
    max_events: usize,
    /// Milliseconds a task result waits for room when runtally is full before the request is
    /// answered 429 with Retry-After.
    #[arg(long, default_value_t = ServeConfig::default().full_wait.as_millis() as u64)]
    full_wait_ms: u64,
    /// Milliseconds without a new span after a trace's root arrived before the trace is
    /// assembled into runs.
    #[arg(long, default_value_t = ServeConfig::default().trace_settle.as_millis() as u64)]
    trace_settle_ms: u64,
    /// Seconds a trace is held at most (assembled then without its root if it never came).
    #[arg(long, default_value_t = ServeConfig::default().trace_hold.as_secs())]
    trace_hold_secs: u64,
    /// Spans held at once across all traces (429 beyond).
    #[arg(long, default_value_t = ServeConfig::default().max_held_spans)]
    max_held_spans: usize,
    /// Connections served at once (more wait in the listen backlog).
    #[arg(long, default_value_t = ServeConfig::default().max_connections)]
    max_connections: usize,
    /// Bytes of task rows held in memory waiting for the database; at the bound requests wait
    /// up to --full-wait-ms, then are answered 429.
    #[arg(long, default_value_t = runtally::config::DEFAULT_MAX_PENDING_BYTES)]
    max_pending_bytes: usize,
    /// Bytes of rows per write transaction.
    #[arg(long, default_value_t = runtally::config::DEFAULT_MAX_BATCH_BYTES)]
    max_batch_bytes: usize,
    /// Where batches go: `null` discards them (to measure the HTTP edge alone; nothing is
    /// written, `GET /v1/runs` answers live runs only).
    #[arg(long, value_enum, default_value_t = ServeStore::Neo4j)]
    store: ServeStore,
    /// Seconds to wait for the last writes at shutdown (the disk buffer keeps the rest).
    #[arg(long, default_value_t = 30)]
    shutdown_timeout_secs: u64,
    #[command(flatten)]
    buffer: BufferArgs,
    #[command(flatten)]
    db: DbArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ServeStore {
    /// The database (NEO4J_URI…).
    Neo4j,
    /// Discard every batch.
    Null,
}

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    if !args.listen.ip().is_loopback() && args.token.is_none() {
        anyhow::bail!(
            "listening on {} (not loopback) needs a token: pass --token or set RUNTALLY_TOKEN",
            args.listen
        );
    }
    let builder = args
        .buffer
        .apply(AggregatorConfig::builder())
        .with_max_pending_bytes(args.max_pending_bytes)
        .with_max_batch_bytes(args.max_batch_bytes);
    let metrics = super::demo::prometheus()?
        .install_recorder()
        .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;
    let (aggregator, store) = match args.store {
        ServeStore::Neo4j => (
            Aggregator::start(builder.with_neo4j(args.db.neo4j()?).build()?).await?,
            Some(args.db.store()?),
        ),
        ServeStore::Null => (
            Aggregator::start_with_store(
                builder.build()?,
                std::sync::Arc::new(runtally::store::NullStore::new()),
            )
            .await?,
            None,
        ),
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    let address = listener.local_addr()?;
    let serve_config = {
        let mut c = ServeConfig::default();
        c.token = args.token;
        c.max_body_bytes = args.max_body_bytes;
        c.max_events = args.max_events;
        c.full_wait = Duration::from_millis(args.full_wait_ms);
        c.trace_settle = Duration::from_millis(args.trace_settle_ms);
        c.trace_hold = Duration::from_secs(args.trace_hold_secs);
        c.max_held_spans = args.max_held_spans;
        c.max_connections = args.max_connections;
        c.tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(runtally_cli::serve::tls_config(cert, key)?),
            _ => None,
        };
        c
    };
    let scheme = if serve_config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    eprintln!("runtally serve: listening on {scheme}://{address}");
    let report = serve(
        listener,
        aggregator.clone(),
        store,
        Some(metrics),
        serve_config,
        signal(),
    )
    .await?;
    let flushed = aggregator.flush().await;
    let shutdown = aggregator
        .shutdown(Duration::from_secs(args.shutdown_timeout_secs))
        .await;
    let line = serde_json::json!({
        "serve": report,
        "complete": shutdown.complete,
        "buffered_rows": shutdown.buffered_rows,
        "metrics": shutdown.metrics,
    });
    println!("{line}");
    if let Err(e) = flushed {
        eprintln!("runtally serve: {e}");
    }
    if !shutdown.complete && shutdown.buffered_rows == 0 {
        anyhow::bail!("{} rows were not written", shutdown.unwritten_rows());
    }
    if !shutdown.complete {
        eprintln!(
            "runtally serve: {} rows are kept in the disk buffer for the next start",
            shutdown.buffered_rows
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM or SIGINT (Ctrl-C).
async fn signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    eprintln!("runtally serve: draining");
}
