//! Local storage: content-addressed blob files and upload sessions.
//!
//! Layering: handlers (`api`) call these stores; the stores call the index and the filesystem;
//! neither calls back into `api`.

pub mod access;
mod blobs;
pub mod open_files;
pub mod small;
pub mod space;
mod uploads;

pub use blobs::BlobStore;
pub(crate) use uploads::{hash_file, index_error, io_error, range_error};
pub use uploads::{UploadId, Uploads};
