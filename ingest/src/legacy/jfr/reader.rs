//! A reader of the Java Flight Recorder file format, as the JDK and async-profiler write it.
//!
//! A recording is a run of self-contained chunks. Each chunk has a header, a metadata event
//! describing every type (its fields, their types, which are constant-pool references and which
//! arrays), constant pools reached through a chain of checkpoint events, and events whose fields
//! follow their type's metadata. The reader is metadata-driven: it decodes any type the
//! metadata declares, so fields it does not know are skipped, and it moves from record to
//! record by their sizes, never by its own walk of their fields.
//!
//! Every input is untrusted: every length is checked against the bytes left, nesting and the
//! number of decoded values are bounded, and every error names the chunk and the byte offset
//! (from the start of the file) where it was found.

use std::collections::HashMap;

/// Bytes of a chunk header.
const HEADER_BYTES: usize = 68;
const MAGIC: &[u8; 4] = b"FLR\0";
/// Type id of the metadata event and of checkpoint (constant-pool) events.
const METADATA_EVENT: u64 = 0;
const CHECKPOINT_EVENT: u64 = 1;
/// Deepest nesting of inline structures (a stack trace's frames are one level) and of the
/// metadata's element tree.
const MAX_DEPTH: usize = 32;

/// A malformed recording: what is wrong, in which chunk, at which byte of the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("chunk {chunk} at byte {offset}: {message}")]
pub struct JfrError {
    pub chunk: usize,
    pub offset: usize,
    pub message: String,
}

pub(crate) type Result<T> = std::result::Result<T, JfrError>;

/// A decoded field value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// A string in the chunk's `java.lang.String` pool.
    StrRef(u64),
    /// An entry of the constant pool of type `ty`.
    Ref {
        ty: u64,
        key: u64,
    },
    Array(Vec<Value>),
    /// A structure's field values, in its type's field order.
    Object(Vec<Value>),
}

impl Value {
    pub(crate) fn as_int(&self) -> Option<i64> {
        match self {
            Self::Int(v) => Some(*v),
            _ => None,
        }
    }
}

/// A field of a type, as the metadata declares it.
#[derive(Debug, Clone)]
pub(crate) struct Field {
    pub(crate) name: String,
    pub(crate) type_id: u64,
    pub(crate) constant_pool: bool,
    pub(crate) array: bool,
}

/// A type of the metadata.
#[derive(Debug, Clone)]
pub(crate) struct Class {
    pub(crate) name: String,
    pub(crate) fields: Vec<Field>,
    /// How its values are written when it has no fields.
    primitive: Option<Primitive>,
}

impl Class {
    /// The position of the field `name` among the type's fields.
    pub(crate) fn field(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Primitive {
    Bool,
    Byte,
    Short,
    Char,
    Int,
    Long,
    Float,
    Double,
    String,
}

impl Primitive {
    fn of(name: &str) -> Option<Self> {
        Some(match name {
            "boolean" => Self::Bool,
            "byte" => Self::Byte,
            "short" => Self::Short,
            "char" => Self::Char,
            "int" => Self::Int,
            "long" => Self::Long,
            "float" => Self::Float,
            "double" => Self::Double,
            "java.lang.String" => Self::String,
            _ => return None,
        })
    }
}

/// How a chunk writes its `short`, `char`, `int` and `long` values: bit 0 of the header's
/// flags.
///
/// HotSpot and async-profiler only write compressed chunks (HotSpot's switch is fixed in the
/// VM), and the JDK's own reader knows no other form. Java Mission Control reads both, and its
/// reader is the definition of the fixed-width form followed here: every integer big-endian at
/// its Java width (two bytes for `short` and `char`, four for `int`, eight for `long`),
/// structural integers at the widths the readers use for them (record sizes, counts and string
/// indices are `int`, type ids, ticks, checkpoint deltas and pool keys `long`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Integers {
    /// LEB128 varints, each decoded as 64 bits and cut to the value's width, as the JDK does.
    Compressed,
    FixedWidth,
}

/// The field of a chunk header the mapping needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    pub(crate) ticks_per_second: i64,
}

/// One chunk: its types, its constant pools, and where its events are.
#[derive(Debug)]
pub(crate) struct Chunk<'a> {
    pub(crate) index: usize,
    pub(crate) header: Header,
    /// The file, and where this chunk lies in it.
    file: &'a [u8],
    start: usize,
    end: usize,
    integers: Integers,
    classes: HashMap<u64, Class>,
    class_by_name: HashMap<String, u64>,
    pools: HashMap<u64, HashMap<u64, Value>>,
}

