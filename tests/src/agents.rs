//! The real agents the end-to-end tests run: PyPI `pyroscope-io` (Connect Push) and npm
//! `@pyroscope/nodejs` (legacy `/ingest`), each profiling a few seconds of real work, and
//! `buf curl` for the queries a Grafana data source makes.

use std::path::Path;
use std::process::Command;

use crate::Clients;

/// Service `agent.python`, tags `suite=e2e` and `phase=hot`, functions `crunch_numbers` and
/// `request_loop`. Given a tenant and a token, it sends them as its users configure them: HTTP
/// Basic (tenant as user, token as password) and the tenant header.
const PYTHON_AGENT: &str = r#"
import sys, time
import pyroscope

tenant, token = (sys.argv[2:4] + ["", ""])[:2]
pyroscope.configure(application_name="agent.python", server_address=sys.argv[1], sample_rate=100,
                    upload_interval=1, tags={"suite": "e2e"}, tenant_id=tenant,
                    basic_auth_username=tenant, basic_auth_password=token)

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

/// Service `agent-node`, tag `suite=e2e`, function `fibonacciWork`. Given `AGENT_TENANT` and
/// `AGENT_TOKEN`, it sends the token as a Bearer token and the tenant header.
const NODE_AGENT: &str = r#"
const Pyroscope = require('@pyroscope/nodejs');
Pyroscope.init({
  serverAddress: process.argv[process.argv.length - 1],
  tenantID: process.env.AGENT_TENANT || undefined,
  authToken: process.env.AGENT_TOKEN || undefined,
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
    run_python_agent_as(clients, url, None);
}

/// [`run_python_agent`] sending `(tenant, token)`.
pub fn run_python_agent_as(clients: &Clients, url: &str, credentials: Option<(&str, &str)>) {
    let (tenant, token) = credentials.unwrap_or_default();
    let out = clients.python(PYTHON_AGENT, &[url, tenant, token]);
    assert_eq!(out.trim(), "done");
}

/// Runs the Node.js agent against the server at `url` until it has stopped.
pub fn run_node_agent(clients: &Clients, url: &str) {
    run_node_agent_as(clients, url, None);
}

/// [`run_node_agent`] sending `(tenant, token)`.
pub fn run_node_agent_as(clients: &Clients, url: &str, credentials: Option<(&str, &str)>) {
    let (tenant, token) = credentials.unwrap_or_default();
    let out = Command::new("node")
        .arg("-e")
        .arg(NODE_AGENT)
        .arg(url)
        .env("NODE_PATH", &clients.node_modules)
        .env("AGENT_TENANT", tenant)
        .env("AGENT_TOKEN", token)
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
    buf_curl_with(clients, base, method, body, &[])
}

/// [`buf_curl`] with extra request headers (`Name: value`).
pub fn buf_curl_with(
    clients: &Clients,
    base: &str,
    method: &str,
    body: &str,
    headers: &[&str],
) -> Vec<u8> {
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto/proto");
    let mut command = Command::new(&clients.buf);
    command.args(["curl", "--schema"]).arg(&schema);
    for header in headers {
        command.args(["-H", header]);
    }
    let out = command
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
