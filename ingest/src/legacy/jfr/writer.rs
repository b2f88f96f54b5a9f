//! A small JFR chunk writer, for fuzz seeds and tests: recordings with exactly the shapes a
//! test needs (the agent's context ids, pool-referenced strings, padded sizes, hostile type
//! graphs, and chunks of fixed-width integers, which no JVM writes: HotSpot's switch for them
//! is fixed in the VM), which no JVM at hand writes on demand.

use super::Integers;

/// A type of the chunk's metadata: id, name, fields as (name, type id, constant pool?,
/// array?).
pub type ClassSpec = (u64, &'static str, Vec<(&'static str, u64, bool, bool)>);

/// A constant pool: its type id, and its entries as (key, encoded value).
pub type PoolSpec = (u64, Vec<(u64, Vec<u8>)>);

/// Encodes records and field values the way a chunk of one integer form holds them.
#[derive(Debug, Clone, Copy)]
pub struct Encoder(pub Integers);

impl Encoder {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        for _ in 0..8 {
            if v < 0x80 {
                out.push(v as u8);
                return;
            }
            out.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// A Java `long`: type ids, ticks, pool keys and references, `long` fields.
    pub fn long(&self, out: &mut Vec<u8>, v: u64) {
        match self.0 {
            Integers::Compressed => Self::varint(out, v),
            Integers::FixedWidth => out.extend_from_slice(&v.to_be_bytes()),
        }
    }

    /// A Java `int`: counts, string indices, `int` fields. Compressed, a negative one is
    /// sign-extended to 64 bits first, as HotSpot writes it (nine bytes).
    pub fn int(&self, out: &mut Vec<u8>, v: i32) {
        match self.0 {
            Integers::Compressed => Self::varint(out, i64::from(v) as u64),
            Integers::FixedWidth => out.extend_from_slice(&v.to_be_bytes()),
        }
    }

    fn count(&self, out: &mut Vec<u8>, n: usize) {
        self.int(out, i32::try_from(n).expect("a count that fits an int"));
    }

    /// A UTF-8 string field.
    pub fn utf8(&self, out: &mut Vec<u8>, s: &str) {
        out.push(3);
        self.count(out, s.len());
        out.extend_from_slice(s.as_bytes());
    }

    /// A string field as UTF-16 code units (`char`s).
    pub fn utf16(&self, out: &mut Vec<u8>, s: &str) {
        out.push(4);
        let units: Vec<u16> = s.encode_utf16().collect();
        self.count(out, units.len());
        for unit in units {
            match self.0 {
                Integers::Compressed => Self::varint(out, u64::from(unit)),
                Integers::FixedWidth => out.extend_from_slice(&unit.to_be_bytes()),
            }
        }
    }

    /// A string field in Latin-1 (the text must be Latin-1).
    pub fn latin1(&self, out: &mut Vec<u8>, s: &str) {
        out.push(5);
        let bytes: Vec<u8> = s
            .chars()
            .map(|c| u8::try_from(c).expect("Latin-1"))
            .collect();
        self.count(out, bytes.len());
        out.extend(bytes);
    }

    /// A string field referring to the `java.lang.String` pool.
    pub fn pooled_string(&self, out: &mut Vec<u8>, key: u64) {
        out.push(2);
        self.long(out, key);
    }

    /// A record: its size (compressed, a padded five-byte varint, as writers reserve it), then
    /// `body`.
    fn record(&self, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(body.len() + 5);
        match self.0 {
            Integers::Compressed => {
                let size = body.len() as u64 + 5;
                for i in 0..4 {
                    out.push(((size >> (7 * i)) as u8 & 0x7f) | 0x80);
                }
                out.push((size >> 28) as u8 & 0x7f);
            }
            Integers::FixedWidth => {
                out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
            }
        }
        out.extend_from_slice(body);
        out
    }

