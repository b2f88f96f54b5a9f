//! The harness of microservices mode: one `profusion` process per role on loopback, over a
//! private PostgreSQL catalog and an S3 bucket (moto), as `scripts/cluster` starts them for
//! people to try.

use std::time::Duration;

use crate::emulators::ObjectStoreEmulator;
use crate::postgres::PostgresServer;
use crate::{Clients, ServerBuilder, TestServer};

/// What the processes of a cluster share: the catalog and the object store.
#[derive(Debug)]
pub struct ClusterBackends {
    pub postgres: PostgresServer,
    pub s3: ObjectStoreEmulator,
}

impl ClusterBackends {
    /// A private PostgreSQL and a moto S3 bucket, or `None` (the test says it is skipped)
    /// when this machine has no PostgreSQL server binaries.
    pub fn start(test: &str, clients: &Clients) -> Option<Self> {
        let postgres = PostgresServer::start(test)?;
        let s3 = ObjectStoreEmulator::moto(clients, "profiles", "cluster");
        Some(Self { postgres, s3 })
    }
}

/// Several `profusion` processes started with different flags, each waited for until ready.
/// Nodes share nothing the harness does not give them (each has its own data directory);
/// flags such as a shared `--catalog.url` or `--storage.url` tie them together. Nodes are
/// killed before the backends stop.
#[derive(Debug, Default)]
pub struct Cluster {
    nodes: Vec<(String, TestServer)>,
    backends: Option<ClusterBackends>,
    /// Flags every process of the cluster gets.
    common: Vec<String>,
}

/// How often the harness's processes heartbeat, and when a silent one is unhealthy: short,
/// so tests see membership change in seconds.
const HEARTBEAT_PERIOD: &str = "--ring.heartbeat-period=300ms";
const HEARTBEAT_TIMEOUT: &str = "--ring.heartbeat-timeout=3s";

impl Cluster {
    pub fn new() -> Self {
        Self::default()
    }

    /// A cluster over `backends` with no process yet.
    pub fn on(backends: ClusterBackends) -> Self {
        Self {
            nodes: Vec::new(),
            backends: Some(backends),
            common: Vec::new(),
        }
    }

    /// Gives every process started from now on `args` too.
    pub fn with_args(mut self, args: &[&str]) -> Self {
        self.common.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// The seed cluster of microservices mode, each role its own process: three ingesters
    /// (`ingester-1..3`, replication factor 3), a distributor, a compactor, a query-scheduler,
    /// two store-gateways (`store-gateway-1`, `store-gateway-2`), two queriers (`querier-1`,
    /// `querier-2`) and a query-frontend.
    pub fn seed(mut self) -> Self {
        for i in 1..=3 {
            self.start_ingester(&format!("ingester-{i}"));
        }
        self.start_role("distributor", "distributor", &[]);
        self.start_role("compactor", "compactor", &[]);
        self.start_role("query-scheduler", "query-scheduler", &[]);
        for name in ["store-gateway-1", "store-gateway-2"] {
            self.start_role(name, "store-gateway", &[]);
        }
        self.start_querier("querier-1");
        self.start_querier("querier-2");
        self.start_role("query-frontend", "query-frontend", &[]);
        self
    }

    /// Starts a querier named `name`.
    pub fn start_querier(&mut self, name: &str) -> &TestServer {
        self.start_role(name, "querier", &[])
    }

    /// Flags every process of the cluster takes: the shared catalog and store, the
    /// replication factor and the heartbeat timing.
    pub fn node_config(&self) -> ServerBuilder {
        let backends = self
            .backends
            .as_ref()
            .expect("a cluster started with Cluster::on or Cluster::seed");
        let builder = TestServer::configure()
            .arg(format!("--catalog.url={}", backends.postgres.url()))
            .args(&[
                "--ingester.ring.replication-factor=3",
                HEARTBEAT_PERIOD,
                HEARTBEAT_TIMEOUT,
            ])
            .stop_timeout(Duration::from_secs(60))
            .args(&self.common.iter().map(String::as_str).collect::<Vec<_>>());
        backends.s3.configure(builder)
    }

    /// Starts the ingester `id` (also its node name).
    pub fn start_ingester(&mut self, id: &str) -> &TestServer {
        let config = self
            .node_config()
            .args(&["--target=ingester", &format!("--ingester.id={id}")]);
        self.start(id, config)
    }

    /// Starts a node named `name` running `target` (a role or a comma list), with `args`.
    pub fn start_role(&mut self, name: &str, target: &str, args: &[&str]) -> &TestServer {
        let config = self
            .node_config()
            .arg(format!("--target={target}"))
            .args(args);
        self.start(name, config)
    }

    /// Starts a node named `name` from `server` and waits until it is ready.
    pub fn start(&mut self, name: &str, server: ServerBuilder) -> &TestServer {
        assert!(
            self.nodes.iter().all(|(n, _)| n != name),
            "a node named {name} already runs"
        );
        self.nodes.push((name.to_owned(), server.spawn()));
        &self.nodes.last().expect("just pushed").1
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> &TestServer {
        self.nodes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s)
            .unwrap_or_else(|| panic!("no node named {name}"))
    }

    /// The node named `name`, to stop, kill or restart it.
    pub fn node_mut(&mut self, name: &str) -> &mut TestServer {
        self.nodes
            .iter_mut()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s)
            .unwrap_or_else(|| panic!("no node named {name}"))
    }

    /// Node names, in start order.
    pub fn names(&self) -> Vec<&str> {
        self.nodes.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The catalog and object store, when the cluster has them.
    pub fn backends(&self) -> Option<&ClusterBackends> {
        self.backends.as_ref()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The processes first: they hold connections to the backends.
        self.nodes.clear();
    }
}
