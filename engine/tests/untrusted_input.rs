//! Query inputs from clients never panic the engine: label selectors (from every query API),
//! and tree bytes (partial results). Seeds, then thousands of deterministic mutations of them
//! (bit flips, truncations, splices, boundary bytes); a valid input must also give the same
//! answer twice.

use profusion_engine::selector;
use profusion_model::tree::Tree;

use profusion_testing::{MutationRng as Rng, mutate as mutate_with};

/// Quotes, braces and operators break selector parsing; 0x80 and 0xff break UTF-8 and varints.
fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    mutate_with(
        seed,
        rng,
        &[0x00, b'"', b'\\', b'{', b'}', b'~', 0x80, 0xff],
    )
}

#[test]
fn mutated_selectors_parse_or_fail_cleanly() {
    let seeds = [
        r#"{}"#,
        r#"{service_name="api"}"#,
        r#"{service_name="api", env!="dev", pod=~"web-.*", "host.name"!~"a|b"}"#,
        r#"{"utf8 ☃ name"="v\"q\\n"}"#,
        r#"process_cpu:cpu:nanoseconds:cpu:nanoseconds{x="1"}"#,
        r#"{a=~"(((((((((("}"#,
    ];
    let mut rng = Rng(0x5e1e_c70e);
    let mut parsed = 0;
    for i in 0..20_000 {
        let seed = seeds[i % seeds.len()].as_bytes();
        let input = String::from_utf8_lossy(&mutate(seed, &mut rng)).into_owned();
        let first = selector::parse(&input);
        if let Ok(s) = &first {
            parsed += 1;
            let again = selector::parse(&input).expect("parses twice");
            assert_eq!(&again.matchers, &s.matchers, "{input:?}");
            let _ = s.matches(|name| (name == "service_name").then_some("api"));
        }
    }
    assert!(
        parsed > 100,
        "the mutations should keep some selectors valid"
    );
}

#[test]
fn mutated_tree_bytes_decode_or_fail_cleanly() {
    let mut tree = Tree::new();
    for (stack, v) in [
        (&["main", "work"][..], 30),
        (&["main", "idle"], 10),
        (&["main", "work", "db"], 5),
        (&["gc"], 1),
    ] {
        tree.insert(stack, v).unwrap();
    }
    // Two children of i64::MAX each: their sum does not fit in 64 bits and holds at the
    // largest value (docs/read-path.md), with no error and no wrap to a negative total.
    let huge = [
        0, 0, 2, 1, b'a', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0, 1, b'b', 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0,
    ];
    let saturated = Tree::from_tree_bytes(&huge).unwrap();
    assert_eq!(saturated.total(), i64::MAX);
    assert_eq!(saturated.flame_graph(0).total, i64::MAX);
    // A partial result as deep as a hostile stack: a chain of 200,000 nodes decodes, encodes in
    // every format and drops without recursing.
    let chain = |n: usize| {
        let names: Vec<String> = (0..n).map(|i| format!("f{}", i % 3)).collect();
        let mut t = Tree::new();
        t.insert(&names, 1).unwrap();
        t.tree_bytes(0)
    };
    let deep = Tree::from_tree_bytes(&chain(200_000)).unwrap();
    assert_eq!(deep.flame_graph(8192).levels.len(), 200_001);
    assert!(!profusion_engine::dot::to_dot(&deep, "cpu", "nanoseconds", 100).is_empty());
    drop(deep);
    let seeds = [
        tree.tree_bytes(0),
        tree.tree_bytes(2),
        Vec::new(),
        huge.to_vec(),
        chain(2_000),
    ];
    let mut rng = Rng(0x7ee_b17e5);
    for i in 0..20_000 {
        let input = mutate(&seeds[i % seeds.len()], &mut rng);
        if let Ok(t) = Tree::from_tree_bytes(&input) {
            // Whatever decodes re-encodes and decodes to the same tree.
            assert_eq!(Tree::from_tree_bytes(&t.tree_bytes(0)).unwrap(), t);
        }
    }
}
