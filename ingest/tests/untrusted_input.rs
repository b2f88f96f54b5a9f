//! Decoders of untrusted bytes never panic: seed inputs for every format, then thousands of
//! deterministic mutations of them (bit flips, truncations, splices, varint boundary bytes).
//! `fuzz/` runs the same entry points under libFuzzer for open-ended exploration.

use profusion_ingest::fuzzing;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(5) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 => v.truncate(rng.below(v.len() + 1)),
            2 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = [0x00, 0x7f, 0x80, 0xff][rng.below(4)];
            }
            3 => {
                let i = rng.below(v.len() + 1);
                let extra: Vec<u8> = (0..rng.below(16)).map(|_| rng.next() as u8).collect();
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

fn shared(path: &str) -> Vec<u8> {
    let root = std::env::var_os("PROFUSION_SHARED_DIR").map_or_else(
        || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"),
        std::path::PathBuf::from,
    );
    std::fs::read(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn hammer(seeds: &[Vec<u8>], run: fn(&[u8]), rounds: usize) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for seed in seeds {
        run(seed);
        for _ in 0..rounds {
            run(&mutate(seed, &mut rng));
        }
    }
}

#[test]
fn pprof_decoder_survives_mutations() {
    let seeds = vec![
        shared("fixtures/wire/pprof_cpu_small.bin"),
        shared("captures/pyroscope-nodejs-0.6.4-ingest/req001.body"),
        shared("captures/pyroscope-io-0.8.16-ingest/req001.body"),
    ];
    hammer(&seeds, fuzzing::pprof, 3000);
}

#[test]
fn otlp_decoder_survives_mutations() {
    let seeds = vec![
        shared("captures/otlp-synthetic/otlp_profiles_v1.10.pb"),
        shared("captures/otlp-synthetic/otlp_profiles_v1.10.json"),
    ];
    hammer(&seeds, fuzzing::otlp, 3000);
}

#[test]
fn legacy_decoders_survive_mutations() {
    let mut trie = vec![2u8];
    trie.extend_from_slice(&[0, 0, 1, 2, b'a', b';', 0, 2, 1, b'b', 3, 0, 1, b'c', 1, 0]);
    let mut tree = vec![3u8];
    tree.extend_from_slice(&[0, 0, 1, 1, b'a', 1, 2, 1, b'b', 3, 0, 1, b'c', 1, 0]);
    let mut multipart = vec![4u8];
    multipart.extend_from_slice(b"--B\r\nContent-Disposition: form-data; name=\"profile\"\r\n\r\n");
    multipart.extend_from_slice(&shared("fixtures/wire/pprof_cpu_small.bin"));
    multipart.extend_from_slice(b"\r\n--B\r\nContent-Disposition: form-data; name=\"sample_type_config\"\r\n\r\n{\"cpu\":{\"units\":\"x\"}}\r\n--B--\r\n");
    let seeds = vec![
        b"\x00main;work 30\nmain;idle 10\n".to_vec(),
        b"\x01a;b\na;b\na;c\n".to_vec(),
        trie,
        tree,
        multipart,
    ];
    hammer(&seeds, fuzzing::legacy, 3000);
}
