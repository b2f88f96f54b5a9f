//! The real agents, profiling real workloads against the real server: PyPI `pyroscope-io`
//! (Connect Push) and npm `@pyroscope/nodejs` (legacy `/ingest`).

use profusion_tests::agents::{run_node_agent, run_python_agent};
use profusion_tests::{TestServer, clients};
use serde_json::Value;

/// What an agent left in the blocks of tenant `anonymous`.
#[derive(Debug)]
struct Stored {
    /// `service_name profile_type`, sorted.
    types: Vec<String>,
    functions: Vec<String>,
    /// `name=value` of every series label.
    labels: Vec<String>,
}

fn stored(clients: &profusion_tests::Clients, server: &TestServer) -> Stored {
    let b = "'{store}/anonymous/blocks/*";
    let distinct = |sql: String| -> Vec<String> {
        clients
            .duckdb(&server.data.join("objects"), &sql)
            .into_iter()
            .map(|row| match &row[0] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect()
    };
    Stored {
        types: distinct(format!(
            "SELECT DISTINCT service_name || ' ' || profile_type FROM read_parquet({b}/samples.parquet') ORDER BY 1"
        )),
        functions: distinct(format!(
            "SELECT DISTINCT function_name FROM read_parquet({b}/frames.parquet')"
        )),
        labels: distinct(format!(
            "SELECT DISTINCT l.name || '=' || l.value FROM read_parquet({b}/series.parquet'), unnest(labels) AS u(l) ORDER BY 1"
        )),
    }
}

#[test]
fn pyroscope_io_python_agent() {
    let Some(clients) = clients("pyroscope_io_python_agent") else {
        return;
    };
    let mut server = TestServer::start(&[]);
    run_python_agent(&clients, &server.url(""));
    server.stop();
    let Stored {
        types,
        functions,
        labels,
    } = stored(&clients, &server);
    assert_eq!(
        types,
        ["agent.python process_cpu:cpu:nanoseconds:cpu:nanoseconds"],
        "{}",
        server.log()
    );
    for f in ["crunch_numbers", "request_loop"] {
        assert!(functions.iter().any(|x| x == f), "{f} not in {functions:?}");
    }
    for l in [
        "suite=e2e",
        "phase=hot",
        "service_name=agent.python",
        "__name__=process_cpu",
    ] {
        assert!(labels.iter().any(|x| x == l), "{l} not in {labels:?}");
    }
}

#[test]
fn pyroscope_nodejs_agent() {
    let Some(clients) = clients("pyroscope_nodejs_agent") else {
        return;
    };
    let mut server = TestServer::start(&[]);
    run_node_agent(&clients, &server.url(""));
    server.stop();
    let Stored {
        types,
        functions,
        labels,
    } = stored(&clients, &server);
    for t in [
        "agent-node wall:wall:nanoseconds:wall:nanoseconds",
        "agent-node wall:cpu:nanoseconds:wall:nanoseconds",
        "agent-node memory:inuse_space:bytes:inuse_space:bytes",
    ] {
        assert!(
            types.iter().any(|x| x == t),
            "{t} not in {types:?}\n{}",
            server.log()
        );
    }
    assert!(
        functions.iter().any(|f| f.contains("fibonacciWork")),
        "fibonacciWork not in {functions:?}"
    );
    for l in [
        "suite=e2e",
        "pyroscope_spy=nodespy",
        "process.runtime.name=nodejs",
    ] {
        assert!(labels.iter().any(|x| x == l), "{l} not in {labels:?}");
    }
}
