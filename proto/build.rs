//! Compiles the project's `.proto` files with protox (pure Rust, no system `protoc`) into prost
//! types and their serde implementations of the protobuf JSON mapping (pbjson).

use std::path::PathBuf;

const FILES: &[&str] = &[
    "google/v1/profile.proto",
    "types/v1/types.proto",
    "push/v1/push.proto",
    "querier/v1/querier.proto",
    "ingester/v1/ingester.proto",
    "scheduler/v1/scheduler.proto",
    "settings/v1/setting.proto",
    "version/v1/version.proto",
    "capabilities/v1/feature_flags.proto",
    "status/v1/status.proto",
    "opentelemetry/proto/common/v1/common.proto",
    "opentelemetry/proto/resource/v1/resource.proto",
    "opentelemetry/proto/profiles/v1development/profiles.proto",
    "opentelemetry/proto/collector/profiles/v1development/profiles_service.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(FILES, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = prost::Message::encode_to_vec(&fds);
    let mut config = prost_build::Config::new();
    config.enable_type_names();
    config.bytes(["."]);
    config.compile_fds(fds)?;
    // serde implementations of the protobuf JSON mapping (`<package>.serde.rs`). Unknown fields
    // are refused in Pyroscope's APIs, as Connect's Go implementation refuses them, and ignored
    // in OTLP, whose specification requires receivers to ignore them.
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .out_dir(&out)
        .build(&[
            ".google.v1",
            ".types.v1",
            ".push.v1",
            ".querier.v1",
            ".ingester.v1",
            ".scheduler.v1",
            ".settings.v1",
            ".version.v1",
            ".capabilities.v1",
            ".status.v1",
        ])?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .ignore_unknown_fields()
        .out_dir(&out)
        .build(&[".opentelemetry"])?;
    Ok(())
}
