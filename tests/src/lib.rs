//! End-to-end test harness: spawns the real `profusion` binary on a free port with its own
//! data directory, and gives tests the real clients (Python, Node, `buf`, DuckDB) that
//! `scripts/install-test-clients` put in the local cache.

#![allow(missing_docs)]

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
        "{} does not exist: build it first with `cargo build -p profusion-api` (scripts/test does)",
        bin.display()
    );
    bin
}

/// The fixtures and captures kept in the repository (`tests/fixtures/`, see its README).
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
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
    stderr_log: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// Starts a server on a fresh data directory with extra flags.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// Starts a server with extra flags and environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_wrapped(&[], args, env)
    }

    /// Starts a server under `wrapper` (e.g. `["prlimit", "--nofile=256"]`, which execs it with
    /// that limit), with extra flags and environment variables.
    pub fn start_wrapped(wrapper: &[&str], args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let mut s = Self {
            child: None,
            addr: String::new(),
            data,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            wrapper: wrapper.iter().map(|a| (*a).to_owned()).collect(),
            stderr_log: dir.path().join("server.log"),
            _dir: Some(dir),
        };
        s.spawn();
        s
    }

    /// The command that starts the binary with this server's data directory and flags, for
    /// tests that start a second process on it.
    pub fn command(&self) -> Command {
        let mut c = match self.wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(binary());
                c
            }
            None => Command::new(binary()),
        };
        c.arg("--server.http-listen-address=127.0.0.1")
            .arg("--server.http-listen-port=0")
            .arg(format!("--pyroscopedb.data-path={}", self.data.display()))
            .arg("--log.level=info")
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
            .expect("spawn profusion");
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
            if let Ok(r) = blocking::get_status(&self.url("/ready"))
                && r == 200
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server never became ready:\n{}", self.log());
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

    /// SIGTERM and wait: a graceful shutdown that flushes the head into blocks.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(60);
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
                    panic!("profusion did not stop within 60s:\n{}", self.log());
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

/// One uncompressed gRPC message frame: flag byte, big-endian length, message.
pub fn grpc_frame(msg: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8];
    v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    v.extend_from_slice(msg);
    v
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

/// Paths of the real clients, from `scripts/install-test-clients`. `None` (with a printed
/// reason) when they are not installed, unless `PROFUSION_REQUIRE_CLIENTS=1`, where missing
/// clients fail the test instead of skipping it.
#[derive(Debug, Clone)]
pub struct Clients {
    pub python: PathBuf,
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
        get("PROFUSION_NODE_MODULES"),
        get("PROFUSION_BUF"),
    ) {
        (Some(python), Some(node_modules), Some(buf)) => Some(Clients {
            python,
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

/// Unix time now in nanoseconds.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as i64
}

/// One sample of a test profile: root-first function names, value, sample labels.
#[derive(Debug, Clone)]
pub struct TestSample<'a> {
    pub stack: &'a [&'a str],
    pub value: i64,
    pub labels: &'a [(&'a str, &'a str)],
}

