//! ES256 signatures in canonical (low-S) form: an ECDSA signature (r, s) and (r, n − s) both
//! verify, so a token has a twin with another byte string (another cache key, another "token").
//! This node issues low-S only (ring signs with either) and refuses the high-S twin of its own
//! tokens (security round 2, finding 13).

/// The order of P-256, big-endian.
const P256_N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xbc, 0xe6, 0xfa,
    0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// Half the order of P-256 (rounded down), big-endian: `s` above it is the high-S form.
const P256_HALF_N: [u8; 32] = [
    0x7f, 0xff, 0xff, 0xff, 0x80, 0x00, 0x00, 0x00, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xde, 0x73, 0x7d,
    0x56, 0xd3, 0x8b, 0xcf, 0x42, 0x79, 0xdc, 0xe5, 0x61, 0x7e, 0x31, 0x92, 0xa8,
];

/// `n - s` for a 32-byte big-endian `s < n`.
pub(super) fn negate(s: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = i16::from(P256_N[i]) - i16::from(s[i]) - borrow;
        borrow = i16::from(d < 0);
        if d < 0 {
            d += 256;
        }
        out[i] = d as u8;
    }
    out
}

/// An ES256 JWS with its signature's `s` in low-S form (the canonical one of the two that
/// verify): ring signs with either.
pub(super) fn low_s(token: String) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let Some((signed, sig)) = token.rsplit_once('.') else { return token };
    let Ok(mut raw) = b64.decode(sig) else { return token };
    if raw.len() != 64 {
        return token;
    }
    let s: [u8; 32] = raw[32..].try_into().expect("32 bytes");
    if s <= P256_HALF_N {
        return token;
    }
    raw[32..].copy_from_slice(&negate(&s));
    format!("{signed}.{}", b64.encode(raw))
}

/// Whether an ES256 JWS's signature is in high-S (non-canonical) form.
pub(super) fn high_s(token: &str) -> bool {
    use base64::Engine as _;
    let Some((_, sig)) = token.rsplit_once('.') else { return false };
    match base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig) {
        Ok(raw) if raw.len() == 64 => raw[32..] > P256_HALF_N[..],
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::token::{TokenConfig, Tokens};

    /// Security round 2, finding 13: the high-S twin of an ES256 signature verified too.
    #[test]
    fn high_s_twins_of_our_signatures_are_refused() {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let d = tempfile::tempdir().unwrap();
        let t = Tokens::new(&TokenConfig::default(), d.path()).unwrap();
        for i in 0..16 {
            let (tok, _) = t.issue(&format!("u{i}"), vec![]).unwrap();
            assert!(!high_s(&tok), "issued in low-S form");
            assert!(t.verify(&tok).is_ok());
            let (signed, sig) = tok.rsplit_once('.').unwrap();
            let mut raw = b64.decode(sig).unwrap();
            let s: [u8; 32] = raw[32..].try_into().unwrap();
            raw[32..].copy_from_slice(&negate(&s));
            let twin = format!("{signed}.{}", b64.encode(raw));
            assert!(high_s(&twin));
            assert_eq!(
                t.verify(&twin).unwrap_err(),
                super::super::token::TokenError::Invalid,
                "the high-S twin verified"
            );
        }
    }
}
