use super::*;
use berth_types::Algorithm;

fn open() -> (tempfile::TempDir, Index) {
    let dir = tempfile::tempdir().unwrap();
    let idx = Index::open(dir.path(), false).unwrap();
    (dir, idx)
}

fn repo(s: &str) -> RepoName {
    s.parse().unwrap()
}

fn record(blobs: Vec<Digest>, subject: Option<Digest>) -> ManifestRecord {
    ManifestRecord {
        absent: Vec::new(),
        media_type: berth_types::MediaType::OciManifest.as_str().into(),
        artifact_type: None,
        subject,
        blobs,
        manifests: vec![],
        annotations: None,
        pushed_at_ms: 1,
    }
}

#[test]
fn blob_commit_link_unlink() {
    let (_d, idx) = open();
    let d = Digest::of(Algorithm::Sha256, b"x");
    let r = repo("a/b");
    assert!(idx.blob(&d).unwrap().is_none());
    idx.commit_blob(&r, &d, 1, None).unwrap();
    assert_eq!(idx.blob(&d).unwrap().unwrap().size, 1);
    assert_eq!(idx.store_totals().unwrap(), (1, 1));
    assert!(idx.repo_has_blob(&r, &d).unwrap());
    assert!(!idx.repo_has_blob(&repo("a"), &d).unwrap());
    assert!(idx.link_blob(&repo("c"), &d).unwrap());
    assert!(!idx.link_blob(&repo("c"), &Digest::of(Algorithm::Sha256, b"y")).unwrap());
    assert_eq!(idx.list_repos(None, 10).unwrap().items, vec!["a/b", "c"]);
    assert!(idx.unlink_blob(&r, &d).unwrap());
    assert!(!idx.unlink_blob(&r, &d).unwrap());
    assert_eq!(idx.list_repos(None, 10).unwrap().items, vec!["c"]);
    // Feed: committed, linked a/b, linked c, unlinked a/b.
    let feed = idx.changes(1, 100).unwrap();
    assert_eq!(feed.len(), 4);
    assert_eq!(feed.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
}

#[test]
fn manifests_tags_referrers() {
    let (_d, idx) = open();
    let r = repo("x");
    let m1 = Digest::of(Algorithm::Sha256, b"m1");
    let m2 = Digest::of(Algorithm::Sha256, b"m2");
    let tags: Vec<Tag> = vec!["v1".parse().unwrap(), "latest".parse().unwrap()];
    assert!(idx.put_manifest(&r, &m1, &record(vec![], None), b"m1", &tags).unwrap().created);
    assert!(!idx.put_manifest(&r, &m1, &record(vec![], None), b"m1", &[]).unwrap().created);
    idx.put_manifest(&r, &m2, &record(vec![], Some(m1.clone())), b"m2", &[]).unwrap();
    assert_eq!(idx.tag(&r, &tags[0]).unwrap(), Some(m1.clone()));
    assert_eq!(idx.manifest(&r, &m1).unwrap().unwrap().1, b"m1");
    assert_eq!(idx.manifest_size(&r, &m1).unwrap(), Some(2));
    assert_eq!(idx.manifest_size(&r, &Digest::of(Algorithm::Sha256, b"none")).unwrap(), None);
    assert_eq!(idx.list_tags(&r, None, 10).unwrap().items, vec!["latest", "v1"]);
    let p = idx.list_tags(&r, None, 1).unwrap();
    assert_eq!((p.items, p.more), (vec!["latest".to_string()], true));
    let p = idx.list_tags(&r, Some("latest"), 1).unwrap();
    assert_eq!((p.items, p.more), (vec!["v1".to_string()], false));
    assert_eq!(idx.referrers(&r, &m1).unwrap().len(), 1);
    assert!(idx.delete_tag(&r, &tags[0]).unwrap());
    assert!(idx.delete_manifest(&r, &m1).unwrap());
    assert!(idx.list_tags(&r, None, 10).unwrap().items.is_empty());
    assert!(idx.delete_manifest(&r, &m2).unwrap());
    assert!(idx.referrers(&r, &m1).unwrap().is_empty());
    assert!(!idx.repo_exists(&r).unwrap());
}

#[test]
fn sequence_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let idx = Index::open(dir.path(), true).unwrap();
        idx.commit_blob(&repo("a"), &Digest::of(Algorithm::Sha256, b"1"), 1, None).unwrap();
    }
    let idx = Index::open(dir.path(), true).unwrap();
    assert_eq!(idx.next_sequence(), 3);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// Paging through tags with any page size yields every tag once, sorted.
        #[test]
        fn tag_pagination_is_complete_and_sorted(
            tags in proptest::collection::btree_set("[a-zA-Z0-9_][a-zA-Z0-9._-]{0,20}", 0..40),
            n in 1usize..10,
        ) {
            let (_d, idx) = open();
            let r = repo("p/q");
            let m = Digest::of(Algorithm::Sha256, b"m");
            let tags: Vec<Tag> = tags.iter().map(|t| t.parse().unwrap()).collect();
            idx.put_manifest(&r, &m, &record(vec![], None), b"m", &tags).unwrap();
            // A neighbouring repository must not leak into the listing.
            idx.put_manifest(&repo("p/q2"), &m, &record(vec![], None), b"m", &tags).unwrap();
            let mut seen = Vec::new();
            let mut last: Option<String> = None;
            loop {
                let page = idx.list_tags(&r, last.as_deref(), n).unwrap();
                prop_assert!(page.items.len() <= n);
                seen.extend(page.items.clone());
                if !page.more {
                    break;
                }
                last = page.items.last().cloned();
            }
            let mut want: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
            want.sort();
            prop_assert_eq!(seen, want);
        }
    }
}