/// Builds a pprof with one sample type; `sample_type` and `period_type` are (type, unit).
pub fn pprof(
    sample_type: (&str, &str),
    period_type: (&str, &str),
    period: i64,
    time_nanos: i64,
    samples: &[TestSample<'_>],
) -> profusion_proto::google::v1::Profile {
    use profusion_proto::google::v1::{
        Function, Label, Line, Location, Profile, Sample, ValueType,
    };
    let mut strings = vec![String::new()];
    let mut intern = |s: &str| -> i64 {
        if let Some(i) = strings.iter().position(|x| x == s) {
            return i as i64;
        }
        strings.push(s.to_owned());
        strings.len() as i64 - 1
    };
    let st = ValueType {
        r#type: intern(sample_type.0),
        unit: intern(sample_type.1),
    };
    let pt = ValueType {
        r#type: intern(period_type.0),
        unit: intern(period_type.1),
    };
    let mut functions: Vec<Function> = Vec::new();
    let mut out = Vec::new();
    for s in samples {
        let mut location_id = Vec::new();
        for name in s.stack.iter().rev() {
            let n = intern(name);
            let f = intern("main.go");
            let id = match functions.iter().find(|x| x.name == n) {
                Some(x) => x.id,
                None => {
                    let id = functions.len() as u64 + 1;
                    functions.push(Function {
                        id,
                        name: n,
                        system_name: n,
                        filename: f,
                        start_line: 1,
                    });
                    id
                }
            };
            location_id.push(id);
        }
        let label = s
            .labels
            .iter()
            .map(|(k, v)| Label {
                key: intern(k),
                str: intern(v),
                ..Label::default()
            })
            .collect();
        out.push(Sample {
            location_id,
            value: vec![s.value],
            label,
        });
    }
    let location = functions
        .iter()
        .map(|f| Location {
            id: f.id,
            line: vec![Line {
                function_id: f.id,
                line: 10,
            }],
            ..Location::default()
        })
        .collect();
    Profile {
        sample_type: vec![st],
        sample: out,
        location,
        function: functions,
        string_table: strings,
        time_nanos,
        duration_nanos: 10_000_000_000,
        period_type: Some(pt),
        period,
        ..Profile::default()
    }
}

/// A CPU profile (`cpu:nanoseconds`, 10 ms period) at `time_nanos`.
pub fn cpu_pprof(
    time_nanos: i64,
    stacks: &[(&[&str], i64)],
) -> profusion_proto::google::v1::Profile {
    let samples: Vec<TestSample<'_>> = stacks
        .iter()
        .map(|(stack, value)| TestSample {
            stack,
            value: *value,
            labels: &[],
        })
        .collect();
    pprof(
        ("cpu", "nanoseconds"),
        ("cpu", "nanoseconds"),
        10_000_000,
        time_nanos,
        &samples,
    )
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

/// A private PostgreSQL server in a temporary directory, started from the installed binaries
/// (through `runuser -u postgres` when running as root), stopped on drop.
#[derive(Debug)]
pub struct PostgresServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

impl PostgresServer {
    /// Starts one, or prints why `test` is skipped and returns None when this machine has no
    /// PostgreSQL server binaries.
    pub fn start(test: &str) -> Option<Self> {
        let Some(server) = Self::try_start() else {
            eprintln!(
                "SKIPPED {test}: no PostgreSQL server binaries under /usr/lib/postgresql/*/bin (install the postgresql package)"
            );
            return None;
        };
        Some(server)
    }

    fn try_start() -> Option<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .find(|b| b.join("initdb").exists())?;
        let dir = tempfile::Builder::new()
            .prefix("profusion-pg")
            .tempdir_in("/tmp")
            .ok()?;
        let as_postgres = Command::new("id").arg("-u").output().ok()?.stdout == b"0\n";
        if as_postgres {
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .ok()?;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let pg = Self {
            bin,
            dir,
            port,
            as_postgres,
        };
        let data = pg.dir.path().join("data");
        pg.run(
            "initdb",
            &[
                "-D",
                data.to_str()?,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        )?;
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            pg.port,
            pg.dir.path().display()
        );
        let log = pg.dir.path().join("log");
        pg.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str()?,
                "-o",
                &opts,
                "-l",
                log.to_str()?,
                "-w",
                "start",
            ],
        )?;
        Some(pg)
    }

    fn run(&self, tool: &str, args: &[&str]) -> Option<()> {
        let exe = self.bin.join(tool);
        let status = if self.as_postgres {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .status()
        } else {
            Command::new(&exe).args(args).status()
        };
        match status {
            Ok(s) if s.success() => Some(()),
            other => {
                eprintln!("{tool} failed: {other:?}");
                None
            }
        }
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = self.run(
            "pg_ctl",
            &["-D", data.to_str().unwrap_or(""), "-m", "immediate", "stop"],
        );
    }
}

/// A one-series, one-sample `PushRequest` carrying `raw_profile` (pprof bytes, gzipped or not)
/// under the given series labels.
pub fn push_request(
    labels: &[(&str, &str)],
    raw_profile: Vec<u8>,
    id: &str,
) -> profusion_proto::push::v1::PushRequest {
    use profusion_proto::push::v1::{PushRequest, RawProfileSeries, RawSample};
    use profusion_proto::types::v1::LabelPair;
    PushRequest {
        series: vec![RawProfileSeries {
            labels: labels
                .iter()
                .map(|(name, value)| LabelPair {
                    name: (*name).into(),
                    value: (*value).into(),
                })
                .collect(),
            samples: vec![RawSample {
                raw_profile: raw_profile.into(),
                id: id.into(),
            }],
            annotations: vec![],
        }],
    }
}

/// Decodes flame-graph levels (`width` values per node) into `path -> (total, self)` for side
/// `side`, checking that each node lies inside its parent's span after the parent's self.
pub fn decode_levels(
    names: &[String],
    levels: &[Vec<i64>],
    width: usize,
    side: usize,
) -> std::collections::BTreeMap<String, (i64, i64)> {
    // Absolute (x, total, self, path) of each node per level.
    let mut rows: Vec<Vec<(i64, i64, i64, String)>> = Vec::new();
    for (depth, level) in levels.iter().enumerate() {
        let mut row = Vec::new();
        let mut end = 0;
        for node in level.chunks(width) {
            let (dx, total, self_value) = (node[3 * side], node[3 * side + 1], node[3 * side + 2]);
            let x = end + dx;
            end = x + total;
            // A node absent on this side of a diff has no width there, and neither do its
            // children; it would only blur which parent a child belongs to.
            if total == 0 && width == 7 {
                continue;
            }
            let name = &names[node[width - 1] as usize];
            let path = if depth == 0 {
                name.clone()
            } else {
                let parent = rows[depth - 1]
                    .iter()
                    .find(|(px, pt, ps, _): &&(i64, i64, i64, String)| {
                        x >= px + ps && x + total <= px + pt
                    })
                    .unwrap_or_else(|| panic!("node {name} at x={x} has no parent"));
                format!("{};{name}", parent.3)
            };
            row.push((x, total, self_value, path));
        }
        rows.push(row);
    }
    rows.into_iter()
        .flatten()
        .map(|(_, t, s, p)| (p, (t, s)))
        .collect()
}

