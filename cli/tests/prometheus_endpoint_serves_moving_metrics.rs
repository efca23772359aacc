//! `runtally demo --metrics-addr ADDR --linger SECS` serves Prometheus metrics over HTTP while the
//! demo runs and after it; scraped twice, the values have moved.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn scrape(addr: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    body.contains("200 OK").then_some(body)
}

fn value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_are_served_while_the_demo_runs_and_move() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut demo = Command::new(env!("CARGO_BIN_EXE_runtally"))
        .args([
            "demo",
            "--runs",
            "12",
            "--max-task-ms",
            "400",
            "--metrics-addr",
            &addr,
            "--linger",
            "4",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runtally demo");

    let started = Instant::now();
    let mut first = None;
    let mut last = None;
    while started.elapsed() < Duration::from_secs(60) {
        if let Some(body) = scrape(&addr) {
            let tasks = value(&body, "runtally_tasks_total{status=\"success\"}").unwrap_or(0.0);
            first.get_or_insert(tasks);
            let runs_done = value(&body, "runtally_runs_finished_total{status=\"completed\"}")
                .unwrap_or(0.0)
                + value(&body, "runtally_runs_finished_total{status=\"failed\"}").unwrap_or(0.0)
                + value(&body, "runtally_runs_finished_total{status=\"cancelled\"}").unwrap_or(0.0);
            last = Some((tasks, runs_done, body));
            if runs_done >= 12.0 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (tasks, runs_done, body) = last.expect("the endpoint answered");
    let first = first.expect("a first scrape");
    assert_eq!(runs_done, 12.0, "every run finished: {body}");
    assert!(tasks > first, "tasks_total moved from {first} to {tasks}");
    assert_eq!(value(&body, "runtally_runs_started_total"), Some(12.0));
    assert_eq!(value(&body, "runtally_database_up"), Some(1.0));
    // The tracing layer's series are published too (zero: the demo records no spans).
    assert_eq!(
        value(&body, "runtally_spans_total{kind=\"run\"}"),
        Some(0.0)
    );
    assert_eq!(
        value(&body, "runtally_spans_open{kind=\"task\"}"),
        Some(0.0)
    );
    assert!(
        value(&body, "runtally_flush_duration_seconds_count").unwrap_or(0.0) > 0.0,
        "{body}"
    );
    assert!(
        body.contains("# TYPE runtally_flush_duration_seconds histogram"),
        "{body}"
    );

    // Still served while lingering, then the process exits cleanly.
    std::thread::sleep(Duration::from_millis(500));
    assert!(scrape(&addr).is_some(), "served during --linger");
    let status = demo.wait().expect("demo exits");
    assert!(status.success());
}
