//! Manifest media types we accept, and what kind of manifest each is.

/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Whether a manifest lists blobs (image manifest) or other manifests (index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// Config + layers (+ optional subject).
    Image,
    /// A list of child manifests (+ optional subject).
    Index,
}

/// A manifest media type we store and serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    /// [`DOCKER_MANIFEST_V2`]
    DockerManifest,
    /// [`DOCKER_MANIFEST_LIST`]
    DockerManifestList,
    /// [`OCI_MANIFEST`]
    OciManifest,
    /// [`OCI_INDEX`]
    OciIndex,
}

impl MediaType {
    /// Parse a media type string, ignoring parameters such as `; charset=utf-8`.
    pub fn parse(s: &str) -> Option<MediaType> {
        let base = s.split(';').next().unwrap_or("").trim();
        match base {
            DOCKER_MANIFEST_V2 => Some(MediaType::DockerManifest),
            DOCKER_MANIFEST_LIST => Some(MediaType::DockerManifestList),
            OCI_MANIFEST => Some(MediaType::OciManifest),
            OCI_INDEX => Some(MediaType::OciIndex),
            _ => None,
        }
    }
    /// The media type string.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaType::DockerManifest => DOCKER_MANIFEST_V2,
            MediaType::DockerManifestList => DOCKER_MANIFEST_LIST,
            MediaType::OciManifest => OCI_MANIFEST,
            MediaType::OciIndex => OCI_INDEX,
        }
    }
    /// Image or index.
    pub fn kind(self) -> ManifestKind {
        match self {
            MediaType::DockerManifest | MediaType::OciManifest => ManifestKind::Image,
            MediaType::DockerManifestList | MediaType::OciIndex => ManifestKind::Index,
        }
    }
}
