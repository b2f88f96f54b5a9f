//! The text formats of `/ingest`: folded ("groups"), `lines`, and the binary `trie` and `tree`
//! encodings of old agents, parsed into interned root-first stacks and then one synthetic
//! single-sample-type pprof.
//!
//! A small body of these formats can describe a huge profile (a tree chain repeats its whole
//! path for every node, a trie key grows with every level), so parsing enforces the profile
//! limits as the stacks grow instead of after expansion: samples, frames per stack (leaf side
//! kept), frames in all (each costs at least one byte of the pprof, so more than its size limit
//! could never be accepted), and the bytes of frame names hashed while interning.

use std::collections::HashMap;

use profusion_proto::google::v1::{Function, Line, Location, Profile, Sample, ValueType};

use crate::error::{IngestError, Result};
use crate::limits::Limits;
use crate::validation::tail;
use profusion_model::labels;

/// What a text upload may expand into, checked while it is parsed.
#[derive(Debug, Clone, Copy)]
pub struct TextLimits {
    /// Most samples (stacks with a positive value).
    pub max_samples: usize,
    /// Most frames per stack; deeper stacks keep their leaf-most frames.
    pub max_depth: usize,
    /// Most frame references over all stacks.
    pub max_frames: usize,
    /// Most bytes of frame names hashed while interning them (the trie format can make a
    /// parser revisit a long frame name once per child).
    pub max_name_work: usize,
    /// Longest frame name; longer ones keep their tail, as pprof symbols do.
    pub max_symbol_length: usize,
}

impl TextLimits {
    pub fn of(limits: &Limits) -> Self {
        Self {
            max_samples: limits.max_profile_samples,
            max_depth: limits.max_stack_depth,
            max_frames: limits.max_profile_size_bytes,
            max_name_work: limits.max_profile_size_bytes.saturating_mul(8),
            max_symbol_length: limits.max_symbol_length,
        }
    }

    /// No limits: for building profiles from trusted stacks.
    pub fn unlimited() -> Self {
        Self {
            max_samples: usize::MAX,
            max_depth: usize::MAX,
            max_frames: usize::MAX,
            max_name_work: usize::MAX,
            max_symbol_length: usize::MAX,
        }
    }
}

/// Root-first stacks of a text upload, with their frame names interned once.
#[derive(Debug)]
pub struct ParsedStacks {
    limits: TextLimits,
    names: Vec<String>,
    index: HashMap<String, u32>,
    /// Root-first name indexes and the value of each sample; only positive values.
    samples: Vec<(Vec<u32>, i64)>,
    /// Samples seen, stored or not: past the limit they are only counted, for the message.
    seen: usize,
    frames: usize,
    name_work: usize,
}

impl ParsedStacks {
    pub fn new(limits: TextLimits) -> Self {
        Self {
            limits,
            names: Vec::new(),
            index: HashMap::new(),
            samples: Vec::new(),
            seen: 0,
            frames: 0,
            name_work: 0,
        }
    }

    /// Whether the sample limit is reached: later samples are counted, not stored.
    fn full(&self) -> bool {
        self.seen >= self.limits.max_samples
    }

    /// The stacks, or the error of a profile with more samples than the limit.
    pub(crate) fn finish(self) -> Result<Self> {
        if self.seen > self.limits.max_samples {
            return Err(IngestError::invalid(format!(
                "profile has {} samples, more than the limit of {}",
                self.seen, self.limits.max_samples
            )));
        }
        Ok(self)
    }

    /// Trusted root-first stacks, unlimited.
    pub fn from_stacks<S: AsRef<str>>(stacks: &[(Vec<S>, i64)]) -> Result<Self> {
        let mut out = Self::new(TextLimits::unlimited());
        for (stack, value) in stacks {
            let ids = stack
                .iter()
                .map(|f| out.intern(f.as_ref().as_bytes()))
                .collect::<Result<Vec<_>>>()?;
            out.push(&ids, *value)?;
        }
        out.finish()
    }

