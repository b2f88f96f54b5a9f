//! The real agents the end-to-end tests run: PyPI `pyroscope-io` (Connect Push) and npm
//! `@pyroscope/nodejs` (legacy `/ingest`), each profiling a few seconds of real work, and
//! `buf curl` for the queries a Grafana data source makes.

use std::path::Path;
use std::process::Command;

use crate::Clients;

/// Service `agent.python`, tags `suite=e2e` and `phase=hot`, functions `crunch_numbers` and
/// `request_loop`.
const PYTHON_AGENT: &str = r#"
import sys, time
import pyroscope

pyroscope.configure(application_name="agent.python", server_address=sys.argv[1], sample_rate=100,
                    upload_interval=1, tags={"suite": "e2e"})

def crunch_numbers():
    total = 0
    for i in range(200_000):
        total += i * i
    return total

def request_loop(seconds):
    end = time.time() + seconds
    while time.time() < end:
        with pyroscope.tag_wrapper({"phase": "hot"}):
            crunch_numbers()

request_loop(4)
pyroscope.shutdown()
print("done")
"#;

/// Service `agent-node`, tag `suite=e2e`, function `fibonacciWork`.
const NODE_AGENT: &str = r#"
const Pyroscope = require('@pyroscope/nodejs');
Pyroscope.init({
  serverAddress: process.argv[process.argv.length - 1],
  appName: 'agent-node',
  flushIntervalMs: 1000,
  wall: { samplingDurationMs: 1000, collectCpuTime: true },
  tags: { suite: 'e2e' },
});
Pyroscope.start();

function fibonacciWork(n) { return n < 2 ? n : fibonacciWork(n - 1) + fibonacciWork(n - 2); }

async function main() {
  const end = Date.now() + 4000;
  while (Date.now() < end) {
    fibonacciWork(22);
    await new Promise((resolve) => setImmediate(resolve));
  }
  await Pyroscope.stop();
  console.log('done');
}
main();
"#;

/// Runs the Python agent against the server at `url` until it has shut down.
pub fn run_python_agent(clients: &Clients, url: &str) {
    let out = clients.python(PYTHON_AGENT, &[url]);
    assert_eq!(out.trim(), "done");
}

/// Runs the Node.js agent against the server at `url` until it has stopped.
pub fn run_node_agent(clients: &Clients, url: &str) {
    let out = Command::new("node")
        .arg("-e")
        .arg(NODE_AGENT)
        .arg(url)
        .env("NODE_PATH", &clients.node_modules)
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "node failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "done");
}

/// `buf curl` of `querier.v1.QuerierService/<method>` at `base` (a server's URL without a
/// path) with a JSON body, over Connect with binary protobuf; the JSON answer.
pub fn buf_curl(clients: &Clients, base: &str, method: &str, body: &str) -> Vec<u8> {
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto/proto");
    let out = Command::new(&clients.buf)
        .args(["curl", "--schema"])
        .arg(&schema)
        .args(["--protocol", "connect", "-d", body])
        .arg(format!("{base}/querier.v1.QuerierService/{method}"))
        .output()
        .expect("run buf");
    assert!(
        out.status.success(),
        "{method}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
