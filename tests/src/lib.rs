//! End-to-end test harness: spawns the real `profusion` binary on a free port with its own
//! data directory, and gives tests the real clients (Python, Node, `buf`, DuckDB) that
//! `scripts/install-test-clients` put in the local cache.

#![allow(missing_docs)]

// The shared test support (fixtures, profile builders, decoders, the typed client), so an
// end-to-end test needs one import.
pub use profusion_testing::*;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `profusion` binary under test: `$PROFUSION_BIN`, or the one built beside this test.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("PROFUSION_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let bin = dir.join("profusion");
    assert!(
        bin.exists(),
        "{} does not exist: build it first with `cargo build -p profusion` (scripts/test does)",
        bin.display()
    );
    bin
}

/// A running server process.
#[derive(Debug)]
pub struct TestServer {
    child: Option<Child>,
    pub addr: String,
    pub data: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// A command the binary runs under (`prlimit --nofile=…`), if any.
    wrapper: Vec<String>,
    binary: PathBuf,
    log_level: String,
    stop_timeout: Duration,
    stderr_log: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

/// How to start a [`TestServer`]: `TestServer::configure().args(&[…]).env(…).spawn()`.
#[derive(Debug, Default, Clone)]
pub struct ServerBuilder {
    args: Vec<String>,
    env: Vec<(String, String)>,
    wrapper: Vec<String>,
    data: Option<PathBuf>,
    binary: Option<PathBuf>,
    log_level: Option<String>,
    stop_timeout: Option<Duration>,
}

impl ServerBuilder {
    /// Adds flags.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// Adds one flag.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Sets an environment variable of the process.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Runs the binary under `wrapper` (e.g. `["prlimit", "--nofile=256"]`, which execs it with
    /// that limit).
    pub fn wrapper(mut self, wrapper: &[&str]) -> Self {
        self.wrapper = wrapper.iter().map(|a| (*a).to_owned()).collect();
        self
    }

    /// Keeps the data in `dir` (kept after the server stops) instead of a fresh temporary one.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data = Some(dir.into());
        self
    }

    /// Runs `binary` instead of [`binary()`] (the benchmark runs an optimized build).
    pub fn binary(mut self, binary: impl Into<PathBuf>) -> Self {
        self.binary = Some(binary.into());
        self
    }

    /// The server's `--log.level` (`info` unless set).
    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = Some(level.to_owned());
        self
    }

    /// How long [`TestServer::stop`] waits for the graceful shutdown (60 s unless set; the
    /// benchmark's final flush of a week of history takes longer).
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = Some(timeout);
        self
    }

    /// Starts the real binary on a free loopback port and waits until `/ready` answers 200.
    /// Blocking, without a runtime of its own, so async harnesses may call it too.
    pub fn spawn(self) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = self.data.unwrap_or_else(|| dir.path().join("data"));
        let mut s = TestServer {
            child: None,
            addr: String::new(),
            data,
            args: self.args,
            env: self.env,
            wrapper: self.wrapper,
            binary: self.binary.unwrap_or_else(binary),
            log_level: self.log_level.unwrap_or_else(|| "info".to_owned()),
            stop_timeout: self.stop_timeout.unwrap_or(Duration::from_secs(60)),
            stderr_log: dir.path().join("server.log"),
            _dir: Some(dir),
        };
        s.spawn();
        s
    }
}

impl TestServer {
    /// How to start a server; see [`ServerBuilder`].
    pub fn configure() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// Starts a server on a fresh data directory with extra flags.
    pub fn start(args: &[&str]) -> Self {
        Self::configure().args(args).spawn()
    }

