//! Pyroscope's mapping of JFR events to profiles: which events count, as which profile types,
//! with which values, frames named `<class>.<method>`, and the agent's context labels.
//!
//! Deliberate differences from Pyroscope (docs/ingest.md, "JFR"):
//! - each event counts its own weight: Pyroscope keeps the last wall-clock event's sample count
//!   in a slot shared by every later event, so one `profiler.WallClockSample` of 5 samples
//!   makes every later CPU sample and allocation count 5;
//! - durations are converted from the chunk's ticks to nanoseconds (the same number at the
//!   usual 10^9 ticks per second).

use std::collections::HashMap;
use std::rc::Rc;

use profusion_proto::google::v1::{
    Function, Label, Line, Location, Mapping, Profile, Sample, ValueType,
};

use super::labels::LabelsSnapshot;
use super::reader::{Chunk, Class, JfrError, Value, chunk_starts};
use super::symbols::rewrite;

/// What a kind of profile is: its `__name__`, sample types and period type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Cpu,
    Wall,
    AllocInNewTlab,
    AllocOutsideTlab,
    AllocSample,
    Lock,
    Park,
    Live,
    Malloc,
}

impl Kind {
    pub fn metric(self) -> &'static str {
        match self {
            Self::Cpu => "process_cpu",
            Self::Wall => "wall",
            Self::Lock => "mutex",
            Self::Park => "block",
            _ => "memory",
        }
    }

    fn sample_types(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::Cpu => &[("cpu", "nanoseconds")],
            Self::Wall => &[("wall", "nanoseconds")],
            Self::AllocInNewTlab => &[
                ("alloc_in_new_tlab_objects", "count"),
                ("alloc_in_new_tlab_bytes", "bytes"),
            ],
            Self::AllocOutsideTlab => &[
                ("alloc_outside_tlab_objects", "count"),
                ("alloc_outside_tlab_bytes", "bytes"),
            ],
            Self::AllocSample => &[
                ("alloc_sample_objects", "count"),
                ("alloc_sample_bytes", "bytes"),
            ],
            Self::Lock | Self::Park => &[("contentions", "count"), ("delay", "nanoseconds")],
            Self::Live => &[("live", "count")],
            Self::Malloc => &[("malloc_objects", "count"), ("malloc_bytes", "bytes")],
        }
    }

    fn period_type(self) -> Option<(&'static str, &'static str)> {
        Some(match self {
            Self::Cpu => ("cpu", "nanoseconds"),
            Self::Wall => ("wall", "nanoseconds"),
            Self::AllocInNewTlab | Self::AllocOutsideTlab | Self::AllocSample => ("space", "bytes"),
            Self::Lock => ("mutex", "count"),
            Self::Park => ("block", "count"),
            Self::Live => ("objects", "count"),
            Self::Malloc => return None,
        })
    }
}

/// How the request describes the recording.
#[derive(Debug, Clone, Copy)]
pub struct JfrRequest {
    /// Nanoseconds a CPU or wall-clock sample stands for: 10^9 / `sampleRate` when the request
    /// gives it; else the recording's `jdk.ExecutionSample` period setting, else 10 ms.
    pub period_nanos: Option<i64>,
    pub from_nanos: i64,
    pub until_nanos: i64,
}

/// The profiles of one recording, one per kind of event it holds, and the profiler's event
/// setting (`itimer`, `cpu`, `wall`, ...), which becomes the `jfr_event` label.
#[derive(Debug)]
pub struct JfrProfiles {
    pub profiles: Vec<(Kind, Profile)>,
    pub event: Option<String>,
}

/// A stack: (function, line) from the leaf.
type Stack = Rc<[(u32, i64)]>;
/// A sample's stack and its labels (the agent's context, the span).
type SampleKey = (Stack, Vec<(String, String)>);

#[derive(Default)]
struct Builder {
    samples: HashMap<SampleKey, [i64; 2]>,
}

/// Names interned across chunks, and each chunk's stacks resolved once.
#[derive(Default)]
struct Symbols {
    names: Vec<String>,
    ids: HashMap<String, u32>,
}

