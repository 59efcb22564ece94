//! Domain types shared by every Berth crate.
//!
//! Everything a client sends (repository names, tags, digests, byte ranges) is parsed into one
//! of these types at the edge, once. A value of these types is valid by construction: no code
//! path can build a [`Digest`] from an unchecked string, so no unchecked string can reach a
//! filesystem path or an index key.
//!
//! Layering: this crate depends on nothing else in the workspace. The index, the node, tiering
//! and admin all depend on it.

mod digest;
mod error;
pub mod exposition;
mod media;
mod name;
mod range;

pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use error::{ErrorKind, OciError};
pub use media::{ManifestKind, MediaType};
pub use name::{NameError, Reference, RepoName, Tag};
pub use range::{ByteRange, ContentRange, RangeError};