    /// The command that starts the binary with this server's data directory and flags, for
    /// tests that start a second process on it.
    pub fn command(&self) -> Command {
        let mut c = match self.wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&self.binary);
                c
            }
            None => Command::new(&self.binary),
        };
        c.arg("--server.http-listen-address=127.0.0.1")
            .arg("--server.http-listen-port=0")
            .arg(format!("--pyroscopedb.data-path={}", self.data.display()))
            .arg(format!("--log.level={}", self.log_level))
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    /// The server's peak resident memory so far, in bytes (`VmHWM` in `/proc/<pid>/status`).
    pub fn peak_rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("/proc/<pid>/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmHWM")
            * 1024
    }

    /// Whether the process is still running (it did not crash).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn spawn(&mut self) {
        self.spawn_process(true);
    }

    /// Starts the process; with `ready`, waits until it listens and answers `/ready`, else
    /// returns at once (for a process expected to die on its own before it is ready).
    fn spawn_process(&mut self, ready: bool) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_log)
            .expect("server log");
        let mut child = self
            .command()
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.binary.display()));
        if !ready {
            // Its stdout is dropped: a write to it after that only fails.
            self.child = Some(child);
            return;
        }
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        let mut reader = BufReader::new(stdout);
        let read = reader.read_line(&mut line).unwrap_or(0);
        if read == 0 {
            let _ = child.wait();
            panic!("profusion exited before listening:\n{}", self.log());
        }
        self.addr = line
            .trim()
            .rsplit("http://")
            .next()
            .expect("listening line")
            .to_owned();
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in reader.lines() {});
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.ready_status() == Some(200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server never became ready:\n{}", self.log());
    }

    /// The status of `GET /ready`, over a plain socket: no runtime, so the wait works from
    /// inside an async harness as well as from a plain test.
    fn ready_status(&self) -> Option<u16> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&self.addr).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            stream,
            "GET /ready HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).ok()?;
        // "HTTP/1.1 200"
        std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
    }

    /// A typed Connect client of this server.
    pub fn client(&self) -> ConnectClient {
        ConnectClient::new(self.url(""))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// SIGKILL: no flush, no cleanup.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP: the process stays, holding its connections, but answers nothing (a hung
    /// peer); [`Self::resume`] lets it go on.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`Self::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal} failed");
    }

    /// SIGTERM and wait: a graceful shutdown that flushes the head into blocks.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + self.stop_timeout;
            loop {
                if let Ok(Some(status)) = c.try_wait() {
                    assert!(
                        status.success(),
                        "profusion exited with {status}:\n{}",
                        self.log()
                    );
                    return;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    panic!(
                        "profusion did not stop within {:?}:\n{}",
                        self.stop_timeout,
                        self.log()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Starts the server again on the same data directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill the server first");
        self.spawn();
    }

    /// Starts the server again on the same data directory with other flags.
    pub fn restart_with(&mut self, args: &[&str]) {
        self.args = args.iter().map(|a| (*a).to_owned()).collect();
        self.restart();
    }

    /// Starts the server again with other flags under which it is expected to end on its own
    /// (a crash test's failure point), without waiting for it to become ready: it may abort
    /// before it does. Follow with [`Self::wait_for_exit`].
    pub fn restart_to_crash(&mut self, args: &[&str]) {
        assert!(self.child.is_none(), "stop or kill the server first");
        self.args = args.iter().map(|a| (*a).to_owned()).collect();
        self.spawn_process(false);
    }

    /// Waits for the process to end on its own (a crash, an abort) and returns how it ended.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("a running server");
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("profusion still running after {timeout:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The value of one sample of `/metrics` (`name{labels}` exactly as exposed), 0 when absent.
    pub fn metric(&self, sample: &str) -> f64 {
        metric_sample(&get(&self.url("/metrics"), &[]).text(), sample)
    }

    /// Block directories of `tenant` in the local object store.
    pub fn blocks(&self, tenant: &str) -> Vec<PathBuf> {
        let dir = self
            .data
            .join("objects")
            .join(tenant_dir(tenant))
            .join("blocks");
        let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|it| it.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        out.sort();
        out
    }
}

/// Compaction jobs a compactor ran, whatever their outcome.
pub fn compaction_jobs(server: &TestServer) -> f64 {
    ["done", "skipped", "conflict", "failed"]
        .iter()
        .map(|o| {
            server.metric(&format!(
                "profusion_compactor_jobs_total{{outcome=\"{o}\"}}"
            ))
        })
        .sum()
}

/// Waits until the compactor has run full cycles with nothing left to do.
pub fn wait_until_compacted(server: &TestServer) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let cycles = || server.metric("profusion_compactor_cycles_total");
    let (mut since_cycle, mut since_jobs) = (cycles(), compaction_jobs(server));
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        let (c, j) = (cycles(), compaction_jobs(server));
        if j != since_jobs {
            (since_cycle, since_jobs) = (c, j);
        } else if c >= since_cycle + 3.0 {
            assert_eq!(
                server.metric("profusion_compactor_jobs_total{outcome=\"failed\"}"),
                0.0,
                "{}",
                server.log()
            );
            return;
        }
    }
    panic!("compaction did not settle:\n{}", server.log());
}