    /// Adds a stack of root-first frame names, within the limits.
    pub(crate) fn add<S: AsRef<str>>(&mut self, stack: &[S], value: i64) -> Result<()> {
        if value <= 0 || self.full() {
            return self.push(&[], value);
        }
        let ids = stack
            .iter()
            .map(|f| self.intern(f.as_ref().as_bytes()))
            .collect::<Result<Vec<_>>>()?;
        self.push(&ids, value)
    }

    /// The index of a frame name, adding it if new.
    fn intern(&mut self, name: &[u8]) -> Result<u32> {
        self.name_work = self.name_work.saturating_add(name.len());
        if self.name_work > self.limits.max_name_work {
            return Err(IngestError::invalid(format!(
                "the profile's frame names expand to more than {} bytes; the body is too \
                 repetitive to be a profile within --validation.max-profile-size-bytes",
                self.limits.max_name_work
            )));
        }
        let name = std::str::from_utf8(name)
            .map_err(|_| IngestError::invalid("frame name is not valid UTF-8"))?;
        let name = tail(name, self.limits.max_symbol_length);
        if let Some(&id) = self.index.get(name) {
            return Ok(id);
        }
        let id = self.names.len() as u32;
        self.names.push(name.to_owned());
        self.index.insert(name.to_owned(), id);
        Ok(id)
    }

    /// Adds a sample of root-first frames, keeping the leaf-most `max_depth`; values that are
    /// not positive store nothing.
    fn push(&mut self, stack: &[u32], value: i64) -> Result<()> {
        if value <= 0 {
            return Ok(());
        }
        self.seen += 1;
        if self.seen > self.limits.max_samples {
            return Ok(());
        }
        let kept = &stack[stack.len().saturating_sub(self.limits.max_depth)..];
        self.frames = self.frames.saturating_add(kept.len());
        if self.frames > self.limits.max_frames {
            return Err(IngestError::invalid(format!(
                "the profile's stacks hold more than {} frames in all: as a pprof it would be \
                 more than the limit of {} bytes",
                self.limits.max_frames, self.limits.max_frames
            )));
        }
        self.samples.push((kept.to_vec(), value));
        Ok(())
    }

    /// Root-first `;`-joined stacks and values, in parse order.
    #[cfg(test)]
    fn stacks(&self) -> Vec<(String, i64)> {
        self.samples
            .iter()
            .map(|(ids, v)| {
                let names: Vec<&str> = ids
                    .iter()
                    .map(|&i| self.names[i as usize].as_str())
                    .collect();
                (names.join(";"), *v)
            })
            .collect()
    }

    /// A one-sample-type pprof of these stacks, each value multiplied by `multiplier`.
    pub fn to_pprof(
        &self,
        multiplier: i64,
        (sample_type, unit): (&str, &str),
        (period_type, period_unit): (&str, &str),
        period: i64,
        time_nanos: i64,
        duration_nanos: i64,
    ) -> Profile {
        // Strings: "", the frame names (string i + 1 is name i), then the type strings.
        let mut strings: Vec<String> = Vec::with_capacity(self.names.len() + 5);
        strings.push(String::new());
        strings.extend(self.names.iter().cloned());
        let mut extra = |s: &str| -> i64 {
            strings.push(s.to_owned());
            strings.len() as i64 - 1
        };
        let sample_type = ValueType {
            r#type: extra(sample_type),
            unit: extra(unit),
        };
        let period_type = ValueType {
            r#type: extra(period_type),
            unit: extra(period_unit),
        };
        // Function and location i + 1 are name i.
        let function: Vec<Function> = (0..self.names.len() as u64)
            .map(|i| Function {
                id: i + 1,
                name: i as i64 + 1,
                ..Function::default()
            })
            .collect();
        let location = function
            .iter()
            .map(|f| Location {
                id: f.id,
                line: vec![Line {
                    function_id: f.id,
                    line: 0,
                }],
                ..Location::default()
            })
            .collect();
        let sample = self
            .samples
            .iter()
            .map(|(ids, value)| Sample {
                location_id: ids.iter().rev().map(|&i| u64::from(i) + 1).collect(),
                value: vec![value.saturating_mul(multiplier)],
                label: Vec::new(),
            })
            .collect();
        Profile {
            sample_type: vec![sample_type],
            sample,
            location,
            function,
            string_table: strings,
            time_nanos,
            duration_nanos,
            period_type: Some(period_type),
            period,
            ..Profile::default()
        }
    }
}