impl Symbols {
    fn intern(&mut self, name: String) -> u32 {
        if let Some(&id) = self.ids.get(&name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.ids.insert(name.clone(), id);
        self.names.push(name);
        id
    }
}

/// Reads every chunk of `file` and maps its events.
pub fn map_recording(
    file: &[u8],
    labels: &LabelsSnapshot,
    request: JfrRequest,
) -> Result<JfrProfiles, JfrError> {
    let mut builders: HashMap<Kind, Builder> = HashMap::new();
    let mut symbols = Symbols::default();
    let mut event: Option<String> = None;
    for (index, range) in chunk_starts(file)?.into_iter().enumerate() {
        let chunk = Chunk::read(file, index, range)?;
        // The chunk's settings first: events may precede the settings they were recorded
        // under in the file.
        let mut recorded_period = None;
        let sampling = chunk.class_id("jdk.ExecutionSample");
        chunk.for_each_event(
            |class| class.name == "jdk.ActiveSetting",
            |class, fields| {
                let ev = Event {
                    chunk: &chunk,
                    class,
                    fields: &fields,
                };
                match ev.text("name") {
                    Some("event") => event = ev.text("value").map(str::to_owned),
                    Some("period")
                        if sampling.is_some_and(|id| ev.int("id") == Some(id as i64)) =>
                    {
                        recorded_period = ev.text("value").and_then(parse_period);
                    }
                    _ => {}
                }
                Ok(())
            },
        )?;
        let period = request
            .period_nanos
            .or(recorded_period)
            .unwrap_or(DEFAULT_PERIOD_NANOS);
        let mut stacks: HashMap<u64, Option<Stack>> = HashMap::new();
        chunk.for_each_event(
            |class| MAPPED.contains(&class.name.as_str()),
            |class, fields| {
                let ev = Event {
                    chunk: &chunk,
                    class,
                    fields: &fields,
                };
                let Some(stack) = ev
                    .stack(&mut stacks, &mut symbols)
                    .filter(|s| !s.is_empty())
                else {
                    // An event whose stack is missing is dropped, as Pyroscope does, and so is
                    // one without frames: there is nothing to show it under.
                    return Ok(());
                };
                let wall_setting = event.as_deref() == Some("wall");
                let mut add = |kind: Kind, values: [i64; 2], labels: Vec<(String, String)>| {
                    let slot = builders
                        .entry(kind)
                        .or_default()
                        .samples
                        .entry((Rc::clone(&stack), labels))
                        .or_default();
                    slot[0] = slot[0].saturating_add(values[0]);
                    slot[1] = slot[1].saturating_add(values[1]);
                };
                match class.name.as_str() {
                    "jdk.ExecutionSample" => {
                        let state = ev.thread_state();
                        let context = ev.context_labels(labels);
                        if state.is_some_and(|s| s != "STATE_SLEEPING") {
                            add(Kind::Cpu, [period, 0], context.clone());
                        }
                        if wall_setting {
                            add(Kind::Wall, [period, 0], context);
                        }
                    }
                    "profiler.WallClockSample" => {
                        let n = ev.int("samples").unwrap_or(1);
                        let value = n.saturating_mul(period);
                        let context = ev.context_labels(labels);
                        if wall_setting && ev.thread_state() == Some("STATE_RUNNABLE") {
                            add(Kind::Cpu, [value, 0], context.clone());
                        }
                        add(Kind::Wall, [value, 0], context);
                    }
                    "jdk.ObjectAllocationInNewTLAB" => add(
                        Kind::AllocInNewTlab,
                        [1, ev.int("tlabSize").unwrap_or(0)],
                        ev.context_labels(labels),
                    ),
                    "jdk.ObjectAllocationOutsideTLAB" => add(
                        Kind::AllocOutsideTlab,
                        [1, ev.int("allocationSize").unwrap_or(0)],
                        ev.context_labels(labels),
                    ),
                    "jdk.ObjectAllocationSample" => add(
                        Kind::AllocSample,
                        [1, ev.int("weight").unwrap_or(0)],
                        Vec::new(),
                    ),
                    "jdk.JavaMonitorEnter" => add(
                        Kind::Lock,
                        [1, ev.duration_nanos()],
                        ev.context_labels(labels),
                    ),
                    "jdk.ThreadPark" => add(Kind::Park, [1, ev.duration_nanos()], Vec::new()),
                    "profiler.LiveObject" => add(Kind::Live, [1, 0], Vec::new()),
                    "profiler.Malloc" => {
                        add(Kind::Malloc, [1, ev.int("size").unwrap_or(0)], Vec::new());
                    }
                    _ => {}
                }
                Ok(())
            },
        )?;
    }
    let mut kinds: Vec<Kind> = builders.keys().copied().collect();
    kinds.sort_unstable();
    let profiles = kinds
        .into_iter()
        .map(|kind| (kind, to_pprof(kind, &builders[&kind], &symbols, request)))
        .collect();
    Ok(JfrProfiles { profiles, event })
}

/// A CPU or wall-clock sample's worth when neither the request nor the recording says: the
/// default `sampleRate` of 100 per second.
const DEFAULT_PERIOD_NANOS: i64 = 10_000_000;

/// A JFR period setting (`10 ms`, `20 ms`, `1 s`, `500 us`) in nanoseconds.
fn parse_period(value: &str) -> Option<i64> {
    let (number, unit) = value.trim().split_once(' ')?;
    let n: i64 = number.parse().ok()?;
    let scale = match unit.trim() {
        "ns" => 1,
        "us" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        _ => return None,
    };
    n.checked_mul(scale).filter(|p| *p > 0)
}

/// The event types the mapping reads; every other is skipped unread.
const MAPPED: &[&str] = &[
    "jdk.ExecutionSample",
    "profiler.WallClockSample",
    "jdk.ObjectAllocationInNewTLAB",
    "jdk.ObjectAllocationOutsideTLAB",
    "jdk.ObjectAllocationSample",
    "jdk.JavaMonitorEnter",
    "jdk.ThreadPark",
    "profiler.LiveObject",
    "profiler.Malloc",
];

/// One event's fields, read by name through its chunk.
struct Event<'a> {
    chunk: &'a Chunk<'a>,
    class: &'a Class,
    fields: &'a [Value],
}

