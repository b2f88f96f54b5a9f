//! Test support every crate's tests share, with no server in it: the repository's fixtures,
//! profiles and requests built by hand, independent decoders of answers and the reference trees
//! they are compared with, seeded mutations of hostile inputs, a private PostgreSQL server, and
//! the typed Connect client the end-to-end tests and the benchmark call the server with.
//!
//! The end-to-end harness that spawns `profusion` itself is `profusion-tests`; unit tests depend
//! on this crate only.

#![allow(missing_docs)]

pub mod client;
pub mod fixtures;
pub mod flamegraph;
pub mod mutation;
pub mod postgres;
pub mod profiles;
pub mod rng;

pub use client::{CallError, ConnectClient};
pub use fixtures::fixtures_dir;
pub use flamegraph::{decode_flamegraph, decode_levels, pprof_stacks, reference_tree};
pub use mutation::{MutationRng, mutate};
pub use postgres::PostgresServer;
pub use profiles::{TestSample, cpu_pprof, grpc_frame, gzip, now_nanos, pprof, push_request};
pub use rng::Rng;
