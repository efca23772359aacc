//! `runtally serve` at the edge, driven by curl (and raw sockets where curl cannot misbehave
//! enough): the token, oversize and chunked bodies, garbage, truncated gzip and gzip bombs,
//! deep JSON, wrong content types, half-bad batches (the good events applied, the bad ones
//! named), retries that must not double-count, a client that vanishes mid-body, a thousand
//! connections at once, and SIGTERM under load (everything answered 2xx is in the database).

mod common;

use std::io::Write;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "edge-test-token";

/// An answer: status, lower-case header lines, body.
struct Answer {
    status: u16,
    headers: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// `curl -s -i ARGS… URL`, parsed.
fn curl(url: &str, args: &[&str]) -> Answer {
    let output = Command::new("curl")
        .args(["-s", "-i", "-H", "Expect:", "--max-time", "30"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    Answer {
        status,
        headers: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

fn bearer() -> String {
    format!("Authorization: Bearer {TOKEN}")
}

/// POSTs `body` (from a file, so curl sends it byte for byte) with these headers.
fn post(serve: &Serve, path: &str, headers: &[&str], body: &[u8]) -> Answer {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(body).expect("write body");
    let mut args = vec!["-X", "POST", "--data-binary"];
    let at = format!("@{}", file.path().display());
    args.push(&at);
    for h in headers {
        args.extend(["-H", h]);
    }
    curl(&format!("{}{path}", serve.url), &args)
}

fn post_events(serve: &Serve, events: &Value) -> Answer {
    let body = serde_json::to_vec(events).expect("json");
    post(
        serve,
        "/v1/events",
        &[&bearer(), "Content-Type: application/json"],
        &body,
    )
}

fn run_events(id: &str, tasks: usize, tokens: u64) -> Vec<Value> {
    let mut events = vec![
        json!({"event": "run_started", "executionId": id, "planId": "plan-edge",
        "totalTasks": tasks, "startTime": 1_764_800_000_000_i64}),
    ];
    for i in 0..tasks {
        events.push(task(id, &format!("t{i}"), tokens));
    }
    events.push(
        json!({"event": "run_finished", "executionId": id, "endTime": 1_764_800_005_000_i64}),
    );
    events
}

fn task(id: &str, task_id: &str, tokens: u64) -> Value {
    json!({"event": "task_finished", "executionId": id,
        "task": {"id": task_id, "title": task_id},
        "result": {"taskId": task_id, "status": "success", "output": "ok", "duration": 10,
                   "tokens": {"input": tokens, "output": 1}, "toolCalls": 1}})
}

fn get_run(serve: &Serve, id: &str) -> Answer {
    curl(&format!("{}/v1/runs/{id}", serve.url), &["-H", &bearer()])
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

#[test]
fn requests_without_the_token_are_refused_and_probes_need_none() {
    let serve = Serve::start(&db_env(), &["--token", TOKEN]);
    assert_eq!(curl(&format!("{}/healthz", serve.url), &[]).status, 200);
    assert_eq!(curl(&format!("{}/readyz", serve.url), &[]).status, 200);
    let none = post(
        &serve,
        "/v1/events",
        &["Content-Type: application/json"],
        b"[]",
    );
    assert_eq!(none.status, 401);
    assert_eq!(none.json()["error"], "unauthorized");
    assert!(none.headers.contains("www-authenticate: bearer"));
    let wrong = post(
        &serve,
        "/v1/events",
        &[
            "Authorization: Bearer edge-test-tokeN",
            "Content-Type: application/json",
        ],
        b"[]",
    );
    assert_eq!(wrong.status, 401);
    let traces = post(
        &serve,
        "/v1/traces",
        &["Content-Type: application/json"],
        b"{}",
    );
    assert_eq!(traces.status, 401);
    assert_eq!(curl(&format!("{}/metrics", serve.url), &[]).status, 401);
    assert_eq!(get_run(&serve, "x").status, 404);
    assert_eq!(post_events(&serve, &json!([])).status, 200);
    let metrics = curl(&format!("{}/metrics", serve.url), &["-H", &bearer()]);
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.body.contains("runtally_serve_events_total"),
        "{}",
        metrics.body
    );
}

#[test]
fn oversize_garbage_gzip_depth_and_type_errors_are_typed() {
    let serve = Serve::start(&db_env(), &["--token", TOKEN, "--max-body-bytes", "65536"]);
    let json = "Content-Type: application/json";
    let big = vec![b' '; 100_000];
    let sized = post(&serve, "/v1/events", &[&bearer(), json], &big);
    assert_eq!(
        (sized.status, sized.json()["error"].clone()),
        (413, json!("body_too_large"))
    );
    // Exporters send chunked bodies without a length: counted as they arrive.
    let chunked = post(
        &serve,
        "/v1/events",
        &[&bearer(), json, "Transfer-Encoding: chunked"],
        &big,
    );
    assert_eq!(chunked.status, 413);
    // A gzip bomb: 10 MB of zeros in ~10 KB.
    let bomb = post(
        &serve,
        "/v1/events",
        &[&bearer(), json, "Content-Encoding: gzip"],
        &gzip(&vec![b' '; 10_000_000]),
    );
    assert_eq!(bomb.status, 413);
    let body = serde_json::to_vec(&run_events("edge-gz", 1, 1)).expect("json");
    let mut truncated = gzip(&body);
    truncated.truncate(truncated.len() / 2);
    let cut = post(
        &serve,
        "/v1/events",
        &[&bearer(), json, "Content-Encoding: gzip"],
        &truncated,
    );
    assert_eq!(
        (cut.status, cut.json()["error"].clone()),
        (400, json!("bad_gzip"))
    );
    let garbage = post(
        &serve,
        "/v1/events",
        &[&bearer(), json],
        b"\x00\xffnot json at all",
    );
    assert_eq!(
        (garbage.status, garbage.json()["error"].clone()),
        (400, json!("malformed"))
    );
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let deep = post(&serve, "/v1/events", &[&bearer(), json], deep.as_bytes());
    assert_eq!(
        (deep.status, deep.json()["error"].clone()),
        (400, json!("too_deep"))
    );
    let text = post(
        &serve,
        "/v1/events",
        &[&bearer(), "Content-Type: text/plain"],
        b"[]",
    );
    assert_eq!(text.status, 415);
    let brotli = post(
        &serve,
        "/v1/events",
        &[&bearer(), json, "Content-Encoding: br"],
        b"[]",
    );
    assert_eq!(brotli.status, 415);
    let protobuf = post(
        &serve,
        "/v1/traces",
        &[&bearer(), "Content-Type: application/x-protobuf"],
        b"\xff\xff\xff\xff garbage",
    );
    assert_eq!(
        (protobuf.status, protobuf.json()["error"].clone()),
        (400, json!("malformed"))
    );
    let otlp_text = post(
        &serve,
        "/v1/traces",
        &[&bearer(), "Content-Type: text/plain"],
        b"",
    );
    assert_eq!(otlp_text.status, 415);
    assert_eq!(curl(&format!("{}/v1/nothing", serve.url), &[]).status, 404);
    assert_eq!(curl(&format!("{}/v1/events", serve.url), &[]).status, 405);
    // And the gzip body itself, whole, is taken.
    let whole = post(
        &serve,
        "/v1/events",
        &[&bearer(), json, "Content-Encoding: gzip"],
        &gzip(&serde_json::to_vec(&run_events(&unique("edge-gz"), 2, 3)).expect("json")),
    );
    assert_eq!(whole.status, 200, "{}", whole.body);
}

#[test]
fn a_half_bad_batch_applies_its_good_events_names_the_bad_ones_and_retries_count_once() {
    let serve = Serve::start(&db_env(), &["--token", TOKEN]);
    let id = unique("edge-half");
    let mut mismatched = task(&id, "t1", 5);
    mismatched["result"]["taskId"] = json!("other");
    let events = json!([
        {"event": "run_started", "executionId": id, "planId": "p", "totalTasks": 3,
         "startTime": 1_764_800_000_000_i64},
        mismatched,
        task(&id, "t2", 7),
        task("edge-never-started", "t1", 1),
        {"event": "task_finished", "executionId": id},
        task(&id, "t3", 11),
    ]);
    let first = post_events(&serve, &events);
    assert_eq!(first.status, 400, "{}", first.body);
    let answer = first.json();
    assert_eq!(answer["accepted"], 3);
    let rejected: Vec<(u64, String)> = answer["rejected"]
        .as_array()
        .expect("rejected")
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().expect("index"),
                r["error"].as_str().expect("code").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        rejected,
        [
            (1, "invalid_value".to_owned()),
            (3, "unknown_run".to_owned()),
            (4, "invalid_event".to_owned())
        ]
    );
    // The client retries the whole request: nothing counts twice.
    let again = post_events(&serve, &events);
    assert_eq!(again.json()["accepted"], 3);
    let run = get_run(&serve, &id).json();
    assert_eq!(
        (run["tasksSuccessful"].clone(), run["tokensInput"].clone()),
        (json!(2), json!(18))
    );
    let end =
        json!([{"event": "run_finished", "executionId": id, "endTime": 1_764_800_009_000_i64}]);
    assert_eq!(post_events(&serve, &end).status, 200);
    // A retried end, and a retried start after the end, are no-ops.
    assert_eq!(post_events(&serve, &end).status, 200);
    assert_eq!(post_events(&serve, &json!([events[0].clone()])).status, 200);
    let late = post_events(&serve, &json!([task(&id, "t9", 1)]));
    assert_eq!(late.json()["rejected"][0]["error"], "run_finished");
    // NDJSON, the same objects a line each.
    let id2 = unique("edge-ndjson");
    let lines: Vec<String> = run_events(&id2, 2, 4)
        .iter()
        .map(|e| e.to_string())
        .collect();
    let nd = post(
        &serve,
        "/v1/events",
        &[&bearer(), "Content-Type: application/x-ndjson"],
        format!("{}\n", lines.join("\n")).as_bytes(),
    );
    assert_eq!(
        (nd.status, nd.json()["accepted"].clone()),
        (200, json!(4)),
        "{}",
        nd.body
    );
    let run = get_run(&serve, &id2).json();
    assert_eq!(
        (run["status"].clone(), run["tokensInput"].clone()),
        (json!("completed"), json!(8))
    );
}

/// One raw HTTP/1.1 request over its own connection; the status code. A connection closed
/// without a response is an error: a server that is draining closes connections whose request
/// it has not begun to read (HTTP lets a client retry those), and such a request is not
/// answered at all.
async fn raw(addr: &str, request: &[u8]) -> std::io::Result<u16> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(request).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("closed without a response ({} bytes)", response.len()),
            )
        })
}

