//! One module per API family. Each owns its routes and the state its handlers share, built
//! from the services it calls; none reaches into another's state or into the process's wiring.

pub mod admin;
pub mod info;
pub mod ingest;
pub mod ingester;
pub mod ops;
pub mod querier;
pub mod render;
pub mod ring;
pub mod settings;
pub mod sql;
pub mod tokens;
pub mod ui;

use std::sync::Arc;

use profusion_engine::service::ReadService;

use crate::request::RequestRules;

/// What the read handlers share (the querier API and the legacy `/pyroscope/*` reads): the
/// request rules and the read service, whose limits and fairness every read goes through.
#[derive(Debug)]
pub struct ReadApi {
    pub rules: RequestRules,
    pub read: Arc<dyn ReadService>,
}
