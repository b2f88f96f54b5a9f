//! Object stores the end-to-end tests run servers against: moto's S3 and azurite's Azure Blob
//! emulators, each a child process on a free loopback port, stopped on drop, with an empty
//! bucket or container ready (no cloud is reachable from the test machines).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Clients, ServerBuilder};

/// A running emulator and how a server reaches it.
#[derive(Debug)]
pub struct ObjectStoreEmulator {
    child: Child,
    /// The `--storage.url` of the bucket or container, under a prefix.
    pub storage_url: String,
    /// Where the emulator listens (`http://127.0.0.1:PORT`).
    pub endpoint: String,
    env: Vec<(&'static str, String)>,
}

impl Drop for ObjectStoreEmulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str) {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what} did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl ObjectStoreEmulator {
    /// Spawns `command` (an emulator told to listen on `port`) without output, and waits
    /// until it listens; a server reaches it with `storage_url` and `env`.
    fn start(
        mut command: Command,
        port: u16,
        what: &str,
        storage_url: String,
        env: Vec<(&'static str, String)>,
    ) -> Self {
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        let emulator = Self {
            child,
            storage_url,
            endpoint: format!("http://127.0.0.1:{port}"),
            env,
        };
        wait_for_port(port, what);
        emulator
    }

    /// moto's S3 server with the bucket `bucket`; the storage URL is `s3://bucket/prefix`.
    pub fn moto(clients: &Clients, bucket: &str, prefix: &str) -> Self {
        let port = free_port();
        let mut command = Command::new(&clients.python);
        command.args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ]);
        let emulator = Self::start(
            command,
            port,
            "moto",
            format!("s3://{bucket}/{prefix}"),
            vec![
                ("AWS_ENDPOINT", format!("http://127.0.0.1:{port}")),
                ("AWS_ALLOW_HTTP", "true".into()),
                ("AWS_ACCESS_KEY_ID", "test".into()),
                ("AWS_SECRET_ACCESS_KEY", "test".into()),
                ("AWS_REGION", "us-east-1".into()),
            ],
        );
        let create = r#"
import boto3, sys
s3 = boto3.client("s3", endpoint_url=sys.argv[1], aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
s3.create_bucket(Bucket=sys.argv[2])
"#;
        clients.python(create, &[&emulator.endpoint, bucket]);
        emulator
    }

    /// azurite's Blob service (the well-known emulator account) with the container
    /// `container`; the storage URL is `az://container/prefix`.
    pub fn azurite(clients: &Clients, container: &str, prefix: &str) -> Self {
        let port = free_port();
        let mut command = Command::new(clients.node_modules.join(".bin/azurite-blob"));
        command
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            // In memory, and without the telemetry that would try to reach the internet.
            .args([
                "--inMemoryPersistence",
                "--skipApiVersionCheck",
                "--disableTelemetry",
            ]);
        let emulator = Self::start(
            command,
            port,
            "azurite",
            format!("az://{container}/{prefix}"),
            vec![
                ("AZURE_STORAGE_USE_EMULATOR", "true".into()),
                (
                    "AZURITE_BLOB_STORAGE_URL",
                    format!("http://127.0.0.1:{port}"),
                ),
            ],
        );
        let create = r#"
import sys
from azure.storage.blob import BlobServiceClient
key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
url = sys.argv[1] + "/devstoreaccount1"
BlobServiceClient(account_url=url, credential={"account_name": "devstoreaccount1", "account_key": key}).create_container(sys.argv[2])
"#;
        clients.python(create, &[&emulator.endpoint, container]);
        emulator
    }

    /// The environment a process reaching this store needs (credentials, endpoint).
    pub fn env(&self) -> &[(&'static str, String)] {
        &self.env
    }

    /// The `--storage.url` flag of this store.
    pub fn storage_flag(&self) -> String {
        format!("--storage.url={}", self.storage_url)
    }

    /// `builder` with the flag and environment that point a server at this store.
    pub fn configure(&self, builder: ServerBuilder) -> ServerBuilder {
        let builder = builder.arg(self.storage_flag());
        self.env
            .iter()
            .fold(builder, |b, (name, value)| b.env(name, value))
    }
}
