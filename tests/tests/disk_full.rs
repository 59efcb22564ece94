//! Disk full: a push into a nearly full filesystem gets a clean error with the spec's error
//! body, leaves nothing half-visible, and the node keeps serving pulls. Uses a small tmpfs the
//! test mounts (needs root; skipped elsewhere unless CI is set).

mod common;
use std::process::Command;

use common::*;

struct Mount(std::path::PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn push_into_full_disk_fails_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=48m", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "CI must be able to mount a tmpfs (run as root)");
        eprintln!("SKIP: cannot mount tmpfs");
        return;
    }
    let _m = Mount(mnt.clone());
    let b = Berth::start(&mnt.join("data"), &[]);
    let mut pushed = Vec::new();
    let mut refused = None;
    for i in 0..40u32 {
        let data: Vec<u8> = (0..4 * 1024 * 1024u32).map(|j| (j ^ i.wrapping_mul(2654435761)) as u8).collect();
        let d = sha256(&data);
        let r = http("POST", &b.url(&format!("/v2/full/blobs/uploads/?digest={d}")), &[], Some(&data));
        if r.status == 201 {
            pushed.push((d, data));
            continue;
        }
        refused = Some((r.status, String::from_utf8_lossy(&r.body).into_owned(), d));
        break;
    }
    let (status, body, d) = refused.expect("the 48 MiB filesystem filled up");
    assert_eq!(status, 507, "out of space is 507 INSUFFICIENT_STORAGE: {body}");
    assert!(body.contains("\"errors\""), "the spec's error body: {body}");
    assert!(!pushed.is_empty());
    // Not half-visible.
    assert_eq!(http("HEAD", &b.url(&format!("/v2/full/blobs/{d}")), &[], None).status, 404);
    // Pulls keep working.
    for (d, data) in &pushed {
        let r = http("GET", &b.url(&format!("/v2/full/blobs/{d}")), &[], None);
        assert_eq!(r.status, 200);
        assert!(&r.body == data);
    }
    // A chunked upload fails cleanly too, and its session still answers.
    let r = http("POST", &b.url("/v2/full/blobs/uploads/"), &[], None);
    if r.status == 202 {
        let loc = r.header("Location").unwrap().to_owned();
        let r = http("PATCH", &b.url(&loc), &[], Some(&vec![9u8; 8 * 1024 * 1024]));
        assert!(r.status >= 500 && String::from_utf8_lossy(&r.body).contains("errors"), "{}", r.status);
    } else {
        assert!(r.status >= 500, "{}", r.status);
    }
    assert_eq!(http("GET", &b.url("/v2/"), &[], None).status, 200);
}
