//! Every golden encoding in `tests/fixtures/wire/` decodes into the message its JSON twin
//! describes, renders back to that JSON through the Connect JSON mapping, and re-encodes to the
//! very same bytes.

use std::path::PathBuf;

use profusion_proto::{google, push, querier, types};
use prost::{Message, Name};

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/wire")
}

/// JSON numbers compare by value (`15.0` and `15` are the same double).
fn normalize(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Number(n) => Value::from(n.as_f64().unwrap_or(f64::NAN)),
        Value::Array(a) => Value::Array(a.into_iter().map(normalize).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, normalize(v))).collect()),
        other => other,
    }
}

fn check<
    M: Message + Name + Default + PartialEq + serde::de::DeserializeOwned + serde::Serialize,
>(
    name: &str,
) {
    let dir = fixtures_dir();
    let bin = std::fs::read(dir.join(format!("{name}.bin")))
        .unwrap_or_else(|e| panic!("reading {name}.bin in {}: {e}", dir.display()));
    let json = std::fs::read(dir.join(format!("{name}.json"))).expect("json twin");

    let decoded = M::decode(bin.as_slice()).unwrap_or_else(|e| panic!("{name}.bin: {e}"));
    let from_json: M =
        profusion_proto::from_json(&json).unwrap_or_else(|e| panic!("{name}.json: {e}"));
    assert!(decoded == from_json, "{name}: binary and JSON disagree");
    assert_eq!(decoded.encode_to_vec(), bin, "{name}: re-encoding differs");

    let rendered = profusion_proto::to_json(&decoded).expect("render JSON");
    let rendered: serde_json::Value = serde_json::from_slice(&rendered).expect("valid JSON");
    let expected: serde_json::Value = serde_json::from_slice(&json).expect("fixture JSON");
    assert_eq!(
        normalize(rendered),
        normalize(expected),
        "{name}: JSON mapping differs"
    );
}

#[test]
fn every_fixture_round_trips() {
    check::<google::v1::Profile>("pprof_cpu_small");
    check::<push::v1::PushRequest>("push_request");
    check::<querier::v1::SelectMergeStacktracesRequest>("select_merge_stacktraces_request");
    check::<querier::v1::SelectMergeStacktracesResponse>("select_merge_stacktraces_response");
    check::<querier::v1::SelectSeriesRequest>("select_series_request");
    check::<querier::v1::SelectSeriesResponse>("select_series_response");
    check::<querier::v1::ProfileTypesResponse>("profile_types_response");
    check::<querier::v1::SeriesResponse>("series_response");
    check::<types::v1::LabelValuesRequest>("label_values_request");
    check::<types::v1::LabelNamesResponse>("label_names_response");
    check::<querier::v1::DiffResponse>("diff_response");
    check::<querier::v1::DiffRequest>("diff_request");
}

#[test]
fn no_fixture_is_left_unchecked() {
    let source = include_str!("wire_fixtures.rs");
    for entry in std::fs::read_dir(fixtures_dir()).expect("fixtures dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "bin") {
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            assert!(
                source.contains(&format!("(\"{stem}\")")),
                "fixture {stem} has no check"
            );
        }
    }
}
