//! The TypeScript drop-in for the seed's persistence module (`clients/typescript/`) against a
//! live `runtally serve`: its own tests (node's test runner, `scripts/ts-client-test`) run the
//! seed's doc-comment examples through it, then read the graph with the seed's three reader
//! queries through the official `neo4j-driver` and compare every value.

mod common;

use std::process::Command;

use common::*;

#[test]
fn the_seed_examples_through_the_drop_in_read_back_exactly() {
    let serve = Serve::start(&db_env(), &["--token", "ts-drop-in-token"]);
    let output = Command::new(repo_root().join("scripts/ts-client-test"))
        .envs(db_env())
        .env("RUNTALLY_URL", &serve.url)
        .env("RUNTALLY_TOKEN", "ts-drop-in-token")
        .output()
        .expect("scripts/ts-client-test runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the drop-in's tests failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The live tests ran (not skipped for a missing server or database).
    assert!(
        stdout.contains("# skipped 0") && stdout.contains("# fail 0"),
        "{stdout}"
    );
}
