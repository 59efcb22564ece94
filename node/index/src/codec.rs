//! Value encodings. JSON for records (inspectable, evolvable with serde defaults); manifests
//! are a length-prefixed JSON header followed by the exact bytes the client pushed.

use serde::{de::DeserializeOwned, Serialize};

use crate::{IndexError, ManifestRecord, Result};

pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("index records always serialise")
}

pub(crate) fn decode<T: DeserializeOwned>(b: &[u8], cf: &'static str) -> Result<T> {
    serde_json::from_slice(b).map_err(|e| IndexError::Corrupt { cf, reason: e.to_string() })
}

pub(crate) fn encode_manifest(rec: &ManifestRecord, bytes: &[u8]) -> Vec<u8> {
    let head = encode(rec);
    let mut out = Vec::with_capacity(4 + head.len() + bytes.len());
    out.extend_from_slice(&(head.len() as u32).to_be_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(bytes);
    out
}

pub(crate) fn decode_manifest(v: &[u8]) -> Result<(ManifestRecord, Vec<u8>)> {
    let corrupt = || IndexError::Corrupt { cf: "manifests", reason: "short record".into() };
    let len = u32::from_be_bytes(v.get(..4).ok_or_else(corrupt)?.try_into().map_err(|_| corrupt())?) as usize;
    let head = v.get(4..4 + len).ok_or_else(corrupt)?;
    let rec = decode(head, "manifests")?;
    Ok((rec, v[4 + len..].to_vec()))
}

/// The length of the pushed bytes in an encoded manifest record.
pub(crate) fn manifest_bytes_len(v: &[u8]) -> Result<u64> {
    let corrupt = || IndexError::Corrupt { cf: "manifests", reason: "short record".into() };
    let len = u32::from_be_bytes(v.get(..4).ok_or_else(corrupt)?.try_into().map_err(|_| corrupt())?) as usize;
    let rest = v.len().checked_sub(4 + len).ok_or_else(corrupt)?;
    Ok(rest as u64)
}

pub(crate) fn u64_from(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

pub(crate) fn seq_from_key(k: &[u8]) -> Option<u64> {
    u64_from(k)
}

/// Parse text stored as bytes into a validated type.
pub(crate) fn parse_text<T: std::str::FromStr>(b: &[u8], cf: &'static str) -> Result<T> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(IndexError::Corrupt { cf, reason: "unparsable text".into() })
}

/// Split a `repo \0 rest` key into its two validated parts.
pub(crate) fn split_key<A: std::str::FromStr, B: std::str::FromStr>(k: &[u8], cf: &'static str) -> Result<(A, B)> {
    let pos =
        k.iter().position(|&b| b == 0).ok_or(IndexError::Corrupt { cf, reason: "key without separator".into() })?;
    Ok((parse_text(&k[..pos], cf)?, parse_text(&k[pos + 1..], cf)?))
}