impl Event<'_> {
    fn field(&self, name: &str) -> Option<&Value> {
        self.fields.get(self.class.field(name)?)
    }

    fn int(&self, name: &str) -> Option<i64> {
        self.field(name)?.as_int()
    }

    fn text(&self, name: &str) -> Option<&str> {
        self.chunk.text(self.field(name)?)
    }

    fn duration_nanos(&self) -> i64 {
        self.int("duration")
            .map_or(0, |ticks| self.chunk.ticks_to_nanos(ticks))
    }

    /// The name of the sampled thread's state (`STATE_RUNNABLE`, ...), when it resolves.
    fn thread_state(&self) -> Option<&str> {
        let (class, state) = self.chunk.deref(self.field("state")?)?;
        self.chunk.text(self.chunk.get(class, state, "name")?)
    }

    /// The agent's labels for the event's context, and its span, as pprof sample labels.
    fn context_labels(&self, snapshot: &LabelsSnapshot) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(context) = self
            .int("contextId")
            .filter(|id| *id != 0)
            .and_then(|id| snapshot.contexts.get(&id))
        {
            for (k, v) in &context.labels {
                if let (Some(k), Some(v)) = (snapshot.strings.get(k), snapshot.strings.get(v))
                    && !k.is_empty()
                    && !v.is_empty()
                {
                    out.push((k.clone(), v.clone()));
                }
            }
        }
        if let Some(span) = self.int("spanId").filter(|s| *s != 0) {
            out.push(("profile_id".into(), format!("{:016x}", span as u64)));
        }
        if let Some(name) = self
            .int("spanName")
            .filter(|s| *s != 0)
            .and_then(|s| snapshot.strings.get(&s))
            .filter(|s| !s.is_empty())
        {
            out.push(("span_name".into(), name.clone()));
        }
        out.sort();
        out.dedup_by(|a, b| a.0 == b.0);
        out
    }

    /// The event's stack, leaf first, resolved once per chunk and stack id.
    fn stack(
        &self,
        cache: &mut HashMap<u64, Option<Stack>>,
        symbols: &mut Symbols,
    ) -> Option<Stack> {
        let reference = self.field("stackTrace")?;
        let Value::Ref { key, .. } = reference else {
            return None;
        };
        if let Some(stack) = cache.get(key) {
            return stack.clone();
        }
        let stack = self.resolve_stack(reference, symbols);
        cache.insert(*key, stack.clone());
        stack
    }

    fn resolve_stack(&self, reference: &Value, symbols: &mut Symbols) -> Option<Stack> {
        let chunk = self.chunk;
        let (trace_class, trace) = chunk.deref(reference)?;
        let Value::Array(frames) = chunk.get(trace_class, trace, "frames")? else {
            return None;
        };
        let frame_class = trace_class
            .fields
            .iter()
            .find(|f| f.name == "frames")
            .and_then(|f| chunk.class_by_id(f.type_id))?;
        let mut stack = Vec::with_capacity(frames.len());
        for frame in frames {
            // A frame whose method or class is missing is dropped, as Pyroscope does.
            let Some(name) = frame_name(chunk, frame_class, frame) else {
                continue;
            };
            let line = chunk
                .get(frame_class, frame, "lineNumber")
                .and_then(Value::as_int)
                .unwrap_or(0);
            stack.push((symbols.intern(name), line.max(0)));
        }
        Some(stack.into())
    }
}

