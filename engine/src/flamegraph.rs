//! Function-name call trees and their wire encodings, exactly as Pyroscope lays them out:
//! the `FlameGraph` levels of `[x delta, total, self, name index]` quadruples (names interned in
//! traversal order, children sorted by name, a parent's self width first), the 7-tuple
//! `FlameGraphDiff`, and the pre-order "tree bytes". `max_nodes` keeps the largest nodes and
//! folds the rest of each parent's children into one `other` child.

use profusion_proto::querier::v1::{FlameGraph, FlameGraphDiff, Level};

/// The name of the synthetic node that stands for truncated children.
pub const OTHER: &str = "other";

/// The node a truncating producer (the symbolize node) leaves where it folded children away.
/// Encoders fold it into `other` together with the children they drop themselves, and leave it
/// out when choosing what to drop, so a tree truncated at `max_nodes` encodes exactly as the
/// full tree would. NUL never occurs in a symbol name, so no real frame can be taken for it.
pub const FOLDED: &str = "\u{0}folded";

#[derive(Debug, Clone, Default, PartialEq)]
struct Node {
    name: String,
    /// Per side: `[0]` is the tree itself, or the left side of a diff; `[1]` the right side.
    self_value: [i64; 2],
    total: [i64; 2],
    /// Sorted by name.
    children: Vec<Node>,
}

impl Node {
    fn child(&mut self, name: &str) -> &mut Node {
        let i = match self
            .children
            .binary_search_by(|c| c.name.as_str().cmp(name))
        {
            Ok(i) => i,
            Err(i) => {
                self.children.insert(
                    i,
                    Node {
                        name: name.to_owned(),
                        ..Node::default()
                    },
                );
                i
            }
        };
        &mut self.children[i]
    }

    fn both(&self) -> i64 {
        self.total[0] + self.total[1]
    }

    fn merge(&mut self, other: &Node, side: usize) {
        // Saturating: sums of untrusted sample values must not wrap or panic.
        self.self_value[side] = self.self_value[side].saturating_add(other.self_value[0]);
        self.total[side] = self.total[side].saturating_add(other.total[0]);
        for c in &other.children {
            self.child(&c.name).merge(c, side);
        }
    }
}

/// A borrowed node while encoding, or the synthetic `other` node that stands for the children
/// `max_nodes` folded away.
#[derive(Clone, Copy)]
struct View<'a> {
    name: &'a str,
    self_value: [i64; 2],
    total: [i64; 2],
    children: &'a [Node],
}

impl<'a> View<'a> {
    fn of(node: &'a Node) -> Self {
        Self {
            name: &node.name,
            self_value: node.self_value,
            total: node.total,
            children: &node.children,
        }
    }

    fn other(total: [i64; 2]) -> Self {
        Self {
            name: OTHER,
            self_value: total,
            total,
            children: &[],
        }
    }
}

/// A call tree keyed by function name; the root is virtual.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tree {
    root: Node,
}

/// Why a tree could not be built or encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    #[error("negative value {0} in a flame graph")]
    Negative(i64),
    #[error("invalid tree bytes: {0}")]
    Malformed(String),
}

impl Tree {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `value` to the stack whose frames are given root first.
    pub fn insert<S: AsRef<str>>(&mut self, stack: &[S], value: i64) -> Result<(), TreeError> {
        if value < 0 {
            return Err(TreeError::Negative(value));
        }
        let overflow = || TreeError::Malformed("values overflow 64 bits".into());
        let mut node = &mut self.root;
        node.total[0] = node.total[0].checked_add(value).ok_or_else(overflow)?;
        for frame in stack {
            node = node.child(frame.as_ref());
            node.total[0] = node.total[0].checked_add(value).ok_or_else(overflow)?;
        }
        node.self_value[0] = node.self_value[0].checked_add(value).ok_or_else(overflow)?;
        Ok(())
    }

    /// Adds every node of `other` to this tree.
    pub fn merge(&mut self, other: &Tree) {
        self.root.merge(&other.root, 0);
    }

