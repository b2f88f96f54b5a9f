//! Graphviz DOT of a call tree, in the spirit of `go tool pprof -dot`: one node per function
//! with its flat (self) and cumulative value, one edge per caller → callee pair, keeping the
//! `max_nodes` functions with the largest cumulative values. Recursion counts a function once
//! per stack, so cumulative values never exceed the total.

use std::collections::HashMap;
use std::fmt::Write;

use profusion_model::tree::{Tree, Visit};

/// Per-function and per-edge totals of a tree.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CallGraph {
    /// name → (flat, cumulative).
    pub functions: HashMap<String, (i64, i64)>,
    /// (caller, callee) → value of the stacks through that call.
    pub edges: HashMap<(String, String), i64>,
    pub total: i64,
}

impl CallGraph {
    /// One walk over the tree, linear in its nodes however deep it is: a function's cumulative
    /// value is the total of its outermost occurrences on each path (its nodes with no
    /// ancestor of the same name), and likewise for a caller → callee edge, which is what
    /// counting it once per stack adds up to.
    pub fn of(tree: &Tree) -> Self {
        let mut names: HashMap<u32, &str> = HashMap::new();
        // Per name id: (flat, cumulative, occurrences on the current path).
        let mut functions: HashMap<u32, (i64, i64, u32)> = HashMap::new();
        // Per (caller, callee) ids: (value, occurrences on the current path).
        let mut edges: HashMap<(u32, u32), (i64, u32)> = HashMap::new();
        let mut path: Vec<u32> = Vec::new();
        tree.walk(|visit| match visit {
            Visit::Enter {
                name,
                name_id,
                self_value,
                total,
            } => {
                names.entry(name_id).or_insert(name);
                let f = functions.entry(name_id).or_default();
                f.0 = f.0.saturating_add(self_value);
                if f.2 == 0 {
                    f.1 = f.1.saturating_add(total);
                }
                f.2 += 1;
                if let Some(&caller) = path.last() {
                    let e = edges.entry((caller, name_id)).or_default();
                    if e.1 == 0 {
                        e.0 = e.0.saturating_add(total);
                    }
                    e.1 += 1;
                }
                path.push(name_id);
            }
            Visit::Exit => {
                let Some(name_id) = path.pop() else { return };
                if let Some(f) = functions.get_mut(&name_id) {
                    f.2 -= 1;
                }
                if let Some(&caller) = path.last()
                    && let Some(e) = edges.get_mut(&(caller, name_id))
                {
                    e.1 -= 1;
                }
            }
        });
        Self {
            functions: functions
                .into_iter()
                .map(|(id, (flat, cum, _))| (names[&id].to_owned(), (flat, cum)))
                .collect(),
            edges: edges
                .into_iter()
                .map(|((a, b), (v, _))| ((names[&a].to_owned(), names[&b].to_owned()), v))
                .collect(),
            total: tree.total(),
        }
    }
}

fn percent(v: i64, total: i64) -> String {
    if total == 0 {
        return "0%".into();
    }
    format!("{:.2}%", v as f64 * 100.0 / total as f64)
}

fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The DOT text of `tree`; empty when the tree is.
pub fn to_dot(tree: &Tree, sample_type: &str, unit: &str, max_nodes: usize) -> String {
    let g = CallGraph::of(tree);
    if g.total == 0 {
        return String::new();
    }
    let mut nodes: Vec<(&String, &(i64, i64))> = g.functions.iter().collect();
    nodes.sort_by(|a, b| b.1.1.cmp(&a.1.1).then_with(|| a.0.cmp(b.0)));
    nodes.truncate(max_nodes.max(1));
    let id: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, (name, _))| (name.as_str(), i + 1))
        .collect();
    let shown = nodes
        .iter()
        .fold(0i64, |sum, (_, (flat, _))| sum.saturating_add(*flat));
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"unnamed\" {{");
    let _ = writeln!(out, "node [style=filled fillcolor=\"#f8f8f8\"]");
    let _ = writeln!(
        out,
        "subgraph cluster_L {{ \"Type: {t}\" [shape=box fontsize=16 label=\"Type: {t}\\lShowing nodes accounting for {shown} {u}, {p} of {total} {u} total\\l\"] }}",
        t = quote(sample_type),
        u = quote(unit),
        p = percent(shown, g.total),
        total = g.total,
    );
    for (name, (flat, cum)) in &nodes {
        let mut label = format!("{}\\n{flat} ({})", quote(name), percent(*flat, g.total));
        if cum != flat {
            let _ = write!(label, "\\nof {cum} ({})", percent(*cum, g.total));
        }
        // Font size grows with the flat share, as pprof draws hot functions larger.
        let size = 8 + (32.0 * *flat as f64 / g.total as f64).round() as i64;
        let _ = writeln!(
            out,
            "N{} [label=\"{label}\" id=\"node{}\" fontsize={size} shape=box tooltip=\"{} ({cum})\"]",
            id[name.as_str()],
            id[name.as_str()],
            quote(name),
        );
    }
    let mut edges: Vec<(&(String, String), &i64)> = g
        .edges
        .iter()
        .filter(|((a, b), _)| id.contains_key(a.as_str()) && id.contains_key(b.as_str()))
        .collect();
    edges.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    for ((from, to), value) in edges {
        let _ = writeln!(
            out,
            "N{} -> N{} [label=\" {value}\" weight={}]",
            id[from.as_str()],
            id[to.as_str()],
            (i128::from(*value) * 100 / i128::from(g.total)).max(1),
        );
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// The call graph computed per stack from the raw stacks, the way its definition reads: a
    /// function (or caller → callee pair) counts once per stack it appears in.
    fn reference(stacks: &[(Vec<&str>, i64)]) -> CallGraph {
        let mut g = CallGraph::default();
        for (stack, value) in stacks {
            g.total += value;
            let functions: HashSet<&str> = stack.iter().copied().collect();
            for f in functions {
                g.functions.entry(f.to_owned()).or_default().1 += value;
            }
            let edges: HashSet<(&str, &str)> = stack.windows(2).map(|w| (w[0], w[1])).collect();
            for (a, b) in edges {
                *g.edges.entry((a.to_owned(), b.to_owned())).or_default() += value;
            }
            if let Some(leaf) = stack.last() {
                g.functions.entry((*leaf).to_owned()).or_default().0 += value;
            }
        }
        g
    }

    /// Recursion is where one walk and the per-stack definition could part: stacks drawn from
    /// three names, so most repeat a function and a call several times.
    #[test]
    fn one_walk_counts_recursion_once_per_stack() {
        let names = ["a", "b", "c"];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for round in 0..200 {
            let stacks: Vec<(Vec<&str>, i64)> = (0..1 + next(20))
                .map(|_| {
                    let stack = (0..1 + next(8)).map(|_| names[next(3) as usize]).collect();
                    (stack, 1 + next(9) as i64)
                })
                .collect();
            let mut tree = Tree::new();
            for (stack, value) in &stacks {
                tree.insert(stack, *value).unwrap();
            }
            let got = CallGraph::of(&tree);
            let want = reference(&stacks);
            assert_eq!(got.total, want.total, "round {round}");
            assert_eq!(got.functions, want.functions, "round {round}: {stacks:?}");
            assert_eq!(got.edges, want.edges, "round {round}: {stacks:?}");
        }
    }
}
