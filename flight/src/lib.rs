//! Arrow Flight services of Profusion: ingester head scans, store-gateway block scans, Flight
//! SQL for external clients and the distributed workers' transport.
//!
//! Owns: Flight wire handling only; plans come from `profusion-engine`. Arrives with the read
//! path (issue 3) and Flight SQL.
