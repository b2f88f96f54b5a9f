//! Function-name call trees and their wire encodings, exactly as Pyroscope lays them out:
//! the `FlameGraph` levels of `[x delta, total, self, name index]` quadruples (names interned in
//! traversal order, children sorted by name, a parent's self width first), the 7-tuple
//! `FlameGraphDiff`, and the pre-order "tree bytes". `max_nodes` keeps the largest nodes and
//! folds the rest of each parent's children into one `other` child.
//!
//! Trees are untrusted in shape: a stack may be a thousand frames deep and a partial result a
//! chain of any length. So a tree is an arena of nodes addressed by index, and every operation
//! (insert, merge, decode, encode, walk, compare, drop) is a loop over explicit stacks; nothing
//! recurses. Sums saturate at `i64::MAX`: a node whose true value passes 2^63 − 1 shows
//! 2^63 − 1, and the flame graph stays drawable instead of failing the query.

use std::collections::HashMap;
use std::sync::Arc;

use profusion_proto::querier::v1::{FlameGraph, FlameGraphDiff, Level};

/// The name of the synthetic node that stands for truncated children.
pub const OTHER: &str = "other";

/// The node a truncating producer (the symbolize node) leaves where it folded children away.
/// Encoders fold it into `other` together with the children they drop themselves, and leave it
/// out when choosing what to drop, so a tree truncated at `max_nodes` encodes exactly as the
/// full tree would. NUL never occurs in a symbol name, so no real frame can be taken for it.
pub const FOLDED: &str = "\u{0}folded";

/// Index of a node in [`Tree::nodes`]; 0 is the virtual root.
type NodeId = u32;
const ROOT: NodeId = 0;

#[derive(Debug, Clone, Default, PartialEq)]
struct Node {
    /// Index into [`Tree::names`].
    name: u32,
    /// Per side: `[0]` is the tree itself, or the left side of a diff; `[1]` the right side.
    self_value: [i64; 2],
    total: [i64; 2],
    /// Sorted by name.
    children: Vec<NodeId>,
}

impl Node {
    fn both(&self) -> i64 {
        self.total[0].saturating_add(self.total[1])
    }
}

/// Heap bytes a node costs: the node and its slot in its parent's children.
const NODE_BYTES: usize = std::mem::size_of::<Node>() + std::mem::size_of::<NodeId>();
/// Heap bytes an interned name costs besides its text: two `Arc<str>` and a map slot.
const NAME_OVERHEAD_BYTES: usize = 64;

/// A call tree keyed by function name; the root is virtual.
#[derive(Debug, Clone)]
pub struct Tree {
    /// Interned names; `names[0]` is the root's, empty.
    names: Vec<Arc<str>>,
    name_ids: HashMap<Arc<str>, u32>,
    name_bytes: usize,
    /// `nodes[0]` is the virtual root.
    nodes: Vec<Node>,
}

impl Default for Tree {
    fn default() -> Self {
        let empty: Arc<str> = Arc::from("");
        Self {
            names: vec![Arc::clone(&empty)],
            name_ids: HashMap::from([(empty, 0)]),
            name_bytes: 0,
            nodes: vec![Node::default()],
        }
    }
}

/// Why a tree could not be built or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    #[error("negative value {0} in a flame graph")]
    Negative(i64),
    #[error("invalid tree bytes: {0}")]
    Malformed(String),
    /// The tree outgrew the memory its query may use.
    #[error("{0}")]
    OverBudget(String),
}

/// A node as [`Tree::walk`] reports it: on entry, with its name and values (side 0), and on
/// exit, after all its descendants.
#[derive(Debug, Clone, Copy)]
pub enum Visit<'a> {
    Enter {
        name: &'a str,
        /// The name's index: equal names have equal ids within one tree.
        name_id: u32,
        self_value: i64,
        total: i64,
    },
    Exit,
}

/// Called with a tree's heap size as it grows, to charge it to a memory budget; an error stops
/// the growth.
pub trait Charge: FnMut(usize) -> Result<(), TreeError> {}
impl<F: FnMut(usize) -> Result<(), TreeError>> Charge for F {}

/// How many nodes a tree grows by between two charges.
const CHARGE_EVERY: usize = 4096;

