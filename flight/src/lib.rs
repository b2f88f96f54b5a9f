//! Arrow Flight services of Profusion: ingester head scans and store-gateway block scans between
//! processes (the Flight client and server of `profusion_model::scan`'s `HeadSource` and
//! `BlockSource`, carrying the serializable `ScanRequest`), Flight SQL for external clients, and
//! the transport of plan fragments encoded by `profusion_engine::codec`.
//!
//! Owns: Flight wire handling only; plans come from `profusion-engine`, scans from the roles
//! that own the data. Empty until microservices mode (issue 11) and the SQL surface (issue 12).