#[test]
fn tier_transitions_keep_queue_and_totals_exact() {
    let (_d, idx) = open();
    let r = repo("t");
    let a = Digest::of(Algorithm::Sha256, b"a");
    let b = Digest::of(Algorithm::Sha256, b"b");
    idx.commit_blob(&r, &a, 10, None).unwrap();
    idx.commit_blob(&r, &b, 20, None).unwrap();
    let t = idx.tier_totals().unwrap();
    assert_eq!((t.local_bytes, t.pending_count, t.pending_bytes), (30, 2, 30));
    assert_eq!(idx.pending_tiering(None, 10).unwrap().len(), 2);
    assert_eq!(idx.pending_tiering(Some(&a.clone().min(b.clone())), 10).unwrap().len(), 1);
    // Uploaded: leaves the queue, still local.
    assert!(idx.set_tier(&a, TierState::Local, TierState::LocalAndRemote).unwrap());
    assert!(!idx.set_tier(&a, TierState::Local, TierState::LocalAndRemote).unwrap(), "compare-and-set");
    let t = idx.tier_totals().unwrap();
    assert_eq!((t.local_bytes, t.pending_count, t.pending_bytes), (30, 1, 20));
    assert_eq!(idx.eviction_candidates().unwrap().len(), 1);
    // Evicted, then read through again.
    assert!(idx.set_tier(&a, TierState::LocalAndRemote, TierState::Remote).unwrap());
    assert_eq!(idx.tier_totals().unwrap().local_bytes, 20);
    assert!(idx.eviction_candidates().unwrap().is_empty());
    assert!(idx.set_tier(&a, TierState::Remote, TierState::LocalAndRemote).unwrap());
    assert_eq!(idx.tier_totals().unwrap().local_bytes, 30);
    // Removal keeps totals exact in every state.
    idx.remove_blob(&b).unwrap();
    let t = idx.tier_totals().unwrap();
    assert_eq!((t.local_bytes, t.pending_count, t.pending_bytes), (10, 0, 0));
    let feed = idx.changes(1, 100).unwrap();
    assert!(feed.iter().any(|c| matches!(&c.change, Change::BlobTier { tier: TierState::Remote, .. })));
}

#[test]
fn import_and_cursors() {
    let (_d, idx) = open();
    let a = Digest::of(Algorithm::Sha256, b"a");
    let meta = BlobMeta { size: 5, created_at_ms: 1, tier: TierState::Remote };
    assert!(idx.import_blob(&a, &meta).unwrap());
    assert!(!idx.import_blob(&a, &meta).unwrap());
    // Feed consumers (the sidecar) learn where an imported blob is, not just that it exists.
    let feed: Vec<Change> = idx.changes(1, 10).unwrap().into_iter().map(|c| c.change).collect();
    assert_eq!(
        feed,
        vec![
            Change::BlobCommitted { digest: a.clone(), size: 5 },
            Change::BlobTier { digest: a.clone(), tier: TierState::Remote }
        ]
    );
    assert_eq!(idx.tier_totals().unwrap(), TierTotals::default());
    assert_eq!(idx.store_totals().unwrap(), (1, 5));
    assert_eq!(idx.cursor("mirror").unwrap(), 0);
    idx.set_cursor("mirror", 42).unwrap();
    assert_eq!(idx.cursor("mirror").unwrap(), 42);
}

#[test]
fn feed_trimming_respects_consumers_and_keeps_the_head() {
    let (d, idx) = open();
    let r = repo("f");
    for i in 0..10u8 {
        idx.commit_blob(&r, &Digest::of(Algorithm::Sha256, &[i]), 1, None).unwrap();
    }
    // 20 records (commit + link each). A live consumer at 5 pins everything after it.
    assert_eq!(idx.next_sequence(), 21);
    idx.consumer_at("admin", 5).unwrap();
    assert_eq!(idx.trim_feed(3, 60_000).unwrap(), 6);
    assert_eq!(idx.changes(1, 100).unwrap().first().unwrap().seq, 6);
    // A consumer not seen within the timeout no longer pins it; `retain` still does.
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(idx.trim_feed(3, 1).unwrap(), 18);
    assert_eq!(idx.first_sequence().unwrap(), 18);
    // Even retain 0 keeps the newest record, so sequences continue after a reopen.
    idx.trim_feed(0, 1).unwrap();
    assert_eq!(idx.changes(1, 100).unwrap().len(), 1);
    drop(idx);
    let idx = Index::open(d.path(), false).unwrap();
    assert_eq!(idx.next_sequence(), 21);
}
