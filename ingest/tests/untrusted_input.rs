//! Decoders of untrusted bytes never panic: seed inputs for every format, then thousands of
//! deterministic mutations of them (bit flips, truncations, splices, varint boundary bytes).
//! `fuzz/` runs the same entry points under libFuzzer for open-ended exploration.

use profusion_ingest::fuzzing;

use profusion_testing::{MutationRng as Rng, mutate as mutate_with};

/// Varint boundaries: the bytes that break length and tag decoding.
fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    mutate_with(seed, rng, &[0x00, 0x7f, 0x80, 0xff])
}

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(profusion_testing::fixtures_dir().join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
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

/// The hostile shapes for `target` (deep inlined stacks, duplicate ids, huge label sets, long
/// tree and trie chains, profiles sharing a dictionary), mutated fewer times: each is large.
fn hostile(target: &str, run: fn(&[u8])) {
    let seeds: Vec<Vec<u8>> = fuzzing::seeds()
        .into_iter()
        .filter(|(t, _, _)| *t == target)
        .map(|(_, _, bytes)| bytes)
        .collect();
    assert!(!seeds.is_empty(), "no hostile seeds for {target}");
    hammer(&seeds, run, 60);
}

#[test]
fn pprof_decoder_survives_mutations() {
    let seeds = vec![
        fixture("wire/pprof_cpu_small.bin"),
        fixture("captures/pyroscope-nodejs-0.6.4-ingest/req001.body"),
        fixture("captures/pyroscope-io-0.8.16-ingest/req001.body"),
    ];
    hammer(&seeds, fuzzing::pprof, 3000);
    hostile("pprof", fuzzing::pprof);
}

#[test]
fn otlp_decoder_survives_mutations() {
    let seeds = vec![
        fixture("captures/otlp-synthetic/otlp_profiles_v1.10.pb"),
        fixture("captures/otlp-synthetic/otlp_profiles_v1.10.json"),
    ];
    hammer(&seeds, fuzzing::otlp, 3000);
    hostile("otlp", fuzzing::otlp);
}

#[test]
fn legacy_decoders_survive_mutations() {
    let mut trie = vec![2u8];
    trie.extend_from_slice(&[0, 0, 1, 2, b'a', b';', 0, 2, 1, b'b', 3, 0, 1, b'c', 1, 0]);
    let mut tree = vec![3u8];
    tree.extend_from_slice(&[0, 0, 1, 1, b'a', 1, 2, 1, b'b', 3, 0, 1, b'c', 1, 0]);
    let mut multipart = vec![4u8];
    multipart.extend_from_slice(b"--B\r\nContent-Disposition: form-data; name=\"profile\"\r\n\r\n");
    multipart.extend_from_slice(&fixture("wire/pprof_cpu_small.bin"));
    multipart.extend_from_slice(b"\r\n--B\r\nContent-Disposition: form-data; name=\"sample_type_config\"\r\n\r\n{\"cpu\":{\"units\":\"x\"}}\r\n--B--\r\n");
    let seeds = vec![
        b"\x00main;work 30\nmain;idle 10\n".to_vec(),
        b"\x01a;b\na;b\na;c\n".to_vec(),
        trie,
        tree,
        multipart,
    ];
    hammer(&seeds, fuzzing::legacy, 3000);
    hostile("legacy", fuzzing::legacy);
}

#[test]
fn push_json_decoder_survives_mutations() {
    let raw = String::from_utf8(
        profusion_proto::to_json(&profusion_testing::push_request(
            &[("__name__", "process_cpu"), ("service_name", "svc")],
            fixture("wire/pprof_cpu_small.bin"),
            "",
        ))
        .unwrap(),
    )
    .unwrap();
    hammer(&[raw.into_bytes()], fuzzing::push_json, 3000);
    hostile("push_json", fuzzing::push_json);
}

/// The gunzipped bytes of a fixture.
fn gunzipped(path: &str) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(fixture(path).as_slice())
        .read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    out
}

#[test]
fn jfr_reader_survives_mutations() {
    // A real JDK recording (large: fewer rounds), raw and as the agent's multipart.
    let recording = gunzipped("jfr/jdk17-workload.jfr.gz");
    let seeds = vec![
        [vec![0u8], recording.clone()].concat(),
        [vec![1u8], recording].concat(),
    ];
    hammer(&seeds, fuzzing::jfr, 150);
    hostile("jfr", fuzzing::jfr);
    // The small synthetic recording in both integer forms, many times.
    let synthetic: Vec<Vec<u8>> = fuzzing::seeds()
        .into_iter()
        .filter(|(t, name, _)| {
            *t == "jfr" && ["cpu_with_contexts", "cpu_fixed_width_integers"].contains(name)
        })
        .map(|(_, _, bytes)| bytes)
        .collect();
    hammer(&synthetic, fuzzing::jfr, 3000);
}

#[test]
fn speedscope_reader_survives_mutations() {
    let seeds = vec![
        fixture("speedscope/py-spy-0.4.3.speedscope.json"),
        br#"{"$schema":"https://www.speedscope.app/file-format-schema.json","shared":{"frames":[{"name":"a"},{"name":"b"}]},"profiles":[{"type":"evented","name":"e","unit":"milliseconds","startValue":0,"endValue":9,"events":[{"type":"O","frame":0,"at":0},{"type":"O","frame":1,"at":2},{"type":"C","frame":1,"at":5},{"type":"C","frame":0,"at":9}]},{"type":"sampled","name":"s","unit":"bytes","startValue":0,"endValue":1,"samples":[[0,1],[1]],"weights":[100,7]}]}"#.to_vec(),
    ];
    hammer(&seeds, fuzzing::speedscope, 1500);
}