/// `<class>.<method>` of a stack frame, both symbols rewritten as Pyroscope rewrites them.
fn frame_name(chunk: &Chunk<'_>, frame_class: &Class, frame: &Value) -> Option<String> {
    let (method_class, method) = chunk.deref(chunk.get(frame_class, frame, "method")?)?;
    let (type_class, class) = chunk.deref(chunk.get(method_class, method, "type")?)?;
    let class_name = symbol(chunk, chunk.get(type_class, class, "name")?)?;
    let method_name = symbol(chunk, chunk.get(method_class, method, "name")?)?;
    Some(format!(
        "{}.{}",
        rewrite(&class_name),
        rewrite(&method_name)
    ))
}

/// The text of a `jdk.types.Symbol` reference.
fn symbol(chunk: &Chunk<'_>, reference: &Value) -> Option<String> {
    let (class, symbol) = chunk.deref(reference)?;
    chunk
        .text(chunk.get(class, symbol, "string")?)
        .map(str::to_owned)
}

/// The pprof of one kind: one function per name, one location per (function, line).
fn to_pprof(kind: Kind, builder: &Builder, symbols: &Symbols, request: JfrRequest) -> Profile {
    let mut strings: Vec<String> = vec![String::new()];
    let mut string_ids: HashMap<String, i64> = HashMap::new();
    let mut string = |s: &str| -> i64 {
        if s.is_empty() {
            return 0;
        }
        if let Some(&id) = string_ids.get(s) {
            return id;
        }
        let id = strings.len() as i64;
        strings.push(s.to_owned());
        string_ids.insert(s.to_owned(), id);
        id
    };
    let value_type = |(t, u): (&str, &str), string: &mut dyn FnMut(&str) -> i64| ValueType {
        r#type: string(t),
        unit: string(u),
    };
    let sample_type: Vec<ValueType> = kind
        .sample_types()
        .iter()
        .map(|&t| value_type(t, &mut string))
        .collect();
    let period_type = kind.period_type().map(|t| value_type(t, &mut string));
    let width = sample_type.len();
    let mut functions: HashMap<u32, u64> = HashMap::new();
    let mut function_list = Vec::new();
    let mut locations: HashMap<(u32, i64), u64> = HashMap::new();
    let mut location_list = Vec::new();
    let mut samples = Vec::with_capacity(builder.samples.len());
    for ((stack, labels), values) in &builder.samples {
        let mut location_id = Vec::with_capacity(stack.len());
        for &(function, line) in stack.iter() {
            let function_id = *functions.entry(function).or_insert_with(|| {
                let id = function_list.len() as u64 + 1;
                function_list.push(Function {
                    id,
                    name: string(&symbols.names[function as usize]),
                    ..Function::default()
                });
                id
            });
            let id = *locations.entry((function, line)).or_insert_with(|| {
                let id = location_list.len() as u64 + 1;
                location_list.push(Location {
                    id,
                    mapping_id: 1,
                    line: vec![Line { function_id, line }],
                    ..Location::default()
                });
                id
            });
            location_id.push(id);
        }
        samples.push(Sample {
            location_id,
            value: values[..width].to_vec(),
            label: labels
                .iter()
                .map(|(k, v)| Label {
                    key: string(k),
                    str: string(v),
                    ..Label::default()
                })
                .collect(),
        });
    }
    Profile {
        sample_type,
        sample: samples,
        mapping: vec![Mapping {
            id: 1,
            has_functions: true,
            ..Mapping::default()
        }],
        location: location_list,
        function: function_list,
        string_table: strings,
        time_nanos: request.from_nanos,
        duration_nanos: request
            .until_nanos
            .saturating_sub(request.from_nanos)
            .max(0),
        period_type,
        ..Profile::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use super::super::Integers;
    use super::super::labels::{Context, LabelsSnapshot};
    use super::super::writer::cpu_recording;
    use super::*;

    /// Root-first stack and sorted labels of every sample, with its value.
    fn samples(p: &Profile) -> BTreeMap<(String, Vec<(String, String)>), i64> {
        let s = |i: i64| p.string_table[i as usize].clone();
        p.sample
            .iter()
            .map(|sample| {
                let names: Vec<String> = sample
                    .location_id
                    .iter()
                    .rev()
                    .map(|l| {
                        let line = &p.location[*l as usize - 1].line[0];
                        s(p.function[line.function_id as usize - 1].name)
                    })
                    .collect();
                let mut labels: Vec<(String, String)> =
                    sample.label.iter().map(|l| (s(l.key), s(l.str))).collect();
                labels.sort();
                ((names.join(";"), labels), sample.value[0])
            })
            .collect()
    }

    /// The same recording written both ways a chunk may hold its integers maps to the same
    /// profile.
    #[test]
    fn the_agents_contexts_and_spans_label_cpu_samples_of_runnable_threads() {
        for integers in [Integers::Compressed, Integers::FixedWidth] {
            agents_contexts_and_spans_label_cpu_samples(integers);
        }
    }

    fn agents_contexts_and_spans_label_cpu_samples(integers: Integers) {
        let snapshot = LabelsSnapshot {
            contexts: HashMap::from([(
                1,
                Context {
                    labels: HashMap::from([(1, 2)]),
                },
            )]),
            strings: HashMap::from([(1, "region".into()), (2, "eu-west-1".into())]),
        };
        let request = JfrRequest {
            period_nanos: Some(10_000_000),
            from_nanos: 5,
            until_nanos: 15,
        };
        let mapped = map_recording(&cpu_recording(integers), &snapshot, request).unwrap();
        // The setting's name is a pooled string ("event").
        assert_eq!(mapped.event.as_deref(), Some("itimer"));
        let [(Kind::Cpu, cpu)] = mapped.profiles.as_slice() else {
            panic!("one CPU profile: {:?}", mapped.profiles);
        };
        let stack = "com/example/Main.main;com/example/Main.work".to_owned();
        let region = ("region".to_owned(), "eu-west-1".to_owned());
        let span = ("profile_id".to_owned(), "0000000000001234".to_owned());
        // Three runnable samples (the sleeping thread's is no CPU time), by labels.
        assert_eq!(
            samples(cpu),
            BTreeMap::from([
                ((stack.clone(), vec![]), 10_000_000),
                ((stack.clone(), vec![region.clone()]), 10_000_000),
                ((stack, vec![span, region]), 10_000_000),
            ])
        );
        assert_eq!((cpu.time_nanos, cpu.duration_nanos), (5, 10));
        let line = |i: usize| cpu.location[i].line[0].line;
        // work's -1 is read as an int (not as 4,294,967,295) and stored as no line, 0.
        assert_eq!(
            (line(0), line(1)),
            (0, 5),
            "{integers:?}: work's and main's lines"
        );
    }
}
