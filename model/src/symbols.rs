//! Content ids of frames and stacks. Every role that writes or merges blocks computes them here,
//! so equal frames and equal stacks get equal ids in every block, from every ingester and from
//! the compactor alike; the block format documents both functions.

use profusion_proto::ingester::v1::Frame;
use xxhash_rust::xxh3::Xxh3;

/// Content hash of a frame: every symbolic field, so equal frames agree everywhere.
pub fn frame_id(f: &Frame) -> u64 {
    let mut h = Xxh3::new();
    for s in [
        &f.function_name,
        &f.system_name,
        &f.filename,
        &f.mapping_file,
        &f.build_id,
    ] {
        h.update(&(s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    }
    h.update(&f.line.to_le_bytes());
    h.update(&f.start_line.to_le_bytes());
    h.update(&f.address.to_le_bytes());
    h.digest()
}

/// Hash of a stack: xxh3-64 of its frame ids, root first, as little-endian bytes. `scratch`
/// is reused between calls so hashing a profile's stacks allocates once.
pub fn stack_hash(frame_ids: impl IntoIterator<Item = u64>, scratch: &mut Vec<u8>) -> u64 {
    scratch.clear();
    for id in frame_ids {
        scratch.extend_from_slice(&id.to_le_bytes());
    }
    xxhash_rust::xxh3::xxh3_64(scratch)
}

/// A span id as pprof sample labels and the querier API carry it: exactly 16 hex digits.
pub fn parse_span_id(s: &str) -> Option<u64> {
    (s.len() == 16)
        .then(|| u64::from_str_radix(s, 16).ok())
        .flatten()
}
