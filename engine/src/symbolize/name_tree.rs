//! The tree builder of [`super::SymbolizeExec`]: a call tree over interned names, encoded
//! straight into tree bytes.

use std::collections::HashMap;

use datafusion::error::{DataFusionError, Result};
use profusion_model::hash::PrehashedMap;
use profusion_model::tree::{FOLDED, Tree};

use super::exec::FrameInfo;

/// A call tree over interned names: cheap to build from many stacks, and encoded straight
/// into Pyroscope tree bytes (children in name order, as [`Tree`] would emit them). A node is
/// 32 bytes plus its edge-map entry; children are a linked list, sorted only when encoded.
#[derive(Default)]
pub(super) struct NameTree<'a> {
    names: Vec<&'a str>,
    ids: HashMap<&'a str, u32>,
    /// Frame id → name id: frames are interned by name once, then looked up by id.
    frame_names: PrehashedMap<u64, u32>,
    /// `nodes[0]` is the virtual root.
    nodes: Vec<NameNode>,
    /// Mixed (parent, name) → child.
    edges: PrehashedMap<u64, u32>,
    /// The frame ids of the stack inserted last and the node each led to: the next stack
    /// walks the prefix it shares with it without a lookup (stacks inserted in frame order
    /// share most of their frames with the one before).
    last: Vec<(u64, u32)>,
}

/// splitmix64's finalizer: a bijection of 64-bit values that spreads every input bit over
/// every output bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// No node: the end of a child list.
const NONE: u32 = u32::MAX;

struct NameNode {
    name: u32,
    self_value: i64,
    total: i64,
    first_child: u32,
    next_sibling: u32,
}

impl NameNode {
    fn new(name: u32) -> Self {
        Self {
            name,
            self_value: 0,
            total: 0,
            first_child: NONE,
            next_sibling: NONE,
        }
    }
}

impl<'a> NameTree<'a> {
    /// Memory one node costs: the node and its edge-map entry with the map's slack.
    pub(super) const NODE_BYTES: usize = std::mem::size_of::<NameNode>() + 32;

    fn name_id(&mut self, frame: &'a FrameInfo) -> u32 {
        if let Some(&id) = self.frame_names.get(&frame.id) {
            return id;
        }
        let next = self.names.len() as u32;
        let id = *self.ids.entry(frame.name.as_str()).or_insert(next);
        if id == next {
            self.names.push(&frame.name);
        }
        self.frame_names.insert(frame.id, id);
        id
    }