/// Folded text: `a;b;c 10` per line (value after the last space); with `lines`, each line is
/// one sample and has no value.
pub fn parse_folded(body: &[u8], lines: bool, limits: TextLimits) -> Result<ParsedStacks> {
    let text = std::str::from_utf8(body)
        .map_err(|e| IngestError::invalid(format!("body is not UTF-8 text: {e}")))?;
    let mut out = ParsedStacks::new(limits);
    let mut ids = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let (stack, value) = if lines {
            (line, 1)
        } else {
            let (stack, count) = line.rsplit_once(' ').ok_or_else(|| {
                IngestError::invalid(format!("line {}: expected \"<stack> <count>\"", n + 1))
            })?;
            let count: i64 = count.trim().parse().map_err(|_| {
                IngestError::invalid(format!(
                    "line {}: count {:?} is not an integer",
                    n + 1,
                    labels::clip(count, 32)
                ))
            })?;
            (stack, count)
        };
        if value <= 0 {
            continue;
        }
        if out.full() {
            out.seen += 1;
            continue;
        }
        // Only the frames that are kept are interned: the leaf-most `max_depth`.
        ids.clear();
        for frame in stack.rsplit(';').take(limits.max_depth) {
            ids.push(out.intern(frame.as_bytes())?);
        }
        ids.reverse();
        out.push(&ids, value)?;
    }
    out.finish()
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn uvarint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.data.get(self.pos).ok_or_else(|| {
                IngestError::invalid(format!("truncated varint at byte {}", self.pos))
            })?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(IngestError::invalid(format!(
            "varint too long at byte {}",
            self.pos
        )))
    }

    fn bytes(&mut self) -> Result<&[u8]> {
        let n = self.uvarint()?;
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n))
            .filter(|e| *e <= self.data.len())
            .ok_or_else(|| {
                IngestError::invalid(format!(
                    "string of {n} bytes overruns the body at byte {}",
                    self.pos
                ))
            })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn child_count(&mut self) -> Result<u64> {
        let n = self.uvarint()?;
        // Every child takes at least three bytes, so a larger count is a lie.
        if n > (self.data.len() - self.pos) as u64 {
            return Err(IngestError::invalid(format!(
                "child count {n} exceeds the body at byte {}",
                self.pos
            )));
        }
        Ok(n)
    }

    fn value(&mut self) -> Result<i64> {
        Ok(i64::try_from(self.uvarint()?).unwrap_or(i64::MAX))
    }

    fn trailing(&self, what: &str) -> Result<()> {
        if self.done() {
            Ok(())
        } else {
            Err(IngestError::invalid(format!(
                "{} trailing bytes after the {what}",
                self.data.len() - self.pos
            )))
        }
    }
}

