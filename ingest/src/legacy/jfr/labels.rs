//! The Java agent's `LabelsSnapshot` (the `labels` part of a JFR upload): its dynamic labels
//! per profiler context id, as string ids into a table of the upload's strings.

use std::collections::HashMap;

/// `LabelsSnapshot { map<int64, Context> contexts = 1; map<int64, string> strings = 2; }`
#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelsSnapshot {
    #[prost(map = "int64, message", tag = "1")]
    pub contexts: HashMap<i64, Context>,
    #[prost(map = "int64, string", tag = "2")]
    pub strings: HashMap<i64, String>,
}

/// `Context { map<int64, int64> labels = 1; }`: label name id to label value id.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Context {
    #[prost(map = "int64, int64", tag = "1")]
    pub labels: HashMap<i64, i64>,
}
