//! Manifest validation: decide the media type, check the structure, and extract every
//! reference (config, layers, child manifests, subject) the index must record.

use std::collections::BTreeMap;

use berth_types::{Digest, ErrorKind, ManifestKind, MediaType, OciError};
use serde::Deserialize;
use serde_json::Value;

/// A validated manifest's references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedManifest {
    /// Media type it is stored and served with.
    pub media_type: MediaType,
    /// Blobs that must exist in the repository (config, distributable layers).
    pub blobs: Vec<Digest>,
    /// Manifests that must exist in the repository (children of an index).
    pub manifests: Vec<Digest>,
    /// `subject`, when present (not required to exist).
    pub subject: Option<Digest>,
    /// `artifactType`, else the config media type of an image manifest.
    pub artifact_type: Option<String>,
    /// Annotations.
    pub annotations: Option<BTreeMap<String, String>>,
    /// Every blob descriptor that must be checked against the store (config, distributable
    /// layers), with its declared size, in manifest order.
    pub blob_refs: Vec<Checked>,
    /// Every child manifest of an index, with its declared size and platform.
    pub manifest_refs: Vec<Checked>,
}

/// One descriptor whose target must exist (unless the configuration allows it to be absent)
/// and whose declared size must match what is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// Where in the manifest: `config`, `layers[2]`, `manifests[0]`.
    pub label: String,
    /// Target digest.
    pub digest: Digest,
    /// Declared size.
    pub size: u64,
    /// `os/architecture[/variant]` of an index child, when it declares a platform.
    pub platform: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: Option<String>,
    digest: String,
    size: i64,
    #[serde(default)]
    urls: Option<Vec<String>>,
    #[serde(default)]
    platform: Option<RawPlatform>,
}