/// `path -> (total, self)` of a flame graph, decoded independently of the engine.
pub fn decode_flamegraph(
    fg: &profusion_proto::querier::v1::FlameGraph,
) -> std::collections::BTreeMap<String, (i64, i64)> {
    let levels: Vec<Vec<i64>> = fg.levels.iter().map(|l| l.values.clone()).collect();
    decode_levels(&fg.names, &levels, 4, 0)
}

/// The reference the engine is checked against: `path -> (total, self)` computed directly from
/// root-first stacks and values, with the virtual root named `total`.
pub fn reference_tree(
    stacks: &[(Vec<String>, i64)],
) -> std::collections::BTreeMap<String, (i64, i64)> {
    let mut out: std::collections::BTreeMap<String, (i64, i64)> = std::collections::BTreeMap::new();
    for (stack, value) in stacks {
        let mut path = "total".to_owned();
        out.entry(path.clone()).or_default().0 += value;
        for (i, frame) in stack.iter().enumerate() {
            path = format!("{path};{frame}");
            let e = out.entry(path.clone()).or_default();
            e.0 += value;
            if i + 1 == stack.len() {
                e.1 += value;
            }
        }
    }
    out
}

/// Pushes one CPU profile (`cpu:nanoseconds`, 10 ms period) over Connect with these series
/// labels and root-first `;`-joined stacks, and asserts it was accepted.
pub fn push_cpu(
    server: &TestServer,
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
    let r = post(
        &server.url("/push.v1.PusherService/Push"),
        &[("content-type", "application/proto")],
        req.encode_to_vec(),
        false,
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Root-first stacks (`;`-joined function names) and summed values of a pprof answer, read
/// through its location and function tables.
pub fn pprof_stacks(
    p: &profusion_proto::google::v1::Profile,
) -> std::collections::BTreeMap<String, i64> {
    let name = |location: u64| -> String {
        let loc = p
            .location
            .iter()
            .find(|l| l.id == location)
            .expect("location");
        let f = p
            .function
            .iter()
            .find(|f| f.id == loc.line[0].function_id)
            .expect("function");
        p.string_table[f.name as usize].clone()
    };
    let mut out = std::collections::BTreeMap::new();
    for s in &p.sample {
        let stack: Vec<String> = s.location_id.iter().rev().map(|l| name(*l)).collect();
        *out.entry(stack.join(";")).or_default() += s.value[0];
    }
    out
}

/// Calls a Connect RPC at `path` with binary protobuf, as `tenant` when given: the decoded
/// answer, or the HTTP status and the body text.
pub fn connect_call<Req: prost::Message, Resp: prost::Message + Default>(
    server: &TestServer,
    path: &str,
    tenant: Option<&str>,
    req: &Req,
) -> Result<Resp, (u16, String)> {
    let mut headers = vec![("content-type", "application/proto")];
    if let Some(t) = tenant {
        headers.push(("x-scope-orgid", t));
    }
    let r = post(&server.url(path), &headers, req.encode_to_vec(), false);
    if r.status == 200 {
        Ok(Resp::decode(r.body.as_slice()).expect("response"))
    } else {
        Err((r.status, r.text()))
    }
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

/// A seedable xorshift generator for mutation tests.
#[derive(Debug, Clone)]
pub struct MutationRng(pub u64);

impl MutationRng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// One to four mutations of `seed`: bit flips, truncations, bytes set to one of `boundary`,
/// random splices and self-copies, the shapes that break hand-written parsers.
pub fn mutate(seed: &[u8], rng: &mut MutationRng, boundary: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(5) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 => v.truncate(rng.below(v.len() + 1)),
            2 if !v.is_empty() && !boundary.is_empty() => {
                let i = rng.below(v.len());
                v[i] = boundary[rng.below(boundary.len())];
            }
            3 => {
                let i = rng.below(v.len() + 1);
                let extra: Vec<u8> = (0..rng.below(16)).map(|_| rng.next_u64() as u8).collect();
                v.splice(i..i, extra);
            }
            _ if v.len() > 2 => {
                let (a, b) = (rng.below(v.len()), rng.below(v.len()));
                let (a, b) = (a.min(b), a.max(b));
                let chunk = v[a..b].to_vec();
                v.extend_from_slice(&chunk);
            }
            _ => {}
        }
    }
    v
}