/// A cursor over the bytes of one record, reporting offsets from the start of the file.
struct Cursor<'a> {
    file: &'a [u8],
    pos: usize,
    end: usize,
    chunk: usize,
    integers: Integers,
}

impl<'a> Cursor<'a> {
    fn error(&self, message: impl Into<String>) -> JfrError {
        JfrError {
            chunk: self.chunk,
            offset: self.pos,
            message: message.into(),
        }
    }

    fn left(&self) -> usize {
        self.end - self.pos
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.left() {
            return Err(self.error(format!(
                "truncated: {n} bytes needed, {} left in the record",
                self.left()
            )));
        }
        let b = &self.file[self.pos..self.pos + n];
        self.pos += n;
        Ok(b)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.bytes(1)?[0])
    }

    /// An unsigned LEB128 integer of at most 9 bytes, the ninth giving all its 8 bits.
    /// Writers pad sizes with redundant continuation bytes, so no minimal form is assumed.
    fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for i in 0..8 {
            let b = self.u8()?;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Ok(value | u64::from(self.u8()?) << 56)
    }

    /// `N` big-endian bytes.
    fn fixed<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.bytes(N)?.try_into().expect("N bytes"))
    }

    /// An integer the readers read as a Java `long`: type ids, ticks, pool keys.
    fn long(&mut self) -> Result<u64> {
        match self.integers {
            Integers::Compressed => self.varint(),
            Integers::FixedWidth => Ok(u64::from_be_bytes(self.fixed()?)),
        }
    }

    /// An integer the readers read as a Java `int`: sizes, counts, string indices. A
    /// compressed one is not cut to 32 bits, so an absurd count is caught as such.
    fn int(&mut self) -> Result<u64> {
        match self.integers {
            Integers::Compressed => self.varint(),
            Integers::FixedWidth => Ok(u64::from(u32::from_be_bytes(self.fixed()?))),
        }
    }

    /// A Java `short` or `char`.
    fn short(&mut self) -> Result<u64> {
        match self.integers {
            Integers::Compressed => self.varint(),
            Integers::FixedWidth => Ok(u64::from(u16::from_be_bytes(self.fixed()?))),
        }
    }

    /// A count of things each at least one byte long, so never more than the bytes left.
    fn count(&mut self, what: &str) -> Result<usize> {
        let n = self.int()?;
        if n > self.left() as u64 {
            return Err(self.error(format!(
                "{what} count {n} is more than the {} bytes left",
                self.left()
            )));
        }
        Ok(n as usize)
    }

    fn string(&mut self) -> Result<Value> {
        let at = self.pos;
        match self.u8()? {
            0 => Ok(Value::Null),
            1 => Ok(Value::Str(String::new())),
            2 => Ok(Value::StrRef(self.long()?)),
            3 => {
                let n = self.count("UTF-8 string byte")?;
                let bytes = self.bytes(n)?;
                String::from_utf8(bytes.to_vec())
                    .map(Value::Str)
                    .map_err(|_| self.error("a UTF-8 string is not valid UTF-8"))
            }
            4 => {
                let n = self.count("UTF-16 string char")?;
                let mut units = Vec::with_capacity(n);
                for _ in 0..n {
                    units.push(self.short()? as u16);
                }
                Ok(Value::Str(String::from_utf16_lossy(&units)))
            }
            5 => {
                let n = self.count("Latin-1 string byte")?;
                Ok(Value::Str(
                    self.bytes(n)?.iter().map(|&b| char::from(b)).collect(),
                ))
            }
            other => Err(JfrError {
                chunk: self.chunk,
                offset: at,
                message: format!("unknown string encoding {other}"),
            }),
        }
    }
}

/// Offsets of the chunks of a recording, each checked to lie within it.
pub(crate) fn chunk_starts(file: &[u8]) -> Result<Vec<(usize, usize)>> {
    let mut starts = Vec::new();
    let mut pos = 0;
    while pos < file.len() {
        let chunk = starts.len();
        let err = |offset: usize, message: String| JfrError {
            chunk,
            offset,
            message,
        };
        if file.len() - pos < HEADER_BYTES {
            return Err(err(
                pos,
                format!(
                    "truncated chunk header: {} of {HEADER_BYTES} bytes",
                    file.len() - pos
                ),
            ));
        }
        let h = &file[pos..pos + HEADER_BYTES];
        if &h[..4] != MAGIC {
            return Err(err(pos, "not a JFR chunk (no FLR magic)".into()));
        }
        let major = u16::from_be_bytes([h[4], h[5]]);
        if !(1..=2).contains(&major) {
            return Err(err(pos + 4, format!("unsupported JFR version {major}")));
        }
        let size = be_u64(&h[8..16]);
        if size < HEADER_BYTES as u64 || size > (file.len() - pos) as u64 {
            return Err(err(
                pos + 8,
                format!(
                    "chunk size {size} does not fit the {} bytes left (truncated or unfinished recording)",
                    file.len() - pos
                ),
            ));
        }
        starts.push((pos, pos + size as usize));
        pos += size as usize;
    }
    if starts.is_empty() {
        return Err(JfrError {
            chunk: 0,
            offset: 0,
            message: "empty recording".into(),
        });
    }
    Ok(starts)
}

