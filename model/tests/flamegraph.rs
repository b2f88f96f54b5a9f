//! Flame-graph encodings against Pyroscope's golden fixtures, and against an independent
//! decoder of the level format written here from the format's description.

use std::collections::BTreeMap;

use profusion_model::tree::{Tree, diff};
use profusion_proto::querier::v1::{DiffResponse, FlameGraph, SelectMergeStacktracesResponse};
use profusion_testing::decode_levels as decode;
use prost::Message;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(profusion_testing::fixtures_dir().join("wire").join(name)).unwrap()
}

fn tree(stacks: &[(&str, i64)]) -> Tree {
    let mut t = Tree::new();
    for (stack, value) in stacks {
        let frames: Vec<&str> = stack.split(';').collect();
        t.insert(&frames, *value).unwrap();
    }
    t
}

fn levels(fg: &FlameGraph) -> Vec<Vec<i64>> {
    fg.levels.iter().map(|l| l.values.clone()).collect()
}

#[test]
fn matches_the_pyroscope_fixture_exactly() {
    let expected = SelectMergeStacktracesResponse::decode(
        fixture("select_merge_stacktraces_response.bin").as_slice(),
    )
    .unwrap();
    let fg = tree(&[("a;b", 3), ("a;c", 1)]).flame_graph(0);
    assert_eq!(Some(&fg), expected.flamegraph.as_ref());
}

#[test]
fn diff_matches_the_pyroscope_fixture_exactly() {
    let expected = DiffResponse::decode(fixture("diff_response.bin").as_slice()).unwrap();
    let d = diff(&tree(&[("a;b", 3)]), &tree(&[("a;b", 5)]), 0);
    assert_eq!(Some(&d), expected.flamegraph.as_ref());
}

#[test]
fn levels_decode_to_the_tree_that_was_built() {
    let t = tree(&[
        ("main;work;parse", 7),
        ("main;work", 2),
        ("main;idle", 5),
        ("gc", 4),
        ("main;work;parse;lex", 1),
    ]);
    let fg = t.flame_graph(0);
    assert_eq!((fg.total, fg.max_self), (19, 7));
    let got = decode(&fg.names, &levels(&fg), 4, 0);
    let want: BTreeMap<String, (i64, i64)> = [
        ("total", (19, 0)),
        ("total;gc", (4, 4)),
        ("total;main", (15, 0)),
        ("total;main;idle", (5, 5)),
        ("total;main;work", (10, 2)),
        ("total;main;work;parse", (8, 7)),
        ("total;main;work;parse;lex", (1, 1)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(got, want);
}

#[test]
fn max_nodes_folds_small_children_into_other() {
    // main has children a=50, b=30, c=5, d=3, e=2; with 3 nodes kept (main, a, b), c+d+e=10
    // become "other".
    let t = tree(&[
        ("main;a", 50),
        ("main;b", 30),
        ("main;c", 5),
        ("main;d", 3),
        ("main;e", 2),
    ]);
    let fg = t.flame_graph(3);
    let got = decode(&fg.names, &levels(&fg), 4, 0);
    assert_eq!(got.get("total;main;other"), Some(&(10, 10)));
    assert_eq!(got.get("total;main;a"), Some(&(50, 50)));
    assert!(!got.contains_key("total;main;c"));
    assert_eq!(fg.total, 90, "truncation never changes the total");

    let bytes = Tree::from_tree_bytes(&t.tree_bytes(3)).unwrap();
    assert_eq!(
        bytes,
        tree(&[("main;a", 50), ("main;b", 30), ("main;other", 10)])
    );
}

#[test]
fn tree_bytes_round_trip_and_pyroscope_layout() {
    let t = tree(&[("a;b", 3), ("a;c", 1)]);
    // Root "" self 0 with 1 child; a self 0 with 2 children; the last child (c) first.
    assert_eq!(
        t.tree_bytes(0),
        [0, 0, 1, 1, b'a', 0, 2, 1, b'c', 1, 0, 1, b'b', 3, 0]
    );
    assert_eq!(Tree::from_tree_bytes(&t.tree_bytes(0)).unwrap(), t);
    assert!(
        Tree::from_tree_bytes(&[0, 0, 5]).is_err(),
        "declared children that never come are malformed"
    );
    assert!(Tree::from_tree_bytes(&[0, 0, 1, 9, b'x']).is_err());
}

#[test]
fn diffs_keep_both_sides_on_one_shape() {
    let left = tree(&[("a;b", 3), ("a;c", 1)]);
    let right = tree(&[("a;b", 1), ("a;d", 6)]);
    let d = diff(&left, &right, 0);
    assert_eq!(
        (d.total, d.left_ticks, d.right_ticks, d.max_self),
        (11, 4, 7, 6)
    );
    let lv: Vec<Vec<i64>> = d.levels.iter().map(|l| l.values.clone()).collect();
    let l = decode(&d.names, &lv, 7, 0);
    let r = decode(&d.names, &lv, 7, 1);
    // One shape: level 2 holds b, c and d on both sides, zero-width where a side lacks one.
    assert_eq!(lv[2].len(), 3 * 7);
    assert_eq!(l.get("total;a;b"), Some(&(3, 3)));
    assert_eq!(l.get("total;a;d"), None);
    assert_eq!(r.get("total;a;c"), None);
    assert_eq!(r.get("total;a;d"), Some(&(6, 6)));
    assert!(tree(&[]).insert(&["x"], -1).is_err());
}

#[test]
fn random_trees_survive_encoding() {
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..50 {
        let mut t = Tree::new();
        let mut expected: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for _ in 0..40 {
            let depth = 1 + next() % 6;
            let frames: Vec<String> = (0..depth).map(|_| format!("f{}", next() % 5)).collect();
            let value = (next() % 100) as i64;
            t.insert(&frames, value).unwrap();
            let mut path = "total".to_owned();
            expected.entry(path.clone()).or_default().0 += value;
            for (i, f) in frames.iter().enumerate() {
                path = format!("{path};{f}");
                let e = expected.entry(path.clone()).or_default();
                e.0 += value;
                if i + 1 == frames.len() {
                    e.1 += value;
                }
            }
        }
        expected.retain(|_, (total, _)| *total > 0);
        let fg = t.flame_graph(0);
        let mut got = decode(&fg.names, &levels(&fg), 4, 0);
        got.retain(|_, (total, _)| *total > 0);
        assert_eq!(got, expected);
        assert_eq!(
            Tree::from_tree_bytes(&t.tree_bytes(0))
                .unwrap()
                .flame_graph(0),
            fg
        );
    }
}
