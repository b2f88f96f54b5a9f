//! The DataFusion layer of Profusion's read path: table providers over head chunks and block
//! chunks, the custom physical plans (head scans, symbolization, flame-graph building), and the
//! query frontend, scheduler and querier logic.
//!
//! Owns: planning and executing reads. Must not write data: blocks and the catalog are written
//! only by `profusion-ingest`. The read path arrives with issue 3; the block format it reads is
//! documented in `docs/block-format.md` and defined in `profusion_ingest::block`.