/// The value of one sample (`name{labels}` exactly as exposed) in a Prometheus text
/// exposition, 0 when absent.
pub fn metric_sample(exposition: &str, sample: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == sample).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// The sum of `family{label="v"}` over `values` in a Prometheus text exposition (absent
/// samples count 0).
pub fn metric_sum(exposition: &str, family: &str, label: &str, values: &[&str]) -> f64 {
    values
        .iter()
        .map(|v| metric_sample(exposition, &format!("{family}{{{label}=\"{v}\"}}")))
        .sum()
}

/// The directory name of a tenant in the object store: object_store percent-encodes `*`, the
/// one character tenant ids may hold that it reserves (docs/block-format.md).
pub fn tenant_dir(tenant: &str) -> String {
    tenant.replace('*', "%2A")
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

pub mod agents;
mod cluster;
pub mod emulators;
pub mod flood;
pub mod jfr;
pub mod reference;

pub use cluster::{Cluster, ClusterBackends};

/// Tiny blocking helpers over reqwest's async client, so tests stay plain `#[test]`s.
pub mod blocking {
    pub fn runtime() -> &'static tokio::runtime::Runtime {
        static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
        RT.get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime")
        })
    }

    /// GET returning the status code.
    pub fn get_status(url: &str) -> Result<u16, ::reqwest::Error> {
        runtime().block_on(async { Ok(::reqwest::get(url).await?.status().as_u16()) })
    }
}

/// A response as the tests inspect it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// POSTs `body` with headers over HTTP/1.1, or HTTP/2 with prior knowledge when `h2`.
pub fn post(url: &str, headers: &[(&str, &str)], body: Vec<u8>, h2: bool) -> Reply {
    blocking::runtime().block_on(async {
        let mut builder = ::reqwest::Client::builder();
        if h2 {
            builder = builder.http2_prior_knowledge();
        }
        let client = builder.build().expect("client");
        let mut req = client.post(url).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        reply(req.send().await.expect("request")).await
    })
}

/// The CPU flame-graph total (`numTicks` of `/pyroscope/render`) of `service` over the last
/// hour.
pub fn cpu_total_last_hour(server: &TestServer, service: &str) -> serde_json::Value {
    let render = get(
        &server.url(&format!(
            "/pyroscope/render?query=process_cpu:cpu:nanoseconds:cpu:nanoseconds\
             %7Bservice_name%3D%22{service}%22%7D&from=now-1h&until=now%2B1m"
        )),
        &[],
    );
    assert_eq!(render.status, 200, "{}", render.text());
    render.json()["flamebearer"]["numTicks"].clone()
}

/// GETs `url` with headers.
pub fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    blocking::runtime().block_on(async {
        let mut req = ::reqwest::Client::new().get(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        reply(req.send().await.expect("request")).await
    })
}