fn be_u64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b.try_into().expect("8 bytes"))
}

impl<'a> Chunk<'a> {
    /// Reads the header, the metadata and every constant pool of the chunk in
    /// `file[start..end]`.
    pub(crate) fn read(file: &'a [u8], index: usize, (start, end): (usize, usize)) -> Result<Self> {
        let h = &file[start..start + HEADER_BYTES];
        let size = (end - start) as u64;
        let err = |offset: usize, message: &str| JfrError {
            chunk: index,
            offset,
            message: message.to_owned(),
        };
        let cp_offset = be_u64(&h[16..24]);
        let meta_offset = be_u64(&h[24..32]);
        if meta_offset < HEADER_BYTES as u64 || meta_offset >= size {
            return Err(err(
                start + 24,
                "no metadata event (an unfinished recording?)",
            ));
        }
        if cp_offset < HEADER_BYTES as u64 || cp_offset >= size {
            return Err(err(
                start + 16,
                "no constant pools (an unfinished recording?)",
            ));
        }
        let integers = if h[67] & 1 == 1 {
            Integers::Compressed
        } else {
            Integers::FixedWidth
        };
        let header = Header {
            ticks_per_second: be_u64(&h[56..64]) as i64,
        };
        let mut chunk = Self {
            index,
            header,
            file,
            start,
            end,
            integers,
            classes: HashMap::new(),
            class_by_name: HashMap::new(),
            pools: HashMap::new(),
        };
        chunk.read_metadata(start + meta_offset as usize)?;
        chunk.read_pools(start + cp_offset as usize)?;
        Ok(chunk)
    }

    /// A cursor over the record at `pos`, after its size, bounded by that size.
    fn record(&self, pos: usize) -> Result<(Cursor<'a>, usize)> {
        let mut c = Cursor {
            file: self.file,
            pos,
            end: self.end,
            chunk: self.index,
            integers: self.integers,
        };
        let size = c.int()?;
        if size == 0 || size > (self.end - pos) as u64 {
            return Err(JfrError {
                chunk: self.index,
                offset: pos,
                message: format!(
                    "record size {size} does not fit the {} bytes left in the chunk",
                    self.end - pos
                ),
            });
        }
        c.end = pos + size as usize;
        Ok((c, pos + size as usize))
    }