    /// One chunk with `classes` in its metadata, one checkpoint holding `pools` (type id, then
    /// (key, encoded value) entries) and `events` (type id, encoded fields).
    pub fn chunk(
        &self,
        classes: &[ClassSpec],
        pools: &[PoolSpec],
        events: &[(u64, Vec<u8>)],
    ) -> Vec<u8> {
        // Metadata: a string table, then root { metadata { class { field ... } ... } region }.
        let mut strings: Vec<String> = Vec::new();
        let mut idx = |s: &str| -> usize {
            if let Some(i) = strings.iter().position(|x| x == s) {
                return i;
            }
            strings.push(s.to_owned());
            strings.len() - 1
        };
        let mut tree = Vec::new();
        let element =
            |tree: &mut Vec<u8>, name: usize, attrs: &[(usize, usize)], children: usize| {
                self.count(tree, name);
                self.count(tree, attrs.len());
                for (k, v) in attrs {
                    self.count(tree, *k);
                    self.count(tree, *v);
                }
                self.count(tree, children);
            };
        let (root, metadata, region, class, field) = (
            idx("root"),
            idx("metadata"),
            idx("region"),
            idx("class"),
            idx("field"),
        );
        let (id, name, class_attr, cp, dim, yes, one) = (
            idx("id"),
            idx("name"),
            idx("class"),
            idx("constantPool"),
            idx("dimension"),
            idx("true"),
            idx("1"),
        );
        element(&mut tree, root, &[], 2);
        element(&mut tree, metadata, &[], classes.len());
        for (type_id, type_name, fields) in classes {
            let attrs = [(id, idx(&type_id.to_string())), (name, idx(type_name))];
            element(&mut tree, class, &attrs, fields.len());
            for (field_name, field_type, pooled, array) in fields {
                let mut attrs = vec![
                    (name, idx(field_name)),
                    (class_attr, idx(&field_type.to_string())),
                ];
                if *pooled {
                    attrs.push((cp, yes));
                }
                if *array {
                    attrs.push((dim, one));
                }
                element(&mut tree, field, &attrs, 0);
            }
        }
        element(&mut tree, region, &[], 0);
        let mut meta = Vec::new();
        self.long(&mut meta, 0); // the metadata event's type id
        for _ in 0..3 {
            self.long(&mut meta, 0); // start ticks, duration, metadata id
        }
        self.count(&mut meta, strings.len());
        for s in &strings {
            self.utf8(&mut meta, s);
        }
        meta.extend_from_slice(&tree);

        let mut checkpoint = Vec::new();
        self.long(&mut checkpoint, 1); // the checkpoint event's type id
        for _ in 0..3 {
            self.long(&mut checkpoint, 0); // start ticks, duration, delta (the only one)
        }
        checkpoint.push(0); // type flags
        self.count(&mut checkpoint, pools.len());
        for (type_id, entries) in pools {
            self.long(&mut checkpoint, *type_id);
            self.count(&mut checkpoint, entries.len());
            for (key, value) in entries {
                self.long(&mut checkpoint, *key);
                checkpoint.extend_from_slice(value);
            }
        }

        let meta = self.record(&meta);
        let checkpoint = self.record(&checkpoint);
        let meta_offset = 68u64;
        let cp_offset = meta_offset + meta.len() as u64;
        let mut body = [meta, checkpoint].concat();
        for (type_id, fields) in events {
            let mut e = Vec::new();
            self.long(&mut e, *type_id);
            e.extend_from_slice(fields);
            body.extend(self.record(&e));
        }
        let size = 68 + body.len() as u64;
        let mut out = Vec::with_capacity(size as usize);
        out.extend_from_slice(b"FLR\0");
        out.extend_from_slice(&[0, 2, 0, 1]);
        for v in [
            size,
            cp_offset,
            meta_offset,
            1_700_000_000_000_000_000,
            10_000_000_000,
            0,
            1_000_000_000,
        ] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        // Finished; bit 1: the final chunk; bit 0: compressed integers.
        let flags = match self.0 {
            Integers::Compressed => 3,
            Integers::FixedWidth => 2,
        };
        out.extend_from_slice(&[0, 0, 0, flags]);
        out.extend(body);
        out
    }
}

/// The types of a CPU recording: primitives, symbols, classes, methods, frames, stack traces,
/// thread states, and `jdk.ExecutionSample` with the agent's correlation fields.
pub fn cpu_classes() -> Vec<ClassSpec> {
    vec![
        (20, "long", vec![]),
        (21, "int", vec![]),
        (22, "boolean", vec![]),
        (23, "java.lang.String", vec![]),
        (30, "jdk.types.Symbol", vec![("string", 23, false, false)]),
        (31, "java.lang.Class", vec![("name", 30, true, false)]),
        (
            32,
            "jdk.types.Method",
            vec![("type", 31, true, false), ("name", 30, true, false)],
        ),
        (
            33,
            "jdk.types.StackFrame",
            vec![
                ("method", 32, true, false),
                ("lineNumber", 21, false, false),
            ],
        ),
        (
            34,
            "jdk.types.StackTrace",
            vec![("truncated", 22, false, false), ("frames", 33, false, true)],
        ),
        (
            35,
            "jdk.types.ThreadState",
            vec![("name", 23, false, false)],
        ),
        (
            100,
            "jdk.ExecutionSample",
            vec![
                ("startTime", 20, false, false),
                ("stackTrace", 34, true, false),
                ("state", 35, true, false),
                ("contextId", 20, false, false),
                ("spanId", 20, false, false),
            ],
        ),
        (
            101,
            "jdk.ActiveSetting",
            vec![("name", 23, false, false), ("value", 23, false, false)],
        ),
    ]
}

/// A recording of `com/example/Main.main` calling `work`, its event setting `itimer` (the
/// setting's name a pooled string), and four execution samples: three of a runnable thread
/// (contexts 1, 1 and 0; the first in span 0x1234) and one of a sleeping thread. Its symbols
/// use the three inline string encodings, and `work`'s line number is -1 (a negative `int`).
pub fn cpu_recording(integers: Integers) -> Vec<u8> {
    let e = Encoder(integers);
    let text = |encode: fn(&Encoder, &mut Vec<u8>, &str), s: &str| {
        let mut v = Vec::new();
        encode(&e, &mut v, s);
        v
    };
    let longs = |vs: &[u64]| {
        let mut v = Vec::new();
        for x in vs {
            e.long(&mut v, *x);
        }
        v
    };
    // A frame: its method (a pool reference), then its line number (an int).
    let frame = |trace: &mut Vec<u8>, method: u64, line: i32| {
        e.long(trace, method);
        e.int(trace, line);
    };
    let mut trace = vec![0u8]; // not truncated
    e.int(&mut trace, 2);
    frame(&mut trace, 2, -1); // leaf first: work, then main at line 5
    frame(&mut trace, 1, 5);
    let pools = vec![
        (23, vec![(1, text(Encoder::utf8, "event"))]),
        (
            30,
            vec![
                (1, text(Encoder::utf8, "com/example/Main")),
                (2, text(Encoder::latin1, "main")),
                (3, text(Encoder::utf16, "work")),
            ],
        ),
        (31, vec![(1, longs(&[1]))]),
        (32, vec![(1, longs(&[1, 2])), (2, longs(&[1, 3]))]),
        (34, vec![(1, trace)]),
        (
            35,
            vec![
                (5, text(Encoder::utf8, "STATE_RUNNABLE")),
                (9, text(Encoder::utf8, "STATE_SLEEPING")),
            ],
        ),
    ];
    let mut setting = Vec::new();
    e.pooled_string(&mut setting, 1);
    e.utf8(&mut setting, "itimer");
    let events = vec![
        (101, setting),
        (100, longs(&[1, 1, 5, 1, 0x1234])),
        (100, longs(&[2, 1, 5, 1, 0])),
        (100, longs(&[3, 1, 5, 0, 0])),
        (100, longs(&[4, 1, 9, 1, 0])),
    ];
    e.chunk(&cpu_classes(), &pools, &events)
}
