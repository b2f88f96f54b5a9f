//! The fixtures and captures the tests read, kept in the repository (`tests/fixtures/`).

use std::path::PathBuf;

/// The fixtures and captures kept in the repository (`tests/fixtures/`, see its README).
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}