    fn read_metadata(&mut self, pos: usize) -> Result<()> {
        let (mut c, _) = self.record(pos)?;
        if c.long()? != METADATA_EVENT {
            return Err(c.error("the header's metadata offset is not a metadata event"));
        }
        for _ in 0..3 {
            c.long()?; // start ticks, duration, metadata id
        }
        let n = c.count("metadata string")?;
        let mut strings = Vec::with_capacity(n);
        for _ in 0..n {
            strings.push(match c.string()? {
                Value::Str(s) => s,
                _ => String::new(),
            });
        }
        let root = Element::read(&mut c, &strings, 0)?;
        for metadata in root.children.iter().filter(|e| e.name == "metadata") {
            for class in metadata.children.iter().filter(|e| e.name == "class") {
                let id = class
                    .attr("id")
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| JfrError {
                        chunk: self.index,
                        offset: pos,
                        message: "a metadata class without a numeric id".into(),
                    })?;
                let name = class.attr("name").unwrap_or_default().to_owned();
                let fields = class
                    .children
                    .iter()
                    .filter(|e| e.name == "field")
                    .map(|f| Field {
                        name: f.attr("name").unwrap_or_default().to_owned(),
                        type_id: f
                            .attr("class")
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(u64::MAX),
                        constant_pool: f.attr("constantPool").is_some_and(|v| v == "true"),
                        array: f.attr("dimension").is_some_and(|v| v == "1"),
                    })
                    .collect::<Vec<_>>();
                let primitive = fields.is_empty().then(|| Primitive::of(&name)).flatten();
                self.class_by_name.insert(name.clone(), id);
                self.classes.insert(
                    id,
                    Class {
                        name,
                        fields,
                        primitive,
                    },
                );
            }
        }
        Ok(())
    }

    /// Follows the chain of checkpoint events from the last one back to the first, merging
    /// their pools per type.
    fn read_pools(&mut self, mut pos: usize) -> Result<()> {
        let mut budget = Budget::for_bytes(self.end - self.start);
        // Each step goes back, so the chain ends; a cycle is corrupt input.
        let mut seen = std::collections::HashSet::new();
        loop {
            if !seen.insert(pos) {
                return Err(JfrError {
                    chunk: self.index,
                    offset: pos,
                    message: "the checkpoint chain loops".into(),
                });
            }
            let (mut c, _) = self.record(pos)?;
            if c.long()? != CHECKPOINT_EVENT {
                return Err(c.error("a constant-pool offset does not point at a checkpoint event"));
            }
            c.long()?; // start ticks
            c.long()?; // duration
            let delta = c.long()? as i64;
            c.u8()?; // checkpoint type flags: one byte, as the JDK and JMC read them
            let pools = c.count("constant pool")?;
            for _ in 0..pools {
                let ty = c.long()?;
                let class = self.class(ty, &c)?.clone();
                let entries = c.count("constant pool entry")?;
                for _ in 0..entries {
                    let key = c.long()?;
                    let value = self.value(&mut c, &class, 0, &mut budget)?;
                    self.pools.entry(ty).or_default().insert(key, value);
                }
            }
            if delta == 0 {
                return Ok(());
            }
            let previous = pos as i64 + delta;
            if previous < (self.start + HEADER_BYTES) as i64 || previous >= self.end as i64 {
                return Err(JfrError {
                    chunk: self.index,
                    offset: pos,
                    message: format!("checkpoint delta {delta} leads outside the chunk"),
                });
            }
            pos = previous as usize;
        }
    }

    fn class(&self, id: u64, c: &Cursor<'_>) -> Result<&Class> {
        self.classes
            .get(&id)
            .ok_or_else(|| c.error(format!("type {id} is not in the chunk's metadata")))
    }

    /// The type with id `id`, if the chunk declares it.
    pub(crate) fn class_by_id(&self, id: u64) -> Option<&Class> {
        self.classes.get(&id)
    }

    /// The id of the type named `name`, if the chunk declares it.
    pub(crate) fn class_id(&self, name: &str) -> Option<u64> {
        self.class_by_name.get(name).copied()
    }

    /// One value of type `class` (not a reference, not an array).
    fn value(
        &self,
        c: &mut Cursor<'_>,
        class: &Class,
        depth: usize,
        budget: &mut Budget,
    ) -> Result<Value> {
        budget.take(c)?;
        if let Some(p) = class.primitive {
            return Ok(match p {
                Primitive::Bool => Value::Bool(c.u8()? != 0),
                Primitive::Byte => Value::Int(i64::from(c.u8()? as i8)),
                // Cut to the Java type's width, as the JDK reads them (`(int) readLong()`).
                Primitive::Short => Value::Int(i64::from(c.short()? as i16)),
                Primitive::Char => Value::Int(i64::from(c.short()? as u16)),
                Primitive::Int => Value::Int(i64::from(c.int()? as i32)),
                Primitive::Long => Value::Int(c.long()? as i64),
                Primitive::Float => Value::Float(f64::from(f32::from_be_bytes(
                    c.bytes(4)?.try_into().expect("4 bytes"),
                ))),
                Primitive::Double => {
                    Value::Float(f64::from_be_bytes(c.bytes(8)?.try_into().expect("8 bytes")))
                }
                Primitive::String => c.string()?,
            });
        }
        if depth >= MAX_DEPTH {
            return Err(c.error(format!("type {} nests deeper than {MAX_DEPTH}", class.name)));
        }
        let mut fields = Vec::with_capacity(class.fields.len());
        for field in &class.fields {
            fields.push(self.field(c, field, depth + 1, budget)?);
        }
        Ok(Value::Object(fields))
    }

    fn field(
        &self,
        c: &mut Cursor<'_>,
        field: &Field,
        depth: usize,
        budget: &mut Budget,
    ) -> Result<Value> {
        let one = |c: &mut Cursor<'_>, budget: &mut Budget| -> Result<Value> {
            if field.constant_pool {
                budget.take(c)?;
                Ok(Value::Ref {
                    ty: field.type_id,
                    key: c.long()?,
                })
            } else {
                let class = self.class(field.type_id, c)?;
                self.value(c, class, depth, budget)
            }
        };
        if !field.array {
            return one(c, budget);
        }
        // Elements may be empty structures, so the count is bounded by the value budget too.
        let n = c.int()?;
        budget.check(c, n)?;
        let mut items = Vec::with_capacity((n as usize).min(c.left()));
        for _ in 0..n {
            items.push(one(c, budget)?);
        }
        Ok(Value::Array(items))
    }

    /// Calls `f` with the type and field values of every event whose type `wanted` accepts,
    /// in file order; other events, metadata and checkpoints are skipped by their sizes.
    pub(crate) fn for_each_event(
        &self,
        mut wanted: impl FnMut(&Class) -> bool,
        mut f: impl FnMut(&Class, Vec<Value>) -> Result<()>,
    ) -> Result<()> {
        let mut pos = self.start + HEADER_BYTES;
        let mut budget = Budget::for_bytes(self.end - self.start);
        while pos < self.end {
            let (mut c, next) = self.record(pos)?;
            let ty = c.long()?;
            if ty != METADATA_EVENT && ty != CHECKPOINT_EVENT {
                let class = self.class(ty, &c)?;
                if wanted(class) {
                    let Value::Object(fields) = self.value(&mut c, class, 0, &mut budget)? else {
                        return Err(c.error(format!("event type {} has no fields", class.name)));
                    };
                    f(class, fields)?;
                }
            }
            pos = next;
        }
        Ok(())
    }

    /// A string field's text: inline, or from the string pool.
    pub(crate) fn text<'v>(&'v self, value: &'v Value) -> Option<&'v str> {
        match value {
            Value::Str(s) => Some(s),
            Value::StrRef(key) => {
                let pool = self.pools.get(&self.class_id("java.lang.String")?)?;
                match pool.get(key)? {
                    Value::Str(s) => Some(s),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// Field `name` of `object`, an entry of type `class`.
    pub(crate) fn get<'v>(
        &self,
        class: &Class,
        object: &'v Value,
        name: &str,
    ) -> Option<&'v Value> {
        match object {
            Value::Object(fields) => fields.get(class.field(name)?),
            _ => None,
        }
    }

    /// The pool entry `reference` points at, with its type.
    pub(crate) fn deref<'v>(&'v self, reference: &Value) -> Option<(&'v Class, &'v Value)> {
        let Value::Ref { ty, key } = reference else {
            return None;
        };
        Some((self.classes.get(ty)?, self.pools.get(ty)?.get(key)?))
    }

    /// The chunk's ticks as nanoseconds.
    pub(crate) fn ticks_to_nanos(&self, ticks: i64) -> i64 {
        match self.header.ticks_per_second {
            1_000_000_000 | 0 => ticks,
            tps => (i128::from(ticks) * 1_000_000_000 / i128::from(tps)) as i64,
        }
    }
}

