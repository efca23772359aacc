//! `runtally serve --tls-cert/--tls-key` speaks HTTPS (curl verifies the certificate against
//! its CA file), refuses plain HTTP on that port, and a service listening beyond loopback
//! without a token refuses to start.

mod common;

use std::process::Command;

use common::*;

const TOKEN: &str = "tls-test-token";

fn curl_status(args: &[&str]) -> String {
    let output = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .args(args)
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn https_with_a_verified_certificate_works_and_plain_http_on_its_port_does_not() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("a self-signed certificate");
    let (cert_pem, key_pem) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_pem, cert.cert.pem()).expect("cert");
    std::fs::write(&key_pem, cert.signing_key.serialize_pem()).expect("key");
    let serve = Serve::start(
        &db_env(),
        &[
            "--token",
            TOKEN,
            "--tls-cert",
            cert_pem.to_str().expect("path"),
            "--tls-key",
            key_pem.to_str().expect("path"),
        ],
    );
    assert!(serve.url.starts_with("https://127.0.0.1:"), "{}", serve.url);
    let ca = cert_pem.to_str().expect("path");
    assert_eq!(
        curl_status(&["--cacert", ca, &format!("{}/healthz", serve.url)]),
        "200"
    );
    let id = unique("tls");
    let body = format!(
        r#"[{{"event":"run_started","executionId":"{id}","planId":"p","totalTasks":0,"startTime":1764800000000}}]"#
    );
    let auth = format!("Authorization: Bearer {TOKEN}");
    let events = format!("{}/v1/events", serve.url);
    let args = [
        "--cacert",
        ca,
        "-X",
        "POST",
        "-H",
        &auth,
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &body,
        &events,
    ];
    assert_eq!(curl_status(&args), "200");
    // Without the CA the certificate is not trusted; plain HTTP gets no answer.
    assert_eq!(curl_status(&[&format!("{}/healthz", serve.url)]), "000");
    let plain = serve.url.replacen("https://", "http://", 1);
    assert_ne!(curl_status(&[&format!("{plain}/healthz")]), "200");
    // The service still serves after the failed handshakes.
    assert_eq!(
        curl_status(&["--cacert", ca, &format!("{}/healthz", serve.url)]),
        "200"
    );
}

#[test]
fn listening_beyond_loopback_without_a_token_is_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_runtally"))
        .env_remove("RUNTALLY_TOKEN")
        .envs(db_env())
        .args(["serve", "--listen", "0.0.0.0:0"])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("needs a token"), "{stderr}");
}
