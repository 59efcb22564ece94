#![no_main]
//! Range and Content-Range parsing: never panic; a resolved range always lies inside the blob.
use berth_types::{ByteRange, ContentRange};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&[u8], u64)| {
    let (data, len) = input;
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(r) = s.parse::<ByteRange>() {
            if let Ok((off, n)) = r.resolve(len) {
                assert!(n >= 1);
                assert!(off.checked_add(n).is_some_and(|end| end <= len));
            }
        }
        if let Ok(c) = s.parse::<ContentRange>() {
            assert!(c.end >= c.start);
            assert_eq!(c.len(), c.end - c.start + 1);
        }
    }
});
