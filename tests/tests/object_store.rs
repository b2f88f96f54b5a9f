//! `--storage.url=s3://...` stores blocks in S3 through object_store's S3 client, here against
//! moto's S3-compatible server on loopback (no cloud is reachable from the test machines).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use profusion_tests::{TestServer, clients, post};
use serde_json::json;

struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn blocks_go_to_s3() {
    let Some(clients) = clients("blocks_go_to_s3") else {
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _moto = Moto(
        Command::new(&clients.python)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto"),
    );
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "moto did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let endpoint = format!("http://127.0.0.1:{port}");
    let s3 = r#"
import boto3, sys, json
s3 = boto3.client("s3", endpoint_url=sys.argv[1], aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
if sys.argv[2] == "create":
    s3.create_bucket(Bucket="profiles")
    print("created")
else:
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="profiles", Prefix="cluster-a/")["Contents"])
    import duckdb, tempfile
    samples = [k for k in keys if k.endswith("samples.parquet")][0]
    with tempfile.NamedTemporaryFile(suffix=".parquet") as f:
        f.write(s3.get_object(Bucket="profiles", Key=samples)["Body"].read())
        f.flush()
        total = duckdb.sql(f"SELECT service_name, sum(value)::BIGINT FROM read_parquet('{f.name}') GROUP BY 1").fetchall()
    print(json.dumps({"files": [k.rsplit("/", 1)[1] for k in keys], "total": [list(r) for r in total]}))
"#;
    assert_eq!(clients.python(s3, &[&endpoint, "create"]).trim(), "created");

    let mut server = TestServer::configure()
        .arg("--storage.url=s3://profiles/cluster-a")
        .env("AWS_ENDPOINT", &endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .spawn();
    let r = post(
        &server.url("/ingest?name=s3app.cpu"),
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
    let listed: serde_json::Value =
        serde_json::from_str(clients.python(s3, &[&endpoint, "list"]).trim()).unwrap();
    assert_eq!(
        listed,
        json!({
            "files": ["frames.parquet", "meta.json", "profiles.parquet", "samples.parquet", "series.parquet", "stacks.parquet"],
            "total": [["s3app", 30_000_000]]
        }),
        "{}",
        server.log()
    );
}
