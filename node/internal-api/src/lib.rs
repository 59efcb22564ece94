//! The node's internal API, as its clients see it: the change feed's records, GC requests,
//! policies and reports, vulnerability scan records, and a blocking client. Shared by the node (which serves it), the
//! `berth` CLI (`berth gc`) and the admin sidecar, so the sidecar links neither the server
//! nor the index (no RocksDB, no io_uring runtime in `berth-admin`).
//!
//! Layering: depends only on `berth-types`; nothing here does I/O except [`InternalClient`].

pub mod accounts;
pub mod client;
pub mod feed;
pub mod gc;
pub mod preload;
pub mod scan;
#[cfg(feature = "tls")]
pub mod tls;

pub use client::{InternalClient, ResolveError};
