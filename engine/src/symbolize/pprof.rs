//! The pprof builder of [`super::SymbolizeExec`]: interns strings, functions, mappings and
//! locations of the resolved stacks into one `google.v1.Profile`.

use std::collections::HashMap;

use profusion_proto::google::v1 as pprof;

use super::PprofHeader;
use super::exec::FrameInfo;

/// Interns strings, functions, mappings and locations into a pprof profile.
#[derive(Default)]
struct PprofBuilder {
    profile: pprof::Profile,
    strings: HashMap<String, i64>,
    functions: HashMap<(i64, i64, i64, i64), u64>,
    mappings: HashMap<(i64, i64), u64>,
    /// (frame id, line) → location id.
    locations: HashMap<(u64, i64), u64>,
}

impl PprofBuilder {
    fn string(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.profile.string_table.len() as i64;
        self.profile.string_table.push(s.to_owned());
        self.strings.insert(s.to_owned(), i);
        i
    }

    fn location(&mut self, f: &FrameInfo, line: i64) -> u64 {
        if let Some(&id) = self.locations.get(&(f.id, line)) {
            return id;
        }
        let mapping_id = if f.mapping_file.is_empty() && f.build_id.is_empty() {
            0
        } else {
            let key = (self.string(&f.mapping_file), self.string(&f.build_id));
            let next = self.profile.mapping.len() as u64 + 1;
            let id = *self.mappings.entry(key).or_insert(next);
            if id == next {
                self.profile.mapping.push(pprof::Mapping {
                    id,
                    filename: key.0,
                    build_id: key.1,
                    has_functions: true,
                    ..Default::default()
                });
            }
            id
        };
        let lines = if f.name.is_empty() {
            Vec::new()
        } else {
            let key = (
                self.string(&f.name),
                self.string(&f.system_name),
                self.string(&f.filename),
                f.start_line,
            );
            let next = self.profile.function.len() as u64 + 1;
            let function_id = *self.functions.entry(key).or_insert(next);
            if function_id == next {
                self.profile.function.push(pprof::Function {
                    id: function_id,
                    name: key.0,
                    system_name: key.1,
                    filename: key.2,
                    start_line: key.3,
                });
            }
            vec![pprof::Line { function_id, line }]
        };
        let id = self.profile.location.len() as u64 + 1;
        self.profile.location.push(pprof::Location {
            id,
            mapping_id,
            address: f.address,
            line: lines,
            is_folded: false,
        });
        self.locations.insert((f.id, line), id);
        id
    }
}

/// A pprof profile of root-first stacks; stacks that end up with the same locations (after
/// Go PGO trimming) are one sample.
pub(super) fn build_pprof(
    header: &PprofHeader,
    stacks: &[(Vec<&FrameInfo>, i64)],
    aggregate_leaf: bool,
) -> pprof::Profile {
    let mut b = PprofBuilder::default();
    b.string("");
    let sample_type = pprof::ValueType {
        r#type: b.string(&header.sample_type),
        unit: b.string(&header.sample_unit),
    };
    let period_type = pprof::ValueType {
        r#type: b.string(&header.period_type),
        unit: b.string(&header.period_unit),
    };
    let mut samples: HashMap<Vec<u64>, i64> = HashMap::new();
    let mut order: Vec<Vec<u64>> = Vec::new();
    for (stack, value) in stacks {
        let leaf = stack.len().saturating_sub(1);
        let ids: Vec<u64> = stack
            .iter()
            .enumerate()
            .rev()
            .map(|(i, f)| {
                let line = if aggregate_leaf && i == leaf {
                    0
                } else {
                    f.line
                };
                b.location(f, line)
            })
            .collect();
        match samples.get_mut(&ids) {
            Some(v) => *v = v.saturating_add(*value),
            None => {
                samples.insert(ids.clone(), *value);
                order.push(ids);
            }
        }
    }
    // Stable output: samples in location order, so equal inputs give equal bytes.
    order.sort();
    let mut profile = b.profile;
    profile.sample = order
        .into_iter()
        .map(|ids| {
            let v = samples[&ids];
            pprof::Sample {
                location_id: ids,
                value: vec![v],
                label: Vec::new(),
            }
        })
        .collect();
    profile.sample_type = vec![sample_type];
    profile.period_type = Some(period_type);
    profile.period = header.period;
    profile.time_nanos = header.time_nanos;
    profile.duration_nanos = header.duration_nanos;
    profile
}
