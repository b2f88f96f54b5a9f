//! Blocks in remote object stores, through object_store's clients against emulators on
//! loopback (no cloud is reachable from the test machines): S3 (moto) and Azure Blob storage
//! (azurite); and the store-gateway's caches in front of them.

use profusion_tests::emulators::ObjectStoreEmulator;
use profusion_tests::reference::{Window, check_everything, check_totals, generate, rows, send};
use profusion_tests::{TestServer, clients, cpu_total_last_hour, now_nanos, post};
use serde_json::json;

/// Pushes one profile, stops the server (its head goes to a block), checks that a restarted
/// server answers it from the store, and returns the block's files as `list` (a Python script
/// given the emulator's endpoint) finds them in the store, with DuckDB's totals of its samples.
fn one_block(emulator: &ObjectStoreEmulator, list: &str) -> serde_json::Value {
    let clients = clients("one_block").expect("clients");
    let mut server = emulator.configure(TestServer::configure()).spawn();
    let r = post(
        &server.url("/ingest?name=remoteapp.cpu"),
        &[],
        b"main;work 3\n".to_vec(),
        false,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    server.stop();
    assert!(
        server.blocks("anonymous").is_empty(),
        "nothing on local disk"
    );
    server.restart();
    assert_eq!(
        cpu_total_last_hour(&server, "remoteapp"),
        json!(30_000_000),
        "the block is read back from the store:\n{}",
        server.log()
    );
    let listed = clients.python(list, &[&emulator.endpoint]);
    serde_json::from_str(listed.trim()).unwrap_or_else(|e| panic!("{e}: {listed}"))
}

/// Python turning the bytes of a block's `samples.parquet` into its totals per service.
const TOTALS: &str = r#"
def totals(data):
    import duckdb, tempfile
    with tempfile.NamedTemporaryFile(suffix=".parquet") as f:
        f.write(data)
        f.flush()
        return [list(r) for r in duckdb.sql(f"SELECT service_name, sum(value)::BIGINT FROM read_parquet('{f.name}') GROUP BY 1").fetchall()]
"#;

fn expected_block() -> serde_json::Value {
    json!({
        "files": ["frames.parquet", "meta.json", "profiles.parquet", "samples.parquet", "series.parquet", "stacks.parquet"],
        "total": [["remoteapp", 30_000_000]]
    })
}

#[test]
fn blocks_go_to_s3() {
    let Some(clients) = clients("blocks_go_to_s3") else {
        return;
    };
    let s3 = ObjectStoreEmulator::moto(&clients, "profiles", "cluster-a");
    let list = format!(
        r#"{TOTALS}
import boto3, sys, json
s3 = boto3.client("s3", endpoint_url=sys.argv[1], aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="profiles", Prefix="cluster-a/")["Contents"])
samples = [k for k in keys if k.endswith("samples.parquet")][0]
data = s3.get_object(Bucket="profiles", Key=samples)["Body"].read()
print(json.dumps({{"files": [k.rsplit("/", 1)[1] for k in keys], "total": totals(data)}}))
"#
    );
    assert_eq!(one_block(&s3, &list), expected_block());
}

#[test]
fn blocks_go_to_azure_blob_storage() {
    let Some(clients) = clients("blocks_go_to_azure_blob_storage") else {
        return;
    };
    let azure = ObjectStoreEmulator::azurite(&clients, "profiles", "cluster-b");
    let list = format!(
        r#"{TOTALS}
import sys, json
from azure.storage.blob import BlobServiceClient
key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
service = BlobServiceClient(account_url=sys.argv[1] + "/devstoreaccount1", credential={{"account_name": "devstoreaccount1", "account_key": key}})
container = service.get_container_client("profiles")
keys = sorted(b.name for b in container.list_blobs(name_starts_with="cluster-b/"))
samples = [k for k in keys if k.endswith("samples.parquet")][0]
data = container.download_blob(samples).readall()
print(json.dumps({{"files": [k.rsplit("/", 1)[1] for k in keys], "total": totals(data)}}))
"#
    );
    assert_eq!(one_block(&azure, &list), expected_block());
}

/// Requests of one operation the store-gateway has sent to the object store.
fn store_requests(server: &TestServer, operation: &str) -> f64 {
    server.metric(&format!(
        "profusion_store_gateway_object_store_requests_total{{operation=\"{operation}\"}}"
    ))
}

fn cache_hits(server: &TestServer, tier: &str) -> f64 {
    server.metric(&format!(
        "profusion_store_gateway_cache_requests_total{{tier=\"{tier}\",result=\"hit\"}}"
    ))
}

#[test]
fn repeated_queries_over_s3_are_served_from_the_store_gateway_cache() {
    let Some(clients) = clients("repeated_queries_over_s3") else {
        return;
    };
    let s3 = ObjectStoreEmulator::moto(&clients, "profiles", "cached");
    let storage = s3.storage_flag();
    let history = [
        "--auth.multitenancy-enabled",
        "--validation.reject-older-than=0s",
        "--ingester.max-head-bytes=40000",
        "--ingester.flush-check-interval=100ms",
        // Blocks stay as flushed: compaction would add blocks between the rounds.
        "--compactor.first-level-compaction-wait-period=24h",
        storage.as_str(),
    ];
    // The store's environment comes from the emulator; restarts pass `history` again, flag
    // of the store included.
    let mut server = s3
        .configure(TestServer::configure())
        .args(&history[..history.len() - 1])
        .spawn();
    let span_s = 6 * 3600;
    let now_ms = now_nanos() / 1_000_000;
    let window = Window::covering(now_ms, span_s);
    let profiles = generate(20_261_202, now_ms / 1000, span_s, 60);
    for p in &profiles {
        send(&server, p);
    }
    let all = rows(&profiles);
    // Everything into blocks: the queries below read S3 only.
    server.stop();
    server.restart();

    check_everything(&server, &all, window, "cold cache");
    let (gets, heads) = (
        store_requests(&server, "get"),
        store_requests(&server, "head"),
    );
    assert!(gets > 0.0 && heads > 0.0, "{}", server.log());
    let memory_hits = cache_hits(&server, "memory");
    check_everything(&server, &all, window, "warm cache");
    assert_eq!(
        (
            store_requests(&server, "get"),
            store_requests(&server, "head")
        ),
        (gets, heads),
        "the same queries again fetch nothing from S3"
    );
    assert!(cache_hits(&server, "memory") > memory_hits);
    assert!(
        server.metric("profusion_store_gateway_metadata_cache_requests_total{result=\"hit\"}")
            > 0.0
    );

    // Only the disk tier: a restarted server reads what the last one cached.
    let cache_dir = tempfile::tempdir().unwrap();
    let disk = format!(
        "--store-gateway.cache.disk-path={}",
        cache_dir.path().display()
    );
    let disk_only: Vec<&str> = history
        .iter()
        .copied()
        .chain(["--store-gateway.cache.memory-bytes=0", disk.as_str()])
        .collect();
    server.stop();
    server.restart_with(&disk_only);
    check_totals(&server, &all, window, "cold disk cache");
    assert!(store_requests(&server, "get") > 0.0);
    server.stop();
    server.restart_with(&disk_only);
    check_totals(&server, &all, window, "disk cache after a restart");
    assert_eq!(
        store_requests(&server, "get"),
        0.0,
        "every byte came from the disk tier:\n{}",
        server.log()
    );
    assert!(cache_hits(&server, "disk") > 0.0);
}
