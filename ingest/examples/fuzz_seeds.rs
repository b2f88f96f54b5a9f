//! Writes the hostile shapes of `profusion_ingest::fuzzing::seeds` into the cargo-fuzz corpus,
//! `fuzz/corpus/<target>/<name>`, for the fuzzers to start from (fuzz/README.md).

fn main() -> std::io::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for (target, name, bytes) in profusion_ingest::fuzzing::seeds() {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), &bytes)?;
        println!("{target}/{name}: {} bytes", bytes.len());
    }
    Ok(())
}