/// DELETEs `url` with headers.
pub fn delete(url: &str, headers: &[(&str, &str)]) -> Reply {
    blocking::runtime().block_on(async {
        let mut req = ::reqwest::Client::new().delete(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        reply(req.send().await.expect("request")).await
    })
}

async fn reply(resp: ::reqwest::Response) -> Reply {
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = resp.bytes().await.expect("body").to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

/// Paths of the real clients, from `scripts/install-test-clients`. `None` (with a printed
/// reason) when they are not installed, unless `PROFUSION_REQUIRE_CLIENTS=1`, where missing
/// clients fail the test instead of skipping it.
#[derive(Debug, Clone)]
pub struct Clients {
    pub python: PathBuf,
    /// The Python with DuckDB 1.4.4 and its Delta Lake extension (a venv of its own).
    pub python_delta: PathBuf,
    pub node_modules: PathBuf,
    pub buf: PathBuf,
}

pub fn clients(test: &str) -> Option<Clients> {
    let get = |k: &str| {
        std::env::var_os(k)
            .map(PathBuf::from)
            .filter(|p| p.exists())
    };
    match (
        get("PROFUSION_PYTHON"),
        get("PROFUSION_PYTHON_DELTA"),
        get("PROFUSION_NODE_MODULES"),
        get("PROFUSION_BUF"),
    ) {
        (Some(python), Some(python_delta), Some(node_modules), Some(buf)) => Some(Clients {
            python,
            python_delta,
            node_modules,
            buf,
        }),
        _ => {
            let msg = format!(
                "{test}: real test clients are not installed; run scripts/test (or `eval \"$(scripts/install-test-clients)\"`)"
            );
            if std::env::var("PROFUSION_REQUIRE_CLIENTS").as_deref() == Ok("1") {
                panic!("{msg}");
            }
            eprintln!("SKIPPED {msg}");
            None
        }
    }
}

impl Clients {
    /// Runs a Python script with the clients' interpreter; returns its stdout.
    pub fn python(&self, script: &str, args: &[&str]) -> String {
        let out = Command::new(&self.python)
            .arg("-c")
            .arg(script)
            .args(args)
            .output()
            .expect("run python");
        assert!(
            out.status.success(),
            "python failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Runs a DuckDB query over the server's object store (`{store}` in the SQL is replaced by
    /// its path) and returns the rows as JSON arrays.
    pub fn duckdb(&self, store: &Path, sql: &str) -> Vec<serde_json::Value> {
        let sql = sql.replace("{store}", &store.display().to_string());
        let script = r#"
import duckdb, json, sys
rows = duckdb.sql(sys.argv[1]).fetchall()
print(json.dumps([list(r) for r in rows], default=str))
"#;
        let out = self.python(script, &[&sql]);
        serde_json::from_str(out.trim()).expect("duckdb JSON")
    }
}

/// DuckDB SQL (the one `docs/block-format.md` gives) listing `service_name`, `profile_type`,
/// the root-first `;`-joined stack and the summed value over every block of `tenant`.
pub fn stacks_sql(tenant: &str) -> String {
    let b = format!("{{store}}/{tenant}/blocks/*");
    format!(
        "WITH stacks AS (SELECT DISTINCT stack_hash, frame_ids FROM read_parquet('{b}/stacks.parquet')),
              frames AS (SELECT DISTINCT frame_id, function_name FROM read_parquet('{b}/frames.parquet')),
              named AS (
                SELECT s.stack_hash, string_agg(f.function_name, ';' ORDER BY u.pos) AS stack
                FROM stacks s, unnest(s.frame_ids) WITH ORDINALITY AS u(frame_id, pos)
                JOIN frames f ON f.frame_id = u.frame_id
                GROUP BY s.stack_hash)
         SELECT x.service_name, x.profile_type, n.stack, sum(x.value)::BIGINT AS total
         FROM read_parquet('{b}/samples.parquet') x JOIN named n USING (stack_hash)
         GROUP BY ALL ORDER BY ALL"
    )
}

/// Pushes one CPU profile (`cpu:nanoseconds`, 10 ms period) over Connect with these series
/// labels and root-first `;`-joined stacks, and asserts it was accepted.
pub fn push_cpu(
    server: &TestServer,
    labels: &[(&str, &str)],
    stacks: &[(&str, i64)],
    time_nanos: i64,
) {
    push_cpu_as(server, None, labels, stacks, time_nanos);
}

/// [`push_cpu`] as `tenant` (the `x-scope-orgid` header), when given.
pub fn push_cpu_as(
    server: &TestServer,
    tenant: Option<&str>,
    labels: &[(&str, &str)],
    stacks: &[(&str, i64)],
    time_nanos: i64,
) {
    use prost::Message;
    let frames: Vec<Vec<&str>> = stacks.iter().map(|(s, _)| s.split(';').collect()).collect();
    let stacks: Vec<(&[&str], i64)> = frames
        .iter()
        .zip(stacks)
        .map(|(f, (_, v))| (f.as_slice(), *v))
        .collect();
    let req = push_request(labels, cpu_pprof(time_nanos, &stacks).encode_to_vec(), "");
    let mut headers = vec![("content-type", "application/proto")];
    headers.extend(tenant.map(|t| ("x-scope-orgid", t)));
    let r = post(
        &server.url("/push.v1.PusherService/Push"),
        &headers,
        req.encode_to_vec(),
        false,
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Calls a Connect RPC at `path` with binary protobuf, as `tenant` when given: the decoded
/// answer, or the HTTP status and the body text.
pub fn connect_call<Req: prost::Message, Resp: prost::Message + Default>(
    server: &TestServer,
    path: &str,
    tenant: Option<&str>,
    req: &Req,
) -> Result<Resp, (u16, String)> {
    let mut client = server.client();
    if let Some(t) = tenant {
        client = client.tenant(t);
    }
    blocking::runtime()
        .block_on(client.call(path, req))
        .map_err(|e| (e.status, e.body))
}

/// The whole flame graph (every node) of `profile_type` for `selector` over `[start, end]`
/// (Unix ms), as `path -> (total, self)`, decoded independently of the engine.
pub fn whole_flame_graph(
    server: &TestServer,
    profile_type: &str,
    selector: &str,
    (start, end): (i64, i64),
) -> std::collections::BTreeMap<String, (i64, i64)> {
    use profusion_proto::querier::v1::{
        SelectMergeStacktracesRequest, SelectMergeStacktracesResponse,
    };
    let resp: SelectMergeStacktracesResponse = connect_call(
        server,
        "/querier.v1.QuerierService/SelectMergeStacktraces",
        None,
        &SelectMergeStacktracesRequest {
            profile_type_id: profile_type.into(),
            label_selector: selector.into(),
            start,
            end,
            max_nodes: Some(1_048_576),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{profile_type} {selector}: {e:?}"));
    decode_flamegraph(&resp.flamegraph.unwrap_or_default())
}

/// `/pyroscope/render`'s flame-graph total (`numTicks`) for `query` over `[from, until]` (Unix
/// ms), as Grafana reads it.
pub fn render_total(server: &TestServer, query: &str, (from, until): (i64, i64)) -> i64 {
    let query: String = url::form_urlencoded::byte_serialize(query.as_bytes()).collect();
    let r = get(
        &server.url(&format!(
            "/pyroscope/render?query={query}&from={from}&until={until}"
        )),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["flamebearer"]["numTicks"]
        .as_i64()
        .unwrap_or_else(|| panic!("numTicks in {}", r.text()))
}

/// A small fleet several query tests push: (service, env, root-first stack, value in ns).
pub const SMALL_FLEET: &[(&str, &str, &str, i64)] = &[
    ("api", "prod", "main;handle;db", 50_000_000),
    ("api", "prod", "main;handle;render", 30_000_000),
    ("api", "dev", "main;handle;db", 10_000_000),
    ("web", "prod", "main;serve", 20_000_000),
];

/// Pushes [`SMALL_FLEET`] at `time`, one CPU profile per sample.
pub fn push_small_fleet(server: &TestServer, time: i64) {
    for (service, env, stack, value) in SMALL_FLEET {
        push_cpu(
            server,
            &[
                ("__name__", "process_cpu"),
                ("service_name", service),
                ("env", env),
            ],
            &[(stack, *value)],
            time,
        );
    }
}

/// The reference tree of the [`SMALL_FLEET`] samples `keep` picks by (service, env), pushed
/// `times` times.
pub fn small_fleet_tree(
    keep: impl Fn(&str, &str) -> bool,
    times: i64,
) -> std::collections::BTreeMap<String, (i64, i64)> {
    let stacks: Vec<(Vec<String>, i64)> = SMALL_FLEET
        .iter()
        .filter(|(s, e, _, _)| keep(s, e))
        .map(|(_, _, stack, v)| (stack.split(';').map(str::to_owned).collect(), v * times))
        .collect();
    reference_tree(&stacks)
}

/// Runs `profusion tokens …` finding the catalog through `catalog_flag`
/// (`--pyroscopedb.data-path=…` or `--catalog.url=…`); its stdout, trimmed.
pub fn tokens_cli(catalog_flag: &str, args: &[&str]) -> String {
    let out = Command::new(binary())
        .arg(catalog_flag)
        .arg("--log.level=warn")
        .arg("tokens")
        .args(args)
        .output()
        .expect("run profusion tokens");
    assert!(
        out.status.success(),
        "profusion tokens {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8 output")
        .trim()
        .to_owned()
}

/// A new token of `tenant` with `scopes` (`read,write`) in the catalog of data directory
/// `data`, as `profusion tokens create` prints it once.
pub fn create_token(data: &Path, tenant: &str, scopes: &str) -> String {
    let flag = format!("--pyroscopedb.data-path={}", data.display());
    let token = tokens_cli(&flag, &["create", "--tenant", tenant, "--scope", scopes]);
    assert!(token.starts_with("pfs_"), "{token}");
    token
}

/// The recorded OTLP request (`captures/otlp-synthetic`), its profiles moved to `now`.
pub fn otlp_capture_pb(now: i64) -> Vec<u8> {
    use profusion_proto::otlp::collector::ExportProfilesServiceRequest;
    use prost::Message;
    let raw = std::fs::read(fixtures_dir().join("captures/otlp-synthetic/otlp_profiles_v1.10.pb"))
        .expect("the OTLP capture");
    let mut req = ExportProfilesServiceRequest::decode(raw.as_slice()).expect("an OTLP request");
    for p in req
        .resource_profiles
        .iter_mut()
        .flat_map(|r| r.scope_profiles.iter_mut())
        .flat_map(|s| s.profiles.iter_mut())
    {
        p.time_unix_nano = now as u64;
    }
    req.encode_to_vec()
}
