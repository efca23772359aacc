//! The seed writes `created`/`updated` with a bare `datetime()`, which a server whose default
//! time zone is a named one (Neo4j's `db.temporal.timezone`, ArcadeDB's host zone) stores as a
//! zone-id datetime. runtally's typed reads decode those to the right instant.

mod common;

use chrono::{TimeZone, Utc};
use common::private_db::PrivateDb;
use common::*;
use neo4rs::query;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_id_datetimes_from_a_server_in_a_named_zone_are_read_as_the_right_instant() {
    // Neo4j takes the zone from its settings; ArcadeDB ignores them (the explicit zone below
    // makes the check meaningful on both).
    let db = PrivateDb::start_with("tz", "db.temporal.timezone=Europe/Paris");
    let graph = db.graph();
    let exec = unique("zoned");
    graph
        .run(
            query(
                "CREATE (exec:Node {id: $id})
                 SET exec.type = 'orchestration_execution', exec.planId = 'p',
                     exec.status = 'running', exec.duration = 0, exec.tasksTotal = 1,
                     exec.tasksSuccessful = 0, exec.tasksFailed = 0, exec.tokensInput = 0,
                     exec.tokensOutput = 0, exec.tokensTotal = 0, exec.toolCalls = 0,
                     exec.startTime = datetime({year: 2026, month: 7, day: 1, hour: 12,
                                                timezone: 'Europe/Paris'}),
                     exec.created = datetime(),
                     exec.updated = datetime()",
            )
            .param("id", exec.as_str()),
        )
        .await
        .expect("the seed's kind of write");
    let mut rows = graph
        .execute(
            query("MATCH (e:Node {id: $id}) RETURN toString(e.created) AS c")
                .param("id", exec.as_str()),
        )
        .await
        .expect("read back");
    let created = rows
        .next()
        .await
        .expect("row")
        .expect("one")
        .get::<String>("c")
        .expect("string");
    if db.is_neo4j() {
        assert!(
            created.ends_with("[Europe/Paris]"),
            "a bare datetime() takes the server's named zone: {created}"
        );
    }
    let record = db
        .store()
        .execution(&exec_id(&exec))
        .await
        .expect("a typed read decodes zone-id datetimes")
        .expect("found");
    // 12:00 in Paris on 1 July (summer time, UTC+2) is 10:00 UTC.
    assert_eq!(
        record.start_time,
        Some(
            Utc.with_ymd_and_hms(2026, 7, 1, 10, 0, 0)
                .single()
                .expect("valid")
        )
    );
    let now = Utc::now();
    let created = record.created.expect("created");
    assert!(
        (now - created).num_seconds().abs() < 300,
        "created is the instant of the write, whatever the zone: {created} vs {now}"
    );
}