fn events_request(addr: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST /v1/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

async fn runs_with_prefix(prefix: &str) -> i64 {
    let graph = raw_graph();
    let q = neo4rs::query(
        "MATCH (e:Node {type: 'orchestration_execution'}) WHERE e.id STARTS WITH $p \
         AND e.status = 'completed' AND e.tokensInput = 3 RETURN count(e) AS n",
    )
    .param("p", prefix);
    let mut rows = graph.execute(q).await.expect("count");
    rows.next()
        .await
        .expect("row")
        .and_then(|r| r.get::<i64>("n").ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_mid_body_and_a_thousand_connections_at_once_leave_it_serving() {
    let serve = Serve::start(&db_env(), &["--token", TOKEN, "--max-connections", "50"]);
    let addr = serve.url.trim_start_matches("http://").to_owned();
    // Declares 100 KB, sends 1 KB, hangs up.
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    stream.write_all(&[b'['; 1000]).await.expect("part");
    drop(stream);

    let prefix = unique("edge-1000");
    let addr = Arc::new(addr);
    let clients: Vec<_> = (0..1000)
        .map(|i| {
            let addr = Arc::clone(&addr);
            let body =
                serde_json::to_vec(&run_events(&format!("{prefix}-{i}"), 1, 3)).expect("json");
            tokio::spawn(async move { raw(&addr, &events_request(&addr, &body)).await })
        })
        .collect();
    let mut statuses = std::collections::BTreeMap::new();
    for client in clients {
        let status = client.await.expect("task").expect("answered");
        *statuses.entry(status).or_insert(0) += 1;
    }
    assert_eq!(statuses, [(200, 1000)].into_iter().collect());
    let written = eventually(Duration::from_secs(60), || {
        let prefix = prefix.clone();
        async move { runs_with_prefix(&prefix).await == 1000 }
    })
    .await;
    assert!(written.is_some(), "1000 runs not all written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_keeps_everything_answered_2xx_and_exits_0() {
    let mut serve = Serve::start(&db_env(), &["--token", TOKEN]);
    let addr = Arc::new(serve.url.trim_start_matches("http://").to_owned());
    let prefix = unique("edge-term");
    let (tx, mut answered) = tokio::sync::mpsc::unbounded_channel::<(String, u16)>();
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (addr, prefix, tx) = (Arc::clone(&addr), prefix.clone(), tx.clone());
            tokio::spawn(async move {
                for i in 0.. {
                    let id = format!("{prefix}-{c}-{i}");
                    let body = serde_json::to_vec(&run_events(&id, 3, 1)).expect("json");
                    match raw(&addr, &events_request(&addr, &body)).await {
                        Ok(status) => {
                            let _ = tx.send((id, status));
                        }
                        // The listener closed, or the connection was closed unanswered:
                        // the drain has begun.
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();
    drop(tx);
    // Under load: wait for 200 answered requests, then SIGTERM.
    let mut seen = Vec::new();
    while seen.len() < 200 {
        seen.push(answered.recv().await.expect("clients answered"));
    }
    let (status, report) = tokio::task::spawn_blocking(move || serve.stop())
        .await
        .expect("stop");
    for client in clients {
        client.await.expect("client");
    }
    while let Some(a) = answered.recv().await {
        seen.push(a);
    }
    assert!(status.success(), "serve exited {status}: {report}");
    assert_eq!(report["complete"], true, "{report}");
    let ok: Vec<&String> = seen
        .iter()
        .filter(|(_, s)| *s == 200)
        .map(|(id, _)| id)
        .collect();
    assert!(
        seen.iter().all(|(_, s)| *s == 200 || *s == 503),
        "only 200 or 503: {:?}",
        seen.iter().filter(|(_, s)| *s != 200).collect::<Vec<_>>()
    );
    let graph = raw_graph();
    let q = neo4rs::query(
        "MATCH (e:Node {type: 'orchestration_execution'}) WHERE e.id STARTS WITH $p \
         AND e.status = 'completed' AND e.tasksSuccessful = 3 AND e.tokensInput = 3 \
         RETURN e.id AS id",
    )
    .param("p", format!("{prefix}-"));
    let mut rows = graph.execute(q).await.expect("read");
    let mut stored = std::collections::HashSet::new();
    while let Some(row) = rows.next().await.expect("row") {
        stored.insert(row.get::<String>("id").expect("id"));
    }
    let missing: Vec<_> = ok.iter().filter(|id| !stored.contains(**id)).collect();
    assert!(
        missing.is_empty(),
        "{} runs answered 200 but not stored, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(ok.len() >= 200);
}

#[test]
fn request_logs_name_each_request_but_never_the_token_or_the_payload() {
    let mut env = db_env();
    env.push(("RUST_LOG", "runtally::serve::access=info".to_owned()));
    let serve = Serve::start(&env, &["--token", TOKEN]);
    let id = unique("edge-log");
    let mut events = run_events(&id, 1, 2);
    events[1]["result"]["output"] = json!("payload-marker-7f3a");
    assert_eq!(post_events(&serve, &json!(events)).status, 200);
    let unauthorized = post(
        &serve,
        "/v1/events",
        &["Content-Type: application/json"],
        b"[]",
    );
    assert_eq!(unauthorized.status, 401);
    let mut lines = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while lines
        .iter()
        .filter(|l: &&String| l.contains("/v1/events"))
        .count()
        < 2
    {
        let left = deadline
            .checked_duration_since(std::time::Instant::now())
            .expect("two access lines within 10 s");
        lines.push(serve.stderr.recv_timeout(left).expect("a log line"));
    }
    let access: Vec<&String> = lines.iter().filter(|l| l.contains("/v1/events")).collect();
    assert!(access[0].contains("status=200"), "{access:?}");
    assert!(access[1].contains("status=401"), "{access:?}");
    for line in &lines {
        assert!(!line.contains(TOKEN), "token in the log: {line}");
        assert!(
            !line.contains("payload-marker"),
            "payload in the log: {line}"
        );
    }
}

#[test]
fn a_retry_reaching_a_restarted_service_leaves_an_ended_run_as_it_was() {
    let id = unique("edge-restart");
    let events = json!(run_events(&id, 3, 5));
    {
        let mut first = Serve::start(&db_env(), &["--token", TOKEN]);
        assert_eq!(post_events(&first, &events).status, 200);
        let (status, _) = first.stop();
        assert!(status.success());
    }
    // The client never saw the answer and resends the whole request to the new process.
    let second = Serve::start(&db_env(), &["--token", TOKEN]);
    let again = post_events(&second, &events);
    assert_eq!(again.status, 400, "{}", again.body);
    let answer = again.json();
    let codes: Vec<&str> = answer["rejected"]
        .as_array()
        .expect("rejected")
        .iter()
        .map(|r| r["error"].as_str().expect("code"))
        .collect();
    // The start and the end are no-ops; the results are refused: the run has finished.
    assert_eq!(codes, ["run_finished"; 3]);
    let flush = curl(
        &format!("{}/v1/flush", second.url),
        &["-X", "POST", "-H", &bearer()],
    );
    assert_eq!(flush.status, 200);
    let run = get_run(&second, &id).json();
    assert_eq!(
        (
            run["status"].clone(),
            run["tasksSuccessful"].clone(),
            run["tokensInput"].clone(),
            run["source"].clone()
        ),
        (json!("completed"), json!(3), json!(15), json!("database"))
    );
}