#[derive(Deserialize)]
struct RawPlatform {
    architecture: String,
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

impl RawPlatform {
    fn render(&self) -> String {
        match &self.variant {
            Some(v) if !v.is_empty() => format!("{}/{}/{}", self.os, self.architecture, v),
            _ => format!("{}/{}", self.os, self.architecture),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    manifests: Option<Vec<RawDescriptor>>,
    subject: Option<RawDescriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

fn invalid(msg: impl Into<String>) -> OciError {
    OciError::new(ErrorKind::ManifestInvalid).msg(msg)
}

fn descriptor_digest(d: &RawDescriptor, what: &str) -> Result<Digest, OciError> {
    if d.size < 0 {
        return Err(invalid(format!("{what}: negative size")));
    }
    d.digest.parse().map_err(|e| invalid(format!("{what}: invalid digest {:?}: {e}", d.digest)))
}

fn non_distributable(d: &RawDescriptor) -> bool {
    d.media_type.as_deref().is_some_and(|m| m.contains("nondistributable") || m.contains("foreign"))
        || d.urls.as_ref().is_some_and(|u| !u.is_empty())
}

impl ParsedManifest {
    /// The index record of this manifest, pushed (or cached) now, with the references that are
    /// `absent` from the repository.
    pub fn record(&self, absent: Vec<Digest>) -> berth_index::ManifestRecord {
        berth_index::ManifestRecord {
            media_type: self.media_type.as_str().to_owned(),
            artifact_type: self.artifact_type.clone(),
            subject: self.subject.clone(),
            blobs: self.blobs.clone(),
            manifests: self.manifests.clone(),
            annotations: self.annotations.clone(),
            absent,
            pushed_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        }
    }
}

/// Descriptors (config, layers, index children) one manifest may list unless configured
/// otherwise (`limits.max_manifest_descriptors`): the work a push asks for is bounded.
pub const DEFAULT_MAX_DESCRIPTORS: usize = 1000;

/// Validate `bytes` pushed with `content_type` (the request's `Content-Type`, if any), with
/// the default bound on descriptors.
pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<ParsedManifest, OciError> {
    parse_limited(bytes, content_type, DEFAULT_MAX_DESCRIPTORS)
}

/// Keep the first of each digest, in order.
fn unique(v: &mut Vec<Digest>) {
    let mut seen = std::collections::HashSet::with_capacity(v.len());
    v.retain(|d| seen.insert(d.clone()));
}

/// Validate `bytes`, refusing more than `max_descriptors` descriptors (`MANIFEST_INVALID`).
pub fn parse_limited(
    bytes: &[u8],
    content_type: Option<&str>,
    max_descriptors: usize,
) -> Result<ParsedManifest, OciError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| invalid(format!("manifest is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(invalid("manifest must be a JSON object"));
    }
    let raw: RawManifest =
        serde_json::from_value(value).map_err(|e| invalid(format!("manifest structure is invalid: {e}")))?;
    let listed = raw.layers.as_ref().map_or(0, Vec::len) + raw.manifests.as_ref().map_or(0, Vec::len);
    if listed + usize::from(raw.config.is_some()) > max_descriptors {
        return Err(invalid(format!(
            "the manifest lists {listed} layers or manifests; this registry accepts at most {max_descriptors} \
             (limits.max_manifest_descriptors)"
        )));
    }
    if raw.schema_version != Some(2) {
        return Err(invalid("schemaVersion must be 2"));
    }
    let header = content_type.and_then(MediaType::parse);
    let body = match raw.media_type.as_deref() {
        Some(m) => Some(MediaType::parse(m).ok_or_else(|| invalid(format!("unsupported manifest media type {m:?}")))?),
        None => None,
    };
    let media_type = match (header, body) {
        (Some(h), Some(b)) if h != b => {
            return Err(invalid(format!("Content-Type {} does not match mediaType {}", h.as_str(), b.as_str())))
        }
        (_, Some(b)) => b,
        (Some(h), None) => h,
        (None, None) => {
            if raw.manifests.is_some() {
                MediaType::OciIndex
            } else if raw.config.is_some() {
                MediaType::OciManifest
            } else {
                return Err(invalid("cannot determine the manifest media type"));
            }
        }
    };
    if let Some(ct) = content_type {
        let base = ct.split(';').next().unwrap_or("").trim();
        if header.is_none() && base.starts_with("application/vnd.") && !base.is_empty() {
            return Err(invalid(format!("unsupported manifest media type {base:?}")));
        }
    }
    let mut blobs = Vec::new();
    let mut manifests = Vec::new();
    let mut blob_refs = Vec::new();
    let mut manifest_refs = Vec::new();
    let checked = |d: &RawDescriptor, digest: &Digest, label: String| Checked {
        label,
        digest: digest.clone(),
        size: d.size as u64,
        platform: d.platform.as_ref().map(RawPlatform::render),
    };
    let mut artifact_type = raw.artifact_type.clone();
    match media_type.kind() {
        ManifestKind::Image => {
            if raw.manifests.is_some() {
                return Err(invalid("an image manifest has no manifests list"));
            }
            let config = raw.config.as_ref().ok_or_else(|| invalid("image manifest without config"))?;
            let d = descriptor_digest(config, "config")?;
            blob_refs.push(checked(config, &d, "config".into()));
            blobs.push(d);
            if artifact_type.is_none() {
                artifact_type = config.media_type.clone();
            }
            let layers = raw.layers.as_ref().ok_or_else(|| invalid("image manifest without layers"))?;
            for (i, l) in layers.iter().enumerate() {
                let label = format!("layers[{i}]");
                let d = descriptor_digest(l, &label)?;
                if !non_distributable(l) {
                    blob_refs.push(checked(l, &d, label));
                    blobs.push(d);
                }
            }
        }
        ManifestKind::Index => {
            if raw.config.is_some() || raw.layers.is_some() {
                return Err(invalid("an index has no config or layers"));
            }
            let list = raw.manifests.as_ref().ok_or_else(|| invalid("index without manifests"))?;
            for (i, m) in list.iter().enumerate() {
                let label = format!("manifests[{i}]");
                let d = descriptor_digest(m, &label)?;
                manifest_refs.push(checked(m, &d, label));
                manifests.push(d);
            }
        }
    }
    let subject = match &raw.subject {
        Some(s) => Some(descriptor_digest(s, "subject")?),
        None => None,
    };
    // Each distinct target once: an index may list one child many times.
    unique(&mut blobs);
    unique(&mut manifests);
    Ok(ParsedManifest {
        media_type,
        blobs,
        manifests,
        subject,
        artifact_type,
        annotations: raw.annotations,
        blob_refs,
        manifest_refs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn image_manifest() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D}","size":0}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{D}","size":0}},
                      {{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar","digest":"sha256:{}","size":1}}]}}"#,
            "a".repeat(64)
        );
        let p = parse(m.as_bytes(), Some("application/vnd.oci.image.manifest.v1+json")).unwrap();
        assert_eq!(p.blobs.len(), 1);
        assert_eq!(p.artifact_type.as_deref(), Some("application/vnd.oci.image.config.v1+json"));
    }

    #[test]
    fn rejects() {
        for (body, ct) in [
            ("not json", None),
            ("[]", None),
            (r#"{"schemaVersion":1}"#, None),
            (r#"{"schemaVersion":2}"#, None),
            (r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v1+json"}"#, None),
            (r#"{"schemaVersion":2,"config":{"digest":"sha256:x","size":1},"layers":[]}"#, None),
            (
                r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#,
                Some("application/vnd.oci.image.manifest.v1+json"),
            ),
        ] {
            assert_eq!(parse(body.as_bytes(), ct).unwrap_err().kind, ErrorKind::ManifestInvalid, "{body}");
        }
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn digest_strategy() -> impl Strategy<Value = String> {
        "[0-9a-f]{64}".prop_map(|h| format!("sha256:{h}"))
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), ct in proptest::option::of("[a-z./+-]{0,60}")) {
            let _ = parse(&bytes, ct.as_deref());
        }

        #[test]
        fn arbitrary_json_never_panics(v in any::<bool>().prop_flat_map(|_| prop_oneof![
            Just(serde_json::json!({"schemaVersion": 2})),
            Just(serde_json::json!({"schemaVersion": 2, "config": null, "layers": null})),
            Just(serde_json::json!({"schemaVersion": 2, "manifests": [{"digest": 1, "size": "x"}]})),
            Just(serde_json::json!({"schemaVersion": "2", "layers": []})),
        ])) {
            let _ = parse(&serde_json::to_vec(&v).unwrap(), None);
        }

        #[test]
        fn valid_image_manifests_report_their_references(
            config in digest_strategy(),
            layers in proptest::collection::vec((digest_strategy(), any::<bool>()), 0..8),
            subject in proptest::option::of(digest_strategy()),
        ) {
            let mut m = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 1},
                "layers": layers.iter().map(|(d, foreign)| if *foreign {
                    serde_json::json!({"mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar", "digest": d, "size": 1})
                } else {
                    serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": 1})
                }).collect::<Vec<_>>(),
            });
            if let Some(s) = &subject {
                m["subject"] = serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": s, "size": 1});
            }
            let p = parse(&serde_json::to_vec(&m).unwrap(), None).unwrap();
            let mut want: Vec<String> = std::iter::once(config.clone())
                .chain(layers.iter().filter(|(_, f)| !f).map(|(d, _)| d.clone()))
                .collect();
            want.dedup();
            prop_assert_eq!(p.blobs.iter().map(|d| d.to_string()).collect::<Vec<_>>(), want);
            prop_assert_eq!(p.subject.map(|d| d.to_string()), subject);
        }
    }
}
