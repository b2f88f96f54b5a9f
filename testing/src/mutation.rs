//! Deterministic mutations of seed inputs, for the tests that feed decoders hostile bytes.

/// A seedable xorshift generator for mutation tests.
#[derive(Debug, Clone)]
pub struct MutationRng(pub u64);

impl MutationRng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// One to four mutations of `seed`: bit flips, truncations, bytes set to one of `boundary`,
/// random splices and self-copies, the shapes that break hand-written parsers.
pub fn mutate(seed: &[u8], rng: &mut MutationRng, boundary: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(5) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 => v.truncate(rng.below(v.len() + 1)),
            2 if !v.is_empty() && !boundary.is_empty() => {
                let i = rng.below(v.len());
                v[i] = boundary[rng.below(boundary.len())];
            }
            3 => {
                let i = rng.below(v.len() + 1);
                let extra: Vec<u8> = (0..rng.below(16)).map(|_| rng.next_u64() as u8).collect();
                v.splice(i..i, extra);
            }
            _ if v.len() > 2 => {
                let (a, b) = (rng.below(v.len()), rng.below(v.len()));
                let (a, b) = (a.min(b), a.max(b));
                let chunk = v[a..b].to_vec();
                v.extend_from_slice(&chunk);
            }
            _ => {}
        }
    }
    v
}
