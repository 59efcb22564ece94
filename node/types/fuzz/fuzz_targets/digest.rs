#![no_main]
//! Digest parsing: never panics; whatever parses prints back to the same text and its hex part
//! is a safe file name.
use berth_types::Digest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(d) = s.parse::<Digest>() {
            assert_eq!(d.to_string(), s);
            assert!(d.hex().bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        }
    }
});
