//! Independent decoders of query answers (flame-graph levels, pprof profiles) and the simple
//! reference a test computes its expected tree with: never the engine's own code.

/// Decodes flame-graph levels (`width` values per node) into `path -> (total, self)` for side
/// `side`, checking that each node lies inside its parent's span after the parent's self.
pub fn decode_levels(
    names: &[String],
    levels: &[Vec<i64>],
    width: usize,
    side: usize,
) -> std::collections::BTreeMap<String, (i64, i64)> {
    // Absolute (x, total, self, path) of each node per level.
    let mut rows: Vec<Vec<(i64, i64, i64, String)>> = Vec::new();
    for (depth, level) in levels.iter().enumerate() {
        let mut row = Vec::new();
        let mut end = 0;
        for node in level.chunks(width) {
            let (dx, total, self_value) = (node[3 * side], node[3 * side + 1], node[3 * side + 2]);
            let x = end + dx;
            end = x + total;
            // A node absent on this side of a diff has no width there, and neither do its
            // children; it would only blur which parent a child belongs to.
            if total == 0 && width == 7 {
                continue;
            }
            let name = &names[node[width - 1] as usize];
            let path = if depth == 0 {
                name.clone()
            } else {
                let parent = rows[depth - 1]
                    .iter()
                    .find(|(px, pt, ps, _): &&(i64, i64, i64, String)| {
                        x >= px + ps && x + total <= px + pt
                    })
                    .unwrap_or_else(|| panic!("node {name} at x={x} has no parent"));
                format!("{};{name}", parent.3)
            };
            row.push((x, total, self_value, path));
        }
        rows.push(row);
    }
    rows.into_iter()
        .flatten()
        .map(|(_, t, s, p)| (p, (t, s)))
        .collect()
}

/// `path -> (total, self)` of a flame graph, decoded independently of the engine.
pub fn decode_flamegraph(
    fg: &profusion_proto::querier::v1::FlameGraph,
) -> std::collections::BTreeMap<String, (i64, i64)> {
    let levels: Vec<Vec<i64>> = fg.levels.iter().map(|l| l.values.clone()).collect();
    decode_levels(&fg.names, &levels, 4, 0)
}

/// The reference the engine is checked against: `path -> (total, self)` computed directly from
/// root-first stacks and values, with the virtual root named `total`.
pub fn reference_tree(
    stacks: &[(Vec<String>, i64)],
) -> std::collections::BTreeMap<String, (i64, i64)> {
    let mut out: std::collections::BTreeMap<String, (i64, i64)> = std::collections::BTreeMap::new();
    for (stack, value) in stacks {
        let mut path = "total".to_owned();
        out.entry(path.clone()).or_default().0 += value;
        for (i, frame) in stack.iter().enumerate() {
            path = format!("{path};{frame}");
            let e = out.entry(path.clone()).or_default();
            e.0 += value;
            if i + 1 == stack.len() {
                e.1 += value;
            }
        }
    }
    out
}

/// Root-first stacks (`;`-joined function names) and summed values of a pprof answer, read
/// through its location and function tables.
pub fn pprof_stacks(
    p: &profusion_proto::google::v1::Profile,
) -> std::collections::BTreeMap<String, i64> {
    let name = |location: u64| -> String {
        let loc = p
            .location
            .iter()
            .find(|l| l.id == location)
            .expect("location");
        let f = p
            .function
            .iter()
            .find(|f| f.id == loc.line[0].function_id)
            .expect("function");
        p.string_table[f.name as usize].clone()
    };
    let mut out = std::collections::BTreeMap::new();
    for s in &p.sample {
        let stack: Vec<String> = s.location_id.iter().rev().map(|l| name(*l)).collect();
        *out.entry(stack.join(";")).or_default() += s.value[0];
    }
    out
}
