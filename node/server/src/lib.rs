//! The Berth storage node: the OCI Distribution API served by a thread-per-core io_uring server.
//!
//! Layering, top to bottom (a layer calls only those below it):
//! `server` (cores, listeners, connections) → `api` (one file per HTTP resource) →
//! `store` (blob files, upload sessions) and `manifest` (validation) → `berth_index` (RocksDB)
//! → `berth_types`. `http` is the wire format, used by `server` and `api`.

pub mod accounts_cli;
pub mod admission;
pub mod api;
pub mod app;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod doctor;
pub mod fsck;
pub mod gc;
pub mod gc_cli;
pub mod http;
pub mod manifest;
pub mod metrics;
pub mod offload;
pub mod preload_cli;
pub mod pull_through;
pub mod rebuild;
pub mod routes;
pub mod scan;
pub mod server;
pub mod store;