    /// Calls `f` with every root-first stack that has a self value, and that value.
    pub fn for_each_stack<'a>(&'a self, mut f: impl FnMut(&[&'a str], i64)) {
        let mut path: Vec<&'a str> = Vec::new();
        // (node, depth) still to visit; a node's path is `path[..depth]` plus its own name.
        let mut todo: Vec<(&'a Node, usize)> = self.root.children.iter().map(|c| (c, 0)).collect();
        while let Some((node, depth)) = todo.pop() {
            path.truncate(depth);
            path.push(&node.name);
            if node.self_value[0] > 0 {
                f(&path, node.self_value[0]);
            }
            todo.extend(node.children.iter().map(|c| (c, depth + 1)));
        }
    }

    /// The sum of all values.
    pub fn total(&self) -> i64 {
        self.root.total[0]
    }

    /// The `max_nodes`-th largest node total: nodes below it are folded into `other`. Zero
    /// (keep everything) when there are not more nodes than that, or `max_nodes` is 0.
    fn min_value(&self, max_nodes: usize) -> i64 {
        if max_nodes == 0 {
            return 0;
        }
        let mut totals = Vec::new();
        let mut stack: Vec<&Node> = self.root.children.iter().collect();
        while let Some(n) = stack.pop() {
            if n.name != FOLDED {
                totals.push(n.both());
                stack.extend(n.children.iter());
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
            total: self.root.children.iter().map(|c| c.total[0]).sum(),
            max_self,
        }
    }

    /// Walks the tree as Pyroscope's encoder does (a stack; children pushed right to left, so
    /// names are interned in that order and each level fills left to right) and emits the
    /// level rows: 4 values per node, or 7 for a diff.
    fn encode(&self, max_nodes: usize, diff: bool) -> (Vec<String>, Vec<Level>, i64) {
        let min = self.min_value(max_nodes);
        let mut names: Vec<String> = vec!["total".to_owned()];
        let mut index: std::collections::HashMap<String, i64> = [("total".to_owned(), 0)].into();
        let mut levels: Vec<Level> = Vec::new();
        // Where the previous entry of each level ended, per side.
        let mut ends: Vec<[i64; 2]> = Vec::new();
        let mut max_self = 0;
        let root = View {
            name: "total",
            self_value: [0, 0],
            total: [
                self.root.children.iter().map(|c| c.total[0]).sum(),
                self.root.children.iter().map(|c| c.total[1]).sum(),
            ],
            children: &self.root.children,
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
                row.push(x[side] - ends[level][side]);
                row.push(node.total[side]);
                row.push(node.self_value[side]);
                ends[level][side] = x[side] + node.total[side];
            }
            row.push(name);

            kept.clear();
            let mut cursor = [x[0] + node.self_value[0], x[1] + node.self_value[1]];
            let mut other = [0i64; 2];
            for child in node.children {
                if child.name != FOLDED && child.both() >= min {
                    let at = cursor;
                    cursor = [cursor[0] + child.total[0], cursor[1] + child.total[1]];
                    kept.push((View::of(child), at));
                } else {
                    other = [other[0] + child.total[0], other[1] + child.total[1]];
                }
            }
            if other[0] + other[1] > 0 {
                kept.push((View::other(other), cursor));
            }
            for (child, at) in kept.drain(..).rev() {
                let next = names.len() as i64;
                let i = match index.get(child.name) {
                    Some(&i) => i,
                    None => {
                        index.insert(child.name.to_owned(), next);
                        names.push(child.name.to_owned());
                        next
                    }
                };
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
        let root = View {
            name: "",
            ..View::of(&self.root)
        };
        let mut stack = vec![root];
        let mut children: Vec<View<'_>> = Vec::new();
        while let Some(node) = stack.pop() {
            children.clear();
            let mut other = 0;
            for c in node.children {
                if c.name != FOLDED && c.total[0] >= min {
                    children.push(View::of(c));
                } else {
                    other += c.total[0];
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
        let mut pos = 0;
        let read = |pos: &mut usize| -> Result<(String, i64, u64), TreeError> {
            let len = read_uvarint(bytes, pos)? as usize;
            let name = pos
                .checked_add(len)
                .and_then(|end| bytes.get(*pos..end))
                .ok_or_else(|| {
                    TreeError::Malformed(format!("name overruns the input at byte {pos}"))
                })?;
            let name = String::from_utf8(name.to_vec())
                .map_err(|_| TreeError::Malformed(format!("name at byte {pos} is not UTF-8")))?;
            *pos += len;
            let self_value = i64::try_from(read_uvarint(bytes, pos)?)
                .map_err(|_| TreeError::Malformed(format!("self value overflows at byte {pos}")))?;
            let children = read_uvarint(bytes, pos)?;
            Ok((name, self_value, children))
        };
        if bytes.is_empty() {
            return Ok(Tree::new());
        }
        // Nodes still reading children, with how many are left; children arrive last first.
        let (_, root_self, root_children) = read(&mut pos)?;
        let mut open: Vec<(Node, u64)> = vec![(
            Node {
                self_value: [root_self, 0],
                total: [root_self, 0],
                ..Node::default()
            },
            root_children,
        )];
        loop {
            let (_, left) = open.last_mut().expect("the root stays open until the end");
            if *left > 0 {
                *left -= 1;
                let (name, self_value, children) = read(&mut pos)?;
                open.push((
                    Node {
                        name,
                        self_value: [self_value, 0],
                        total: [self_value, 0],
                        children: Vec::new(),
                    },
                    children,
                ));
                continue;
            }
            let (mut node, _) = open.pop().expect("checked above");
            node.children.sort_by(|a, b| a.name.cmp(&b.name));
            // Partial trees may repeat a name among siblings (a real `other` next to the
            // synthetic one): fold repeats into the first.
            let mut children: Vec<Node> = Vec::with_capacity(node.children.len());
            for c in node.children.drain(..) {
                match children.last_mut() {
                    Some(prev) if prev.name == c.name => prev.merge(&c, 0),
                    _ => children.push(c),
                }
            }
            node.total[0] = children
                .iter()
                .try_fold(node.total[0], |sum, c| sum.checked_add(c.total[0]))
                .ok_or_else(|| TreeError::Malformed("values overflow 64 bits".into()))?;
            node.children = children;
            match open.last_mut() {
                Some((parent, _)) => parent.children.push(node),
                None => {
                    if pos != bytes.len() {
                        return Err(TreeError::Malformed(format!(
                            "{} trailing bytes after the tree",
                            bytes.len() - pos
                        )));
                    }
                    return Ok(Tree { root: node });
                }
            }
        }
    }
}

/// A diff flame graph of two trees: both are unioned so they share one shape, and every node
/// carries `[x, total, self]` of each side.
pub fn diff(left: &Tree, right: &Tree, max_nodes: usize) -> FlameGraphDiff {
    let mut union = Tree::new();
    union.root.merge(&left.root, 0);
    union.root.merge(&right.root, 1);
    let (names, levels, max_self) = union.encode(max_nodes, true);
    let (left_ticks, right_ticks) = (left.total(), right.total());
    FlameGraphDiff {
        names,
        levels,
        total: left_ticks + right_ticks,
        max_self,
        left_ticks,
        right_ticks,
    }
}

pub(crate) fn uvarint(out: &mut Vec<u8>, mut v: u64) {
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