/// A bound on the values decoded from a chunk: a structure without fields takes no bytes, so
/// an array of a billion of them would otherwise fit in a few bytes.
struct Budget {
    left: u64,
}

impl Budget {
    fn for_bytes(bytes: usize) -> Self {
        Self {
            left: 4 * bytes as u64 + 1_000_000,
        }
    }

    fn check(&self, c: &Cursor<'_>, n: u64) -> Result<()> {
        if n > self.left {
            return Err(c.error(format!(
                "{n} values are more than a chunk of this size holds"
            )));
        }
        Ok(())
    }

    fn take(&mut self, c: &Cursor<'_>) -> Result<()> {
        self.check(c, 1)?;
        self.left -= 1;
        Ok(())
    }
}

/// An element of the metadata event's tree.
struct Element {
    name: String,
    attributes: Vec<(String, String)>,
    children: Vec<Element>,
}

impl Element {
    fn read(c: &mut Cursor<'_>, strings: &[String], depth: usize) -> Result<Self> {
        if depth >= MAX_DEPTH {
            return Err(c.error(format!("metadata nests deeper than {MAX_DEPTH}")));
        }
        let string = |c: &mut Cursor<'_>| -> Result<String> {
            let i = c.int()?;
            strings
                .get(i as usize)
                .cloned()
                .ok_or_else(|| c.error(format!("metadata string {i} of {}", strings.len())))
        };
        let name = string(c)?;
        let n = c.count("metadata attribute")?;
        let mut attributes = Vec::with_capacity(n);
        for _ in 0..n {
            attributes.push((string(c)?, string(c)?));
        }
        let n = c.count("metadata element")?;
        let mut children = Vec::with_capacity(n);
        for _ in 0..n {
            children.push(Self::read(c, strings, depth + 1)?);
        }
        Ok(Self {
            name,
            attributes,
            children,
        })
    }

    fn attr(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}