/// The transport trie: pre-order nodes `{name suffix, value, child count}`; a node's key is its
/// parent's key with its suffix appended, and a node with a value emits its key, split at `;`,
/// as a stack.
///
/// The key is one buffer cut back on the way up, and its frames are tracked as it grows: a
/// frame is interned once when a `;` completes it, so emitting a stack costs its kept frames,
/// not its key's length.
pub fn parse_trie(body: &[u8], limits: TextLimits) -> Result<ParsedStacks> {
    /// A node whose children are still being read: the key and frames it leaves behind, and
    /// the id of its trailing frame once a child's leading `;` completed it.
    struct Open {
        key_len: usize,
        frames_len: usize,
        children: u64,
        completed_trailing: Option<u32>,
    }
    /// A frame of the key: where it starts, and its id once a `;` completed it.
    #[derive(Clone, Copy)]
    struct KeyFrame {
        start: usize,
        id: Option<u32>,
    }
    let mut out = ParsedStacks::new(limits);
    if body.is_empty() {
        return Ok(out);
    }
    let mut r = Reader { data: body, pos: 0 };
    let mut key: Vec<u8> = Vec::new();
    // Always ends in the trailing frame, not yet completed (possibly empty).
    let mut frames = vec![KeyFrame { start: 0, id: None }];
    let mut open = vec![Open {
        key_len: 0,
        frames_len: 1,
        children: 1,
        completed_trailing: None,
    }];
    let mut stack: Vec<u32> = Vec::new();
    while let Some(top) = open.last_mut() {
        if top.children == 0 {
            open.pop();
            continue;
        }
        top.children -= 1;
        key.truncate(top.key_len);
        frames.truncate(top.frames_len);
        let parent_trailing = frames.len() - 1;
        frames[parent_trailing].id = None;
        let suffix = r.bytes()?;
        for (i, &b) in suffix.iter().enumerate() {
            if b == b';' {
                let last = frames.len() - 1;
                let id = match top.completed_trailing {
                    // Every child that starts with `;` completes the parent's trailing frame
                    // to the same name: intern it once.
                    Some(id) if i == 0 => id,
                    _ => {
                        let id = out.intern(&key[frames[last].start..])?;
                        if i == 0 {
                            top.completed_trailing = Some(id);
                        }
                        id
                    }
                };
                frames[last].id = Some(id);
                frames.push(KeyFrame {
                    start: key.len() + 1,
                    id: None,
                });
            }
            key.push(b);
        }
        let value = r.value()?;
        let children = r.child_count()?;
        if value > 0 && out.full() {
            out.seen += 1;
        } else if value > 0 {
            stack.clear();
            let kept = &frames[frames.len().saturating_sub(limits.max_depth)..];
            for f in kept {
                stack.push(match f.id {
                    Some(id) => id,
                    None => out.intern(&key[f.start..])?,
                });
            }
            out.push(&stack, value)?;
        }
        if children > 0 {
            open.push(Open {
                key_len: key.len(),
                frames_len: frames.len(),
                children,
                completed_trailing: None,
            });
        }
    }
    r.trailing("trie")?;
    out.finish()
}

