#!/usr/bin/env python3
# Does a Neo4j reader see a committed transaction's node update before the relationships the same
# transaction created? Two writers each commit, per step, "SET e.count = n+5" on a run node plus
# 5 new HAS_TASK_EXECUTION relationships in one transaction; two readers poll for run nodes whose
# count exceeds their relationships. Session 20261202 on Neo4j 5.26.30: 2 violating reads in
# 9,684 polls in the first run (0 in 15,737 and 16,450 in the next two): rare, but it happens,
# which is why Neo4jStore commits a batch's task rows before its run states.
#
# Usage: eval "$(RUNTALLY_SERVER=neo4j scripts/db env)"; <python with the neo4j driver> bench/neo4j-partial-commit-visibility.py
#        (the driver: scripts/compare-seed installs one into ~/.cache/runtally/py). Writes nodes
#        with ids "partial-…" (no startTime) and deletes them at the end.
import os, threading, time, uuid
from neo4j import GraphDatabase
uri=os.environ["NEO4J_URI"]; auth=(os.environ["NEO4J_USER"], os.environ["NEO4J_PASSWORD"]); db=os.environ.get("NEO4J_DATABASE")
drv=GraphDatabase.driver(uri, auth=auth)
prefix="partial-"+uuid.uuid4().hex[:8]
stop=False; bad=[]; polls=[0]
def writer(w):
    with drv.session(database=db) as s:
        for r in range(150):
            rid=f"{prefix}-{w}-{r}"
            n=0
            for step in range(6):
                k=5
                def tx(t):
                    t.run("MERGE (e:Node {id:$id}) SET e.type='orchestration_execution', e.count=$c", id=rid, c=n+k).consume()
                    t.run("MATCH (e:Node {id:$id}) UNWIND range($a,$b) AS i MERGE (t:Node {id:$id+'-t'+toString(i)}) SET t.type='task_execution', t.output=$pad MERGE (e)-[:HAS_TASK_EXECUTION]->(t)", id=rid, a=n, b=n+k-1, pad='x'*200).consume()
                s.execute_write(tx); n+=k
def reader():
    with drv.session(database=db) as s:
        while not stop:
            res=s.run("MATCH (e:Node {type:'orchestration_execution'}) WHERE e.id STARTS WITH $p WITH e, e.count AS c OPTIONAL MATCH (e)-[:HAS_TASK_EXECUTION]->(t) WITH e,c,count(t) AS n WHERE n < c RETURN e.id AS id, c, n", p=prefix).data()
            polls[0]+=1
            bad.extend(res)
ws=[threading.Thread(target=writer,args=(w,)) for w in range(2)]
rs=[threading.Thread(target=reader) for _ in range(2)]
for t in ws+rs: t.start()
for t in ws: t.join()
stop=True
for t in rs: t.join()
print("polls",polls[0],"violations",len(bad),bad[:5])
with drv.session(database=db) as s:
    s.run("MATCH (n:Node) WHERE n.id STARTS WITH $p DETACH DELETE n", p=prefix).consume()
