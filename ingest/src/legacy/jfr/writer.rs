//! A small JFR chunk writer, for fuzz seeds and tests: recordings with exactly the shapes a
//! test needs (the agent's context ids, pool-referenced strings, padded sizes, hostile type
//! graphs), which no JVM at hand writes on demand.

/// A type of the chunk's metadata: id, name, fields as (name, type id, constant pool?,
/// array?).
pub type ClassSpec = (u64, &'static str, Vec<(&'static str, u64, bool, bool)>);

/// A constant pool: its type id, and its entries as (key, encoded value).
pub type PoolSpec = (u64, Vec<(u64, Vec<u8>)>);

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

/// A UTF-8 string field.
pub fn utf8(out: &mut Vec<u8>, s: &str) {
    out.push(3);
    varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// A string field referring to the `java.lang.String` pool.
pub fn pooled_string(out: &mut Vec<u8>, key: u64) {
    out.push(2);
    varint(out, key);
}

/// Appends an integer field.
pub fn int(out: &mut Vec<u8>, v: u64) {
    varint(out, v);
}

/// A record: its size as a padded five-byte varint (as writers reserve it), then `body`.
fn record(body: &[u8]) -> Vec<u8> {
    let size = body.len() as u64 + 5;
    let mut out = Vec::with_capacity(size as usize);
    for i in 0..4 {
        out.push(((size >> (7 * i)) as u8 & 0x7f) | 0x80);
    }
    out.push((size >> 28) as u8 & 0x7f);
    out.extend_from_slice(body);
    out
}

/// One chunk with `classes` in its metadata, one checkpoint holding `pools` (type id, then
/// (key, encoded value) entries) and `events` (type id, encoded fields).
pub fn chunk(classes: &[ClassSpec], pools: &[PoolSpec], events: &[(u64, Vec<u8>)]) -> Vec<u8> {
    // Metadata: a string table, then root { metadata { class { field ... } ... } region }.
    let mut strings: Vec<String> = Vec::new();
    let mut idx = |s: &str| -> u64 {
        if let Some(i) = strings.iter().position(|x| x == s) {
            return i as u64;
        }
        strings.push(s.to_owned());
        strings.len() as u64 - 1
    };
    let mut tree = Vec::new();
    let element = |tree: &mut Vec<u8>, name: u64, attrs: &[(u64, u64)], children: u64| {
        varint(tree, name);
        varint(tree, attrs.len() as u64);
        for (k, v) in attrs {
            varint(tree, *k);
            varint(tree, *v);
        }
        varint(tree, children);
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
    element(&mut tree, metadata, &[], classes.len() as u64);
    for (type_id, type_name, fields) in classes {
        let attrs = [(id, idx(&type_id.to_string())), (name, idx(type_name))];
        element(&mut tree, class, &attrs, fields.len() as u64);
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
    varint(&mut meta, 0); // the metadata event's type id
    for _ in 0..3 {
        varint(&mut meta, 0); // start ticks, duration, metadata id
    }
    varint(&mut meta, strings.len() as u64);
    for s in &strings {
        utf8(&mut meta, s);
    }
    meta.extend_from_slice(&tree);

    let mut checkpoint = Vec::new();
    varint(&mut checkpoint, 1); // the checkpoint event's type id
    for _ in 0..4 {
        varint(&mut checkpoint, 0); // start ticks, duration, delta (the only one), type
    }
    varint(&mut checkpoint, pools.len() as u64);
    for (type_id, entries) in pools {
        varint(&mut checkpoint, *type_id);
        varint(&mut checkpoint, entries.len() as u64);
        for (key, value) in entries {
            varint(&mut checkpoint, *key);
            checkpoint.extend_from_slice(value);
        }
    }

    let meta = record(&meta);
    let checkpoint = record(&checkpoint);
    let meta_offset = 68u64;
    let cp_offset = meta_offset + meta.len() as u64;
    let mut body = [meta, checkpoint].concat();
    for (type_id, fields) in events {
        let mut e = Vec::new();
        varint(&mut e, *type_id);
        e.extend_from_slice(fields);
        body.extend(record(&e));
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
    out.extend_from_slice(&[0, 0, 0, 3]); // finished; compressed integers, final chunk
    out.extend(body);
    out
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
/// (contexts 1, 1 and 0; the first in span 0x1234) and one of a sleeping thread.
pub fn cpu_recording() -> Vec<u8> {
    let text = |s: &str| {
        let mut v = Vec::new();
        utf8(&mut v, s);
        v
    };
    let ints = |vs: &[u64]| {
        let mut v = Vec::new();
        for x in vs {
            int(&mut v, *x);
        }
        v
    };
    let mut trace = vec![0u8]; // not truncated
    int(&mut trace, 2);
    trace.extend(ints(&[2, 10, 1, 5])); // leaf first: work at line 10, main at line 5
    let pools = vec![
        (23, vec![(1, text("event"))]),
        (
            30,
            vec![
                (1, text("com/example/Main")),
                (2, text("main")),
                (3, text("work")),
            ],
        ),
        (31, vec![(1, ints(&[1]))]),
        (32, vec![(1, ints(&[1, 2])), (2, ints(&[1, 3]))]),
        (34, vec![(1, trace)]),
        (
            35,
            vec![(5, text("STATE_RUNNABLE")), (9, text("STATE_SLEEPING"))],
        ),
    ];
    let mut setting = Vec::new();
    pooled_string(&mut setting, 1);
    utf8(&mut setting, "itimer");
    let events = vec![
        (101, setting),
        (100, ints(&[1, 1, 5, 1, 0x1234])),
        (100, ints(&[2, 1, 5, 1, 0])),
        (100, ints(&[3, 1, 5, 0, 0])),
        (100, ints(&[4, 1, 9, 1, 0])),
    ];
    chunk(&cpu_classes(), &pools, &events)
}