/// A borrowed node while encoding, or the synthetic `other` node that stands for the children
/// `max_nodes` folded away.
#[derive(Clone, Copy)]
struct View<'a> {
    name: &'a str,
    self_value: [i64; 2],
    total: [i64; 2],
    children: &'a [NodeId],
}

impl<'a> View<'a> {
    fn other(total: [i64; 2]) -> Self {
        Self {
            name: OTHER,
            self_value: total,
            total,
            children: &[],
        }
    }
}

fn add(a: [i64; 2], b: [i64; 2]) -> [i64; 2] {
    [a[0].saturating_add(b[0]), a[1].saturating_add(b[1])]
}

impl Tree {
    pub fn new() -> Self {
        Self::default()
    }

    fn name(&self, node: NodeId) -> &str {
        &self.names[self.nodes[node as usize].name as usize]
    }

    fn view(&self, node: NodeId) -> View<'_> {
        let n = &self.nodes[node as usize];
        View {
            name: &self.names[n.name as usize],
            self_value: n.self_value,
            total: n.total,
            children: &n.children,
        }
    }

    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.name_ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        let name: Arc<str> = Arc::from(name);
        self.name_bytes += name.len() + NAME_OVERHEAD_BYTES;
        self.names.push(Arc::clone(&name));
        self.name_ids.insert(name, id);
        id
    }

    /// The child of `parent` named `name`, added if missing.
    fn child(&mut self, parent: NodeId, name: &str) -> NodeId {
        let found = {
            let names = &self.names;
            let nodes = &self.nodes;
            nodes[parent as usize]
                .children
                .binary_search_by(|&c| names[nodes[c as usize].name as usize].as_ref().cmp(name))
        };
        match found {
            Ok(i) => self.nodes[parent as usize].children[i],
            Err(i) => {
                let name = self.intern(name);
                let id = self.nodes.len() as NodeId;
                self.nodes.push(Node {
                    name,
                    ..Node::default()
                });
                self.nodes[parent as usize].children.insert(i, id);
                id
            }
        }
    }

    /// Approximate heap bytes the tree holds, for memory budgets.
    pub fn heap_bytes(&self) -> usize {
        self.nodes.len() * NODE_BYTES + self.name_bytes
    }

    /// Nodes, the virtual root excluded.
    pub fn len(&self) -> usize {
        self.nodes.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.nodes[ROOT as usize].children.is_empty()
    }

    /// Adds `value` to the stack whose frames are given root first.
    pub fn insert<S: AsRef<str>>(&mut self, stack: &[S], value: i64) -> Result<(), TreeError> {
        if value < 0 {
            return Err(TreeError::Negative(value));
        }
        let mut node = ROOT;
        let root = &mut self.nodes[ROOT as usize];
        root.total[0] = root.total[0].saturating_add(value);
        for frame in stack {
            node = self.child(node, frame.as_ref());
            let n = &mut self.nodes[node as usize];
            n.total[0] = n.total[0].saturating_add(value);
        }
        let n = &mut self.nodes[node as usize];
        n.self_value[0] = n.self_value[0].saturating_add(value);
        Ok(())
    }

    /// Adds every node of `other` to this tree.
    pub fn merge(&mut self, other: &Tree) {
        let _ = self.merge_side(other, 0, &mut |_| Ok(()));
    }

    /// [`Self::merge`], charging the growth to `charge`; on an error the tree is left partly
    /// merged (a query then fails as a whole).
    pub fn merge_charged(
        &mut self,
        other: &Tree,
        mut charge: impl Charge,
    ) -> Result<(), TreeError> {
        self.merge_side(other, 0, &mut charge)?;
        charge(self.heap_bytes())
    }

    /// Adds `other`'s side-0 values into `side` of this tree.
    fn merge_side(
        &mut self,
        other: &Tree,
        side: usize,
        charge: &mut dyn Charge,
    ) -> Result<(), TreeError> {
        let mut pairs: Vec<(NodeId, NodeId)> = vec![(ROOT, ROOT)];
        let mut grown = 0;
        while let Some((mine, theirs)) = pairs.pop() {
            let t = &other.nodes[theirs as usize];
            let m = &mut self.nodes[mine as usize];
            m.self_value[side] = m.self_value[side].saturating_add(t.self_value[0]);
            m.total[side] = m.total[side].saturating_add(t.total[0]);
            for &c in &t.children {
                let before = self.nodes.len();
                let child = self.child(mine, other.name(c));
                grown += self.nodes.len() - before;
                pairs.push((child, c));
            }
            if grown >= CHARGE_EVERY {
                grown = 0;
                charge(self.heap_bytes())?;
            }
        }
        Ok(())
    }

    /// Calls `f` with every root-first stack that has a self value, and that value.
    pub fn for_each_stack<'a>(&'a self, mut f: impl FnMut(&[&'a str], i64)) {
        let mut path: Vec<&'a str> = Vec::new();
        self.walk(|visit| match visit {
            Visit::Enter {
                name, self_value, ..
            } => {
                path.push(name);
                if self_value > 0 {
                    f(&path, self_value);
                }
            }
            Visit::Exit => {
                path.pop();
            }
        });
    }

    /// Depth-first, children in name order: `Enter` for each node (the virtual root excluded),
    /// `Exit` after its descendants.
    pub fn walk<'a>(&'a self, mut f: impl FnMut(Visit<'a>)) {
        // (node, whether its descendants are done)
        let mut todo: Vec<(NodeId, bool)> = self.nodes[ROOT as usize]
            .children
            .iter()
            .rev()
            .map(|&c| (c, false))
            .collect();
        while let Some((node, done)) = todo.pop() {
            if done {
                f(Visit::Exit);
                continue;
            }
            let n = &self.nodes[node as usize];
            f(Visit::Enter {
                name: &self.names[n.name as usize],
                name_id: n.name,
                self_value: n.self_value[0],
                total: n.total[0],
            });
            todo.push((node, true));
            todo.extend(n.children.iter().rev().map(|&c| (c, false)));
        }
    }

    /// The sum of all values.
    pub fn total(&self) -> i64 {
        self.nodes[ROOT as usize].total[0]
    }

    /// The total of the root's children on each side (a root self value is not drawn).
    fn children_total(&self) -> [i64; 2] {
        self.nodes[ROOT as usize]
            .children
            .iter()
            .fold([0, 0], |sum, &c| add(sum, self.nodes[c as usize].total))
    }

    /// The `max_nodes`-th largest node total: nodes below it are folded into `other`. Zero
    /// (keep everything) when there are not more nodes than that, or `max_nodes` is 0.
    fn min_value(&self, max_nodes: usize) -> i64 {
        if max_nodes == 0 {
            return 0;
        }
        let mut totals = Vec::new();
        let mut todo: Vec<NodeId> = self.nodes[ROOT as usize].children.clone();
        while let Some(n) = todo.pop() {
            if self.name(n) != FOLDED {
                let node = &self.nodes[n as usize];
                totals.push(node.both());
                todo.extend(&node.children);
            }
        }
        if totals.len() <= max_nodes {
            return 0;
        }
        let k = max_nodes - 1;
        totals.select_nth_unstable_by(k, |a, b| b.cmp(a));
        totals[k]
    }

    /// Pyroscope's flame graph of this tree.
    pub fn flame_graph(&self, max_nodes: usize) -> FlameGraph {
        let (names, levels, max_self) = self.encode(max_nodes, false);
        FlameGraph {
            names,
            levels,
            total: self.children_total()[0],
            max_self,
        }
    }

    /// Walks the tree as Pyroscope's encoder does (a stack; children pushed right to left, so
    /// names are interned in that order and each level fills left to right) and emits the
    /// level rows: 4 values per node, or 7 for a diff.
    fn encode(&self, max_nodes: usize, diff: bool) -> (Vec<String>, Vec<Level>, i64) {
        let min = self.min_value(max_nodes);
        let mut names: Vec<String> = vec!["total".to_owned()];
        let mut index: HashMap<&str, i64> = [("total", 0)].into();
        let mut levels: Vec<Level> = Vec::new();
        // Where the previous entry of each level ended, per side.
        let mut ends: Vec<[i64; 2]> = Vec::new();
        let mut max_self = 0;
        let root = View {
            name: "total",
            self_value: [0, 0],
            total: self.children_total(),
            children: &self.nodes[ROOT as usize].children,
        };
        let mut stack: Vec<(View<'_>, usize, [i64; 2], i64)> = vec![(root, 0, [0, 0], 0)];
        let mut kept: Vec<(View<'_>, [i64; 2])> = Vec::new();
        while let Some((node, level, x, name)) = stack.pop() {
            if levels.len() == level {
                levels.push(Level::default());
                ends.push([0, 0]);
            }
            max_self = max_self.max(node.self_value[0]).max(node.self_value[1]);
            let row = &mut levels[level].values;
            let sides = if diff { 2 } else { 1 };
            for side in 0..sides {
                row.push(x[side].saturating_sub(ends[level][side]));
                row.push(node.total[side]);
                row.push(node.self_value[side]);
                ends[level][side] = x[side].saturating_add(node.total[side]);
            }
            row.push(name);

            kept.clear();
            let mut cursor = add(x, node.self_value);
            let mut other = [0i64; 2];
            for &c in node.children {
                let child = self.view(c);
                if child.name != FOLDED && self.nodes[c as usize].both() >= min {
                    let at = cursor;
                    cursor = add(cursor, child.total);
                    kept.push((child, at));
                } else {
                    other = add(other, child.total);
                }
            }
            if other[0].saturating_add(other[1]) > 0 {
                kept.push((View::other(other), cursor));
            }
            for (child, at) in kept.drain(..).rev() {
                let next = names.len() as i64;
                let i = *index.entry(child.name).or_insert_with(|| {
                    names.push(child.name.to_owned());
                    next
                });
                stack.push((child, level + 1, at, i));
            }
        }
        (names, levels, max_self)
    }

    /// Pyroscope's tree bytes: pre-order from a virtual root (empty name), each node as
    /// `uvarint name length, name, uvarint self, uvarint child count`, the last child first.
    pub fn tree_bytes(&self, max_nodes: usize) -> Vec<u8> {
        let min = self.min_value(max_nodes);
        let mut out = Vec::new();
        let mut stack = vec![self.view(ROOT)];
        let mut children: Vec<View<'_>> = Vec::new();
        while let Some(node) = stack.pop() {
            children.clear();
            let mut other = 0i64;
            for &c in node.children {
                let child = self.view(c);
                if child.name != FOLDED && child.total[0] >= min {
                    children.push(child);
                } else {
                    other = other.saturating_add(child.total[0]);
                }
            }
            if other > 0 {
                children.push(View::other([other, 0]));
            }
            uvarint(&mut out, node.name.len() as u64);
            out.extend_from_slice(node.name.as_bytes());
            uvarint(&mut out, node.self_value[0] as u64);
            uvarint(&mut out, children.len() as u64);
            stack.append(&mut children);
        }
        out
    }

    /// Reads tree bytes (partial results from another querier) back into a tree.
    pub fn from_tree_bytes(bytes: &[u8]) -> Result<Self, TreeError> {
        Self::from_tree_bytes_charged(bytes, |_| Ok(()))
    }

    /// [`Self::from_tree_bytes`], charging the tree's size to `charge` as it grows.
    pub fn from_tree_bytes_charged(
        bytes: &[u8],
        mut charge: impl Charge,
    ) -> Result<Self, TreeError> {
        let mut tree = Tree::new();
        if bytes.is_empty() {
            return Ok(tree);
        }
        let mut pos = 0;
        let (_, root_self, root_children) = read_node(bytes, &mut pos)?;
        tree.nodes[ROOT as usize].self_value[0] = root_self;
        // Nodes still reading children, with how many are left; children arrive last first.
        let mut open: Vec<(NodeId, u64)> = vec![(ROOT, root_children)];
        let mut since_charge = 0;
        loop {
            let (node, left) = *open.last().expect("the root stays open until the end");
            if left > 0 {
                open.last_mut().expect("checked above").1 -= 1;
                let (name, self_value, children) = read_node(bytes, &mut pos)?;
                let name = tree.intern(name);
                let id = tree.nodes.len() as NodeId;
                tree.nodes.push(Node {
                    name,
                    self_value: [self_value, 0],
                    ..Node::default()
                });
                tree.nodes[node as usize].children.push(id);
                open.push((id, children));
                since_charge += 1;
                if since_charge == CHARGE_EVERY {
                    since_charge = 0;
                    charge(tree.heap_bytes())?;
                }
                continue;
            }
            open.pop();
            tree.finish_decoded(node);
            if open.is_empty() {
                if pos != bytes.len() {
                    return Err(TreeError::Malformed(format!(
                        "{} trailing bytes after the tree",
                        bytes.len() - pos
                    )));
                }
                charge(tree.heap_bytes())?;
                return Ok(tree);
            }
        }
    }

    /// Completes a node whose children were all decoded: children sorted by name, repeated
    /// names folded into the first (partial trees may hold a real `other` next to the
    /// synthetic one), its total its self plus its children's.
    fn finish_decoded(&mut self, node: NodeId) {
        let mut children = std::mem::take(&mut self.nodes[node as usize].children);
        children.sort_by(|&a, &b| self.name(a).cmp(self.name(b)));
        let mut kept: Vec<NodeId> = Vec::with_capacity(children.len());
        for c in children {
            match kept.last() {
                Some(&prev) if self.name(prev) == self.name(c) => self.fold_into(prev, c),
                _ => kept.push(c),
            }
        }
        let total = kept
            .iter()
            .fold(self.nodes[node as usize].self_value, |sum, &c| {
                add(sum, self.nodes[c as usize].total)
            });
        let n = &mut self.nodes[node as usize];
        n.total = total;
        n.children = kept;
    }

    /// Adds node `from`'s subtree into node `into`'s (both complete, in this tree); `from` is
    /// left unreachable.
    fn fold_into(&mut self, into: NodeId, from: NodeId) {
        let mut pairs = vec![(into, from)];
        while let Some((a, b)) = pairs.pop() {
            let (b_self, b_total) = {
                let n = &self.nodes[b as usize];
                (n.self_value, n.total)
            };
            let n = &mut self.nodes[a as usize];
            n.self_value = add(n.self_value, b_self);
            n.total = add(n.total, b_total);
            for c in std::mem::take(&mut self.nodes[b as usize].children) {
                let found = {
                    let names = &self.names;
                    let nodes = &self.nodes;
                    let name = &names[nodes[c as usize].name as usize];
                    nodes[a as usize]
                        .children
                        .binary_search_by(|&x| names[nodes[x as usize].name as usize].cmp(name))
                };
                match found {
                    Ok(i) => pairs.push((self.nodes[a as usize].children[i], c)),
                    Err(i) => self.nodes[a as usize].children.insert(i, c),
                }
            }
        }
    }
}

/// Equal trees have the same nodes with the same names and values, children in name order.
impl PartialEq for Tree {
    fn eq(&self, other: &Self) -> bool {
        let mut pairs = vec![(ROOT, ROOT)];
        while let Some((a, b)) = pairs.pop() {
            let (na, nb) = (&self.nodes[a as usize], &other.nodes[b as usize]);
            if self.names[na.name as usize] != other.names[nb.name as usize]
                || na.self_value != nb.self_value
                || na.total != nb.total
                || na.children.len() != nb.children.len()
            {
                return false;
            }
            pairs.extend(na.children.iter().copied().zip(nb.children.iter().copied()));
        }
        true
    }
}

fn read_node<'a>(bytes: &'a [u8], pos: &mut usize) -> Result<(&'a str, i64, u64), TreeError> {
    let len = read_uvarint(bytes, pos)?;
    let name = usize::try_from(len)
        .ok()
        .and_then(|len| pos.checked_add(len))
        .and_then(|end| bytes.get(*pos..end))
        .ok_or_else(|| TreeError::Malformed(format!("name overruns the input at byte {pos}")))?;
    let name = std::str::from_utf8(name)
        .map_err(|_| TreeError::Malformed(format!("name at byte {pos} is not UTF-8")))?;
    *pos += name.len();
    let self_value = i64::try_from(read_uvarint(bytes, pos)?)
        .map_err(|_| TreeError::Malformed(format!("self value overflows at byte {pos}")))?;
    let children = read_uvarint(bytes, pos)?;
    // Every child takes at least three bytes, so a larger count is a lie.
    if children > (bytes.len() - *pos) as u64 {
        return Err(TreeError::Malformed(format!(
            "child count {children} exceeds the input at byte {pos}"
        )));
    }
    Ok((name, self_value, children))
}

/// A diff flame graph of two trees: both are unioned so they share one shape, and every node
/// carries `[x, total, self]` of each side.
pub fn diff(left: &Tree, right: &Tree, max_nodes: usize) -> FlameGraphDiff {
    let mut union = Tree::new();
    let _ = union.merge_side(left, 0, &mut |_| Ok(()));
    let _ = union.merge_side(right, 1, &mut |_| Ok(()));
    let (names, levels, max_self) = union.encode(max_nodes, true);
    let (left_ticks, right_ticks) = (left.total(), right.total());
    FlameGraphDiff {
        names,
        levels,
        total: left_ticks.saturating_add(right_ticks),
        max_self,
        left_ticks,
        right_ticks,
    }
}

/// Appends `v` as a protobuf varint (the tree bytes' integer encoding).
pub fn uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_uvarint(bytes: &[u8], pos: &mut usize) -> Result<u64, TreeError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes
            .get(*pos)
            .ok_or_else(|| TreeError::Malformed(format!("truncated varint at byte {pos}")))?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(TreeError::Malformed(format!(
        "varint too long at byte {pos}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chain as deep as a stack a client could send before the depth limit existed: every
    /// operation walks it without recursing (a recursive drop alone would overflow the stack).
    #[test]
    fn a_chain_of_a_million_nodes_is_handled_without_recursion() {
        let names: Vec<String> = (0..1_000_000).map(|i| format!("f{}", i % 7)).collect();
        let mut tree = Tree::new();
        tree.insert(&names, 3).unwrap();
        tree.insert(&names[..10], 1).unwrap();
        assert_eq!(tree.total(), 4);
        let bytes = tree.tree_bytes(0);
        let decoded = Tree::from_tree_bytes(&bytes).unwrap();
        assert!(decoded == tree);
        let mut merged = decoded.clone();
        merged.merge(&tree);
        assert_eq!(merged.total(), 8);
        let fg = merged.flame_graph(100);
        assert_eq!(fg.total, 8);
        let mut stacks = 0;
        merged.for_each_stack(|s, v| {
            stacks += 1;
            assert!(s.len() == 10 && v == 2 || s.len() == 1_000_000 && v == 6);
        });
        assert_eq!(stacks, 2);
        drop((tree, decoded, merged));
    }

    #[test]
    fn sums_saturate_at_the_largest_value() {
        let mut tree = Tree::new();
        for _ in 0..3 {
            tree.insert(&["main"], 922_337_203_685_477_580).unwrap();
        }
        tree.insert(&["main", "work"], i64::MAX).unwrap();
        tree.insert(&["gc"], i64::MAX).unwrap();
        assert_eq!(tree.total(), i64::MAX);
        let fg = tree.flame_graph(0);
        assert_eq!(fg.total, i64::MAX);
        // Still a drawable graph: every x offset and width is non-negative.
        for level in &fg.levels {
            assert!(level.values.iter().all(|v| *v >= 0), "{level:?}");
        }
        let twice = Tree::from_tree_bytes(&tree.tree_bytes(0)).unwrap();
        assert_eq!(twice.total(), i64::MAX);
        let d = diff(&tree, &twice, 0);
        assert_eq!(d.total, i64::MAX);
    }

    #[test]
    fn decoding_stops_at_the_budget() {
        let names: Vec<String> = (0..50_000).map(|i| format!("f{i}")).collect();
        let mut tree = Tree::new();
        tree.insert(&names, 1).unwrap();
        let bytes = tree.tree_bytes(0);
        let err = Tree::from_tree_bytes_charged(&bytes, |size| {
            if size > 1_000_000 {
                Err(TreeError::OverBudget(format!("{size} bytes")))
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        assert!(matches!(err, TreeError::OverBudget(_)), "{err}");
    }
}