    /// Adds `value` to a root-first stack; returns how many nodes were added. Sums saturate,
    /// as [`Tree`]'s do.
    pub(super) fn insert(&mut self, stack: &[&'a FrameInfo], value: i64) -> Result<usize> {
        if value < 0 {
            return Err(DataFusionError::Internal(format!(
                "negative value {value} in a flame graph"
            )));
        }
        if self.nodes.is_empty() {
            self.nodes.push(NameNode::new(NONE));
        }
        let added = self.nodes.len();
        let mut node = 0u32;
        self.nodes[0].total = self.nodes[0].total.saturating_add(value);
        let shared = self
            .last
            .iter()
            .zip(stack)
            .take_while(|((id, _), frame)| *id == frame.id)
            .count();
        self.last.truncate(shared);
        for &(_, known) in &self.last {
            node = known;
            let n = &mut self.nodes[node as usize];
            n.total = n.total.saturating_add(value);
        }
        for frame in &stack[shared..] {
            let name = self.name_id(frame);
            // The map uses the key as its hash, so the key must be uniform in every bit: a
            // bijective mix of (node, name), not a multiply, which leaves the low bits equal
            // along a chain of one recursive function and makes every probe collide.
            let key = mix((u64::from(node) << 32) | u64::from(name));
            let next_node = self.nodes.len() as u32;
            let child = *self.edges.entry(key).or_insert(next_node);
            if child == next_node {
                let parent = &mut self.nodes[node as usize];
                let mut new = NameNode::new(name);
                new.next_sibling = parent.first_child;
                parent.first_child = child;
                self.nodes.push(new);
            }
            node = child;
            self.last.push((frame.id, node));
            let n = &mut self.nodes[node as usize];
            n.total = n.total.saturating_add(value);
        }
        let n = &mut self.nodes[node as usize];
        n.self_value = n.self_value.saturating_add(value);
        Ok(self.nodes.len() - added)
    }

    /// Tree bytes of the whole tree, or with `max_nodes` (not 0) the children below the
    /// `max_nodes`-th largest node total folded into one [`FOLDED`] child per parent.
    pub(super) fn tree_bytes(self, max_nodes: usize) -> Vec<u8> {
        let mut out = Vec::new();
        if self.nodes.is_empty() {
            return Tree::new().tree_bytes(0);
        }
        let min = if max_nodes == 0 || self.nodes.len() - 1 <= max_nodes {
            0
        } else {
            let mut totals: Vec<i64> = self.nodes[1..].iter().map(|n| n.total).collect();
            let k = max_nodes - 1;
            totals.select_nth_unstable_by(k, |a, b| b.cmp(a));
            totals[k]
        };
        let mut write = |name: &str, self_value: i64, children: usize| {
            profusion_model::tree::uvarint(&mut out, name.len() as u64);
            out.extend_from_slice(name.as_bytes());
            profusion_model::tree::uvarint(&mut out, self_value as u64);
            profusion_model::tree::uvarint(&mut out, children as u64);
        };
        // A node to write, or the folded remainder of a parent's small children.
        enum Item {
            Node(u32),
            Folded(i64),
        }
        let mut stack = vec![Item::Node(0)];
        let mut children: Vec<u32> = Vec::new();
        while let Some(item) = stack.pop() {
            let i = match item {
                Item::Folded(total) => {
                    write(FOLDED, total, 0);
                    continue;
                }
                Item::Node(i) => i,
            };
            children.clear();
            let mut folded = 0i64;
            let mut c = self.nodes[i as usize].first_child;
            while c != NONE {
                let child = &self.nodes[c as usize];
                if child.total >= min {
                    children.push(c);
                } else {
                    folded = folded.saturating_add(child.total);
                }
                c = child.next_sibling;
            }
            children.sort_unstable_by(|a, b| {
                let name = |n: &u32| self.names[self.nodes[*n as usize].name as usize];
                name(a).cmp(name(b))
            });
            let node = &self.nodes[i as usize];
            let name = if i == 0 {
                ""
            } else {
                self.names[node.name as usize]
            };
            write(
                name,
                node.self_value,
                children.len() + usize::from(folded > 0),
            );
            if folded > 0 {
                stack.push(Item::Folded(folded));
            }
            stack.extend(children.iter().map(|&c| Item::Node(c)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One recursive function 200,000 frames deep: every node has the same name, the case
    /// where a weak mix of (parent, name) made each insert probe every earlier node.
    #[test]
    fn deep_recursion_builds_in_linear_time() {
        let frames: Vec<FrameInfo> = (0..200_000)
            .map(|i| FrameInfo {
                id: i + 1,
                name: "recursive".into(),
                ..FrameInfo::default()
            })
            .collect();
        let stack: Vec<&FrameInfo> = frames.iter().collect();
        let mut tree = NameTree::default();
        assert_eq!(tree.insert(&stack, 5).unwrap(), 200_000);
        assert_eq!(tree.insert(&stack, 5).unwrap(), 0);
        let decoded = Tree::from_tree_bytes(&tree.tree_bytes(8192)).unwrap();
        assert_eq!(
            (
                decoded.total(),
                decoded.len(),
                decoded.flame_graph(8192).levels.len()
            ),
            (10, 200_000, 200_001)
        );
    }

    /// Truncating in the symbolize node must not change any encoding at `max_nodes`: the
    /// flame graph and the tree bytes of the truncated tree equal those of the whole tree.
    #[test]
    fn truncated_trees_encode_exactly_like_whole_ones() {
        let names = ["main", "a", "b", "c", "d", "e", "other", "gc"];
        let frames: Vec<FrameInfo> = names
            .iter()
            .enumerate()
            .map(|(i, n)| FrameInfo {
                id: 1000 + i as u64,
                name: (*n).to_owned(),
                ..FrameInfo::default()
            })
            .collect();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for round in 0..200 {
            let mut named = NameTree::default();
            let mut whole = Tree::new();
            for _ in 0..1 + next(30) {
                let stack: Vec<&FrameInfo> = (0..1 + next(6))
                    .map(|_| &frames[next(frames.len() as u64) as usize])
                    .collect();
                // Small values make ties at the threshold common.
                let value = 1 + next(5) as i64;
                named.insert(&stack, value).unwrap();
                let path: Vec<&str> = stack.iter().map(|f| f.name.as_str()).collect();
                whole.insert(&path, value).unwrap();
            }
            let max_nodes = 1 + next(12) as usize;
            let truncated = Tree::from_tree_bytes(&named.tree_bytes(max_nodes)).unwrap();
            assert_eq!(
                truncated.flame_graph(max_nodes),
                whole.flame_graph(max_nodes),
                "round {round}, max_nodes {max_nodes}"
            );
            assert_eq!(
                truncated.tree_bytes(max_nodes),
                whole.tree_bytes(max_nodes),
                "round {round}, max_nodes {max_nodes}"
            );
            assert_eq!(truncated.total(), whole.total());
        }
    }
}