/// The tree format: pre-order nodes `{name, self value, child count}`; a node's stack is the
/// names on its path (an empty root name is not a frame).
pub fn parse_tree(body: &[u8], limits: TextLimits) -> Result<ParsedStacks> {
    let mut out = ParsedStacks::new(limits);
    if body.is_empty() {
        return Ok(out);
    }
    let mut r = Reader { data: body, pos: 0 };
    let mut path: Vec<u32> = Vec::new();
    // Children still to read at each depth; the virtual top has one child.
    let mut open: Vec<u64> = vec![1];
    // Whether the node at each depth pushed a name onto `path`.
    let mut named: Vec<bool> = Vec::new();
    while let Some(left) = open.last_mut() {
        if *left == 0 {
            open.pop();
            if named.pop() == Some(true) {
                path.pop();
            }
            continue;
        }
        *left -= 1;
        let name = r.bytes()?;
        let has_name = !name.is_empty();
        if has_name {
            let id = out.intern(name)?;
            path.push(id);
        }
        let self_value = r.value()?;
        let children = r.child_count()?;
        if !path.is_empty() {
            out.push(&path, self_value)?;
        }
        open.push(children);
        named.push(has_name);
    }
    r.trailing("tree")?;
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stacks(v: &[(&str, i64)]) -> Vec<(String, i64)> {
        v.iter().map(|(s, n)| ((*s).to_owned(), *n)).collect()
    }

    fn limits() -> TextLimits {
        TextLimits::of(&Limits::default())
    }

    #[test]
    fn folded_and_lines() {
        let parsed = parse_folded(b"a;b 3\na;c 1\nz 0\n\n", false, limits()).unwrap();
        assert_eq!(parsed.stacks(), stacks(&[("a;b", 3), ("a;c", 1)]));
        let parsed = parse_folded(b"a;b\na;b\n", true, limits()).unwrap();
        assert_eq!(parsed.stacks(), stacks(&[("a;b", 1), ("a;b", 1)]));
        let err = parse_folded(b"a;b 3\na;c x\n", false, limits()).unwrap_err();
        assert!(err.message.contains("line 2"), "{}", err.message);
    }

    /// A trie/tree node with one-byte varints (all values here are below 128).
    fn node(out: &mut Vec<u8>, name: &str, value: u64, children: u64) {
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
        out.push(value as u8);
        out.push(children as u8);
    }

    #[test]
    fn trie_appends_suffixes() {
        // "" -> "a;" -> {"a;b" = 3, "a;c" = 1, "a;" -> ";d" -> "a;;d" = 2}, "x" -> "xy" = 5
        let mut b = Vec::new();
        node(&mut b, "", 0, 2);
        node(&mut b, "a;", 0, 3);
        node(&mut b, "b", 3, 0);
        node(&mut b, "c", 1, 0);
        node(&mut b, ";d", 2, 0);
        node(&mut b, "x", 0, 1);
        node(&mut b, "y;z", 5, 0);
        assert_eq!(
            parse_trie(&b, limits()).unwrap().stacks(),
            stacks(&[("a;b", 3), ("a;c", 1), ("a;;d", 2), ("xy;z", 5)])
        );
        assert!(parse_trie(&b[..b.len() - 1], limits()).is_err());
    }

    #[test]
    fn tree_walks_paths() {
        let mut b = Vec::new();
        node(&mut b, "", 0, 1);
        node(&mut b, "a", 1, 2);
        node(&mut b, "b", 3, 0);
        node(&mut b, "c", 1, 0);
        assert_eq!(
            parse_tree(&b, limits()).unwrap().stacks(),
            stacks(&[("a", 1), ("a;b", 3), ("a;c", 1)])
        );
        let mut bad = b.clone();
        bad.push(0);
        assert!(parse_tree(&bad, limits()).is_err());
    }

    /// A tree chain of `n` nodes, each with a self value: its stacks repeat the whole path,
    /// n²/2 frames from n nodes.
    fn chain(n: usize) -> Vec<u8> {
        let mut b = Vec::new();
        for i in 0..n {
            node(&mut b, "f", 1, u64::from(i + 1 < n));
        }
        b
    }

    #[test]
    fn deep_stacks_keep_their_leaf_side_and_expansion_is_bounded() {
        let l = TextLimits {
            max_depth: 3,
            ..limits()
        };
        let parsed = parse_folded(b"a;b;c;d;e 2\n", false, l).unwrap();
        assert_eq!(parsed.stacks(), stacks(&[("c;d;e", 2)]));
        let parsed = parse_tree(&chain(5), l).unwrap();
        assert_eq!(parsed.stacks()[4], ("f;f;f".to_owned(), 1));

        // 8,000 nodes would expand to 32 million frames: refused after the first thousands.
        let err = parse_tree(
            &chain(8_000),
            TextLimits {
                max_samples: usize::MAX,
                max_frames: 100_000,
                ..limits()
            },
        )
        .unwrap_err();
        assert!(
            err.message.contains("more than 100000 frames"),
            "{}",
            err.message
        );
        let err = parse_tree(
            &chain(8_000),
            TextLimits {
                max_samples: 10,
                ..limits()
            },
        )
        .unwrap_err();
        assert_eq!(
            err.message,
            "profile has 8000 samples, more than the limit of 10"
        );
    }

    #[test]
    fn a_trie_revisiting_a_long_name_runs_out_of_work() {
        // One 1,000-byte frame name completed again by each of 1,000 children ("x;" + i).
        let mut b = Vec::new();
        let long = "n".repeat(1000);
        b.extend_from_slice(&[0xe8, 0x07]); // 1000 as a varint
        b.extend_from_slice(long.as_bytes());
        b.push(0);
        b.extend_from_slice(&[0xe8, 0x07]);
        for i in 0..1000 {
            let suffix = format!("{};x", i % 10);
            node(&mut b, &suffix, 1, 0);
        }
        let l = TextLimits {
            max_name_work: 200_000,
            ..limits()
        };
        let err = parse_trie(&b, l).unwrap_err();
        assert!(
            err.message.contains("more than 200000 bytes"),
            "{}",
            err.message
        );
        assert_eq!(parse_trie(&b, limits()).unwrap().stacks().len(), 1000);
    }
}
