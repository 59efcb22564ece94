//! Byte ranges: the `Range` request header of blob GETs and the `Content-Range` of chunked uploads.

use std::str::FromStr;

/// Why a range header was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// Does not parse.
    #[error("malformed range")]
    Malformed,
    /// Parses but lies outside the resource.
    #[error("range not satisfiable")]
    Unsatisfiable,
}

/// A requested byte range from `Range: bytes=...` (single range only), before it is resolved
/// against the resource length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=a-b`, inclusive.
    FromTo(u64, u64),
    /// `bytes=a-`.
    From(u64),
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

impl FromStr for ByteRange {
    type Err = RangeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let spec = s.trim().strip_prefix("bytes=").ok_or(RangeError::Malformed)?;
        if spec.contains(',') {
            // Multipart ranges are not supported; the spec allows ignoring them, we refuse.
            return Err(RangeError::Malformed);
        }
        let (a, b) = spec.trim().split_once('-').ok_or(RangeError::Malformed)?;
        let num = |x: &str| -> Result<u64, RangeError> {
            if x.is_empty() || !x.bytes().all(|c| c.is_ascii_digit()) {
                return Err(RangeError::Malformed);
            }
            x.parse().map_err(|_| RangeError::Malformed)
        };
        match (a.is_empty(), b.is_empty()) {
            (true, true) => Err(RangeError::Malformed),
            (true, false) => Ok(ByteRange::Suffix(num(b)?)),
            (false, true) => Ok(ByteRange::From(num(a)?)),
            (false, false) => {
                let (a, b) = (num(a)?, num(b)?);
                if b < a {
                    // `bytes=500-0` names no byte of any resource: answered 416 like every
                    // other unsatisfiable range (clients and the conformance tests expect it).
                    return Err(RangeError::Unsatisfiable);
                }
                Ok(ByteRange::FromTo(a, b))
            }
        }
    }
}

impl ByteRange {
    /// Resolve against a resource of `len` bytes: returns `(offset, count)`.
    pub fn resolve(self, len: u64) -> Result<(u64, u64), RangeError> {
        match self {
            ByteRange::FromTo(a, b) => {
                if a >= len {
                    return Err(RangeError::Unsatisfiable);
                }
                let end = b.min(len - 1);
                Ok((a, end - a + 1))
            }
            ByteRange::From(a) => {
                if a >= len {
                    return Err(RangeError::Unsatisfiable);
                }
                Ok((a, len - a))
            }
            ByteRange::Suffix(n) => {
                if n == 0 || len == 0 {
                    return Err(RangeError::Unsatisfiable);
                }
                let n = n.min(len);
                Ok((len - n, n))
            }
        }
    }
}

/// The `Content-Range: start-end` of a chunked upload PATCH (inclusive, no unit), as the
/// distribution spec uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    /// First byte offset.
    pub start: u64,
    /// Last byte offset, inclusive.
    pub end: u64,
}

impl ContentRange {
    /// Number of bytes the range covers.
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }
    /// Never true: a content range covers at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl FromStr for ContentRange {
    type Err = RangeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        // Some clients send "bytes a-b/*" or "bytes=a-b"; accept those forms too.
        let s = s.strip_prefix("bytes=").or_else(|| s.strip_prefix("bytes ")).unwrap_or(s);
        let s = s.split_once('/').map(|(r, _)| r).unwrap_or(s);
        let (a, b) = s.split_once('-').ok_or(RangeError::Malformed)?;
        let num = |x: &str| -> Result<u64, RangeError> {
            if x.is_empty() || x.len() > 19 || !x.bytes().all(|c| c.is_ascii_digit()) {
                return Err(RangeError::Malformed);
            }
            x.parse().map_err(|_| RangeError::Malformed)
        };
        let (start, end) = (num(a)?, num(b)?);
        if end < start {
            return Err(RangeError::Malformed);
        }
        Ok(ContentRange { start, end })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn byte_ranges() {
        assert_eq!("bytes=0-9".parse::<ByteRange>().unwrap().resolve(100), Ok((0, 10)));
        assert_eq!("bytes=90-".parse::<ByteRange>().unwrap().resolve(100), Ok((90, 10)));
        assert_eq!("bytes=-10".parse::<ByteRange>().unwrap().resolve(100), Ok((90, 10)));
        assert_eq!("bytes=95-200".parse::<ByteRange>().unwrap().resolve(100), Ok((95, 5)));
        assert_eq!("bytes=100-".parse::<ByteRange>().unwrap().resolve(100), Err(RangeError::Unsatisfiable));
        assert_eq!("bytes=500-0".parse::<ByteRange>(), Err(RangeError::Unsatisfiable));
        for bad in ["", "bytes=", "bytes=-", "items=0-1", "bytes=0-1,3-4", "bytes=a-b", "bytes=-1-2"] {
            assert!(bad.parse::<ByteRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn content_ranges() {
        assert_eq!("0-99".parse::<ContentRange>().unwrap(), ContentRange { start: 0, end: 99 });
        assert_eq!("bytes 0-99/*".parse::<ContentRange>().unwrap().len(), 100);
        for bad in ["", "-", "5-1", "a-b", "-1-2", "99999999999999999999-1"] {
            assert!(bad.parse::<ContentRange>().is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn resolve_stays_inside(a in 0u64..1000, b in 0u64..1000, len in 0u64..1000) {
            for r in [ByteRange::FromTo(a.min(b), a.max(b)), ByteRange::From(a), ByteRange::Suffix(b)] {
                if let Ok((off, n)) = r.resolve(len) {
                    prop_assert!(n >= 1 && off + n <= len);
                }
            }
        }

        #[test]
        fn content_range_round_trip(a in 0u64..u64::MAX / 2, n in 1u64..1_000_000) {
            let s = format!("{}-{}", a, a + n - 1);
            let r: ContentRange = s.parse().unwrap();
            prop_assert_eq!(r.len(), n);
        }

        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = s.parse::<ByteRange>().map(|r| r.resolve(10));
            let _ = s.parse::<ContentRange>();
        }
    }
}
