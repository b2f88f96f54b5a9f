//! Protobuf messages of every API Profusion speaks, generated from the `.proto` files under
//! `proto/` (written for this project with the published field numbers), plus the canonical
//! protobuf JSON mapping that Connect clients use with `application/json`.
//!
//! Owns: wire types and their encodings. Must not hold behaviour: no validation, no I/O.

#![allow(missing_docs, unreachable_pub, missing_debug_implementations)]

pub mod google {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/google.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/google.v1.serde.rs"));
    }
}
pub mod types {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/types.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/types.v1.serde.rs"));
    }
}
pub mod push {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/push.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/push.v1.serde.rs"));
    }
}
pub mod querier {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/querier.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/querier.v1.serde.rs"));
    }
}
pub mod ingester {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/ingester.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/ingester.v1.serde.rs"));
    }
}
pub mod scheduler {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/scheduler.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/scheduler.v1.serde.rs"));
    }
}
pub mod settings {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/settings.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/settings.v1.serde.rs"));
    }
}
pub mod version {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/version.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/version.v1.serde.rs"));
    }
}
pub mod capabilities {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/capabilities.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/capabilities.v1.serde.rs"));
    }
}
pub mod status {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/status.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/status.v1.serde.rs"));
    }
}
pub mod opentelemetry {
    pub mod proto {
        pub mod common {
            pub mod v1 {
                include!(concat!(
                    env!("OUT_DIR"),
                    "/opentelemetry.proto.common.v1.rs"
                ));
                include!(concat!(
                    env!("OUT_DIR"),
                    "/opentelemetry.proto.common.v1.serde.rs"
                ));
            }
        }
        pub mod resource {
            pub mod v1 {
                include!(concat!(
                    env!("OUT_DIR"),
                    "/opentelemetry.proto.resource.v1.rs"
                ));
                include!(concat!(
                    env!("OUT_DIR"),
                    "/opentelemetry.proto.resource.v1.serde.rs"
                ));
            }
        }
        pub mod profiles {
            pub mod v1development {
                include!(concat!(
                    env!("OUT_DIR"),
                    "/opentelemetry.proto.profiles.v1development.rs"
                ));
                include!(concat!(
                    env!("OUT_DIR"),
                    "/opentelemetry.proto.profiles.v1development.serde.rs"
                ));
            }
        }
        pub mod collector {
            pub mod profiles {
                pub mod v1development {
                    include!(concat!(
                        env!("OUT_DIR"),
                        "/opentelemetry.proto.collector.profiles.v1development.rs"
                    ));
                    include!(concat!(
                        env!("OUT_DIR"),
                        "/opentelemetry.proto.collector.profiles.v1development.serde.rs"
                    ));
                }
            }
        }
    }
}

/// Short paths to the OpenTelemetry profiles packages.
pub mod otlp {
    pub use crate::opentelemetry::proto::collector::profiles::v1development as collector;
    pub use crate::opentelemetry::proto::common::v1 as common;
    pub use crate::opentelemetry::proto::profiles::v1development as profiles;
    pub use crate::opentelemetry::proto::resource::v1 as resource;
}

/// Why a JSON body could not be mapped to or from a message.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("invalid JSON for {message}: {source}")]
    Invalid {
        message: String,
        source: serde_json::Error,
    },
}

/// Parses protobuf JSON into a generated message, straight into its Rust type (no dynamic
/// message in between), so decoding costs about what the message itself holds. Field names in
/// lowerCamelCase or as declared, 64-bit integers as numbers or strings, bytes in standard or
/// URL-safe base64. Unknown fields are refused, as Connect's Go implementation refuses them,
/// except in OTLP messages, whose receivers must ignore them.
pub fn from_json<M>(json: &[u8]) -> Result<M, JsonError>
where
    M: prost::Name + serde::de::DeserializeOwned,
{
    serde_json::from_slice(json).map_err(|source| JsonError::Invalid {
        message: M::full_name(),
        source,
    })
}

/// Renders a generated message as canonical protobuf JSON (lowerCamel or declared JSON names,
/// 64-bit integers as strings, default values omitted).
pub fn to_json<M>(message: &M) -> Result<Vec<u8>, JsonError>
where
    M: prost::Name + serde::Serialize,
{
    serde_json::to_vec(message).map_err(|source| JsonError::Invalid {
        message: M::full_name(),
        source,
    })
}
