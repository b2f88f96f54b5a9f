//! Graphviz DOT of a call tree, in the spirit of `go tool pprof -dot`: one node per function
//! with its flat (self) and cumulative value, one edge per caller → callee pair, keeping the
//! `max_nodes` functions with the largest cumulative values. Recursion counts a function once
//! per stack, so cumulative values never exceed the total.

use std::collections::HashMap;
use std::fmt::Write;

use crate::flamegraph::Tree;

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
    pub fn of(tree: &Tree) -> Self {
        let mut g = Self {
            total: tree.total(),
            ..Self::default()
        };
        let mut seen_fn: Vec<&str> = Vec::new();
        let mut seen_edge: Vec<(&str, &str)> = Vec::new();
        tree.for_each_stack(|stack, value| {
            seen_fn.clear();
            seen_edge.clear();
            for (i, name) in stack.iter().enumerate() {
                if !seen_fn.contains(name) {
                    seen_fn.push(name);
                    g.functions.entry((*name).to_owned()).or_default().1 += value;
                }
                if i > 0 {
                    let edge = (stack[i - 1], *name);
                    if !seen_edge.contains(&edge) {
                        seen_edge.push(edge);
                        *g.edges
                            .entry((edge.0.to_owned(), edge.1.to_owned()))
                            .or_default() += value;
                    }
                }
            }
            if let Some(leaf) = stack.last() {
                g.functions.entry((*leaf).to_owned()).or_default().0 += value;
            }
        });
        g
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
    let shown: i64 = nodes.iter().map(|(_, (flat, _))| flat).sum();
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
            (100 * value / g.total).max(1),
        );
    }
    out.push_str("}\n");
    out
}
