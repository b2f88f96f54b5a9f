//! One catalog suite, run against SQLite (a real file) and PostgreSQL (a private server started
//! from the installed binaries in a temporary directory).

use profusion_catalog::{
    Catalog, CatalogError, FlushedTenants, MemberState, RingMember, Setting, TokenRecord,
};
use profusion_model::block::BlockMeta;
use profusion_model::time::TimeRange;
use profusion_model::tombstone::Tombstone;
use profusion_testing::PostgresServer;

fn block(tenant: &str, id: &str, min: i64, max: i64, segment: u64) -> BlockMeta {
    BlockMeta {
        tenant: tenant.into(),
        id: id.into(),
        min_time_nanos: min,
        max_time_nanos: max,
        num_series: 2,
        num_profiles: 3,
        num_samples: 40,
        size_bytes: 1234,
        services: vec!["api".into(), "web".into()],
        profile_types: vec!["process_cpu:cpu:nanoseconds:cpu:nanoseconds".into()],
        source: "ingester-a".into(),
        wal_segment: segment,
        compaction_level: 0,
        created_at_millis: 1_700_000_000_000,
        lineage: [("ingester-a".to_owned(), segment)].into(),
        tombstone_seq: 0,
    }
}

/// A compacted block of `parents`' lineage.
fn compacted(tenant: &str, id: &str, min: i64, max: i64, parents: &[&BlockMeta]) -> BlockMeta {
    let mut b = block(tenant, id, min, max, 0);
    b.source = "compactor".into();
    b.compaction_level = 1;
    b.lineage = Default::default();
    for p in parents {
        for (s, seg) in &p.lineage {
            let e = b.lineage.entry(s.clone()).or_insert(*seg);
            *e = (*e).max(*seg);
        }
    }
    b
}

fn ids(v: Vec<BlockMeta>) -> Vec<String> {
    v.into_iter().map(|b| b.id).collect()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The compactor's protocol: claims, pending outputs, the swap, deletion after the delay, and
/// what recovery learns from lineage.
async fn lifecycle(c: &dyn Catalog) {
    let far = i64::MAX / 2;
    let (l1, l2, l3) = (
        block("life", "L1", 0, 10, 1),
        block("life", "L2", 5, 20, 2),
        block("life", "L3", 30, 40, 3),
    );
    for b in [&l1, &l2, &l3] {
        c.register_block(b).await.unwrap();
    }
    let both = strings(&["L1", "L2"]);
    assert!(c.claim_blocks("life", &both, "a", far).await.unwrap());
    assert!(
        !c.claim_blocks("life", &strings(&["L2", "L3"]), "b", far)
            .await
            .unwrap(),
        "a block claimed by another owner refuses the whole claim"
    );
    assert!(
        c.claim_blocks("life", &strings(&["L3"]), "b", far)
            .await
            .unwrap(),
        "a refused claim took nothing"
    );
    assert!(
        !c.claim_blocks("life", &strings(&["nope"]), "b", far)
            .await
            .unwrap()
    );

    let out = compacted("life", "C1", 0, 20, &[&l1, &l2]);
    c.add_pending_blocks(std::slice::from_ref(&out), "a", far)
        .await
        .unwrap();
    assert_eq!(
        ids(c.blocks("life", 0, 100).await.unwrap()),
        ["L1", "L2", "L3"],
        "pending is invisible"
    );
    let err = c
        .replace_blocks("life", &strings(&["C1"]), &strings(&["L1", "L2"]), "b")
        .await
        .unwrap_err();
    assert!(matches!(err, CatalogError::Conflict(_)), "{err}");
    assert_eq!(
        ids(c.blocks("life", 0, 100).await.unwrap()),
        ["L1", "L2", "L3"],
        "a refused swap changed nothing"
    );
    c.replace_blocks("life", &strings(&["C1"]), &both, "a")
        .await
        .unwrap();
    assert_eq!(ids(c.blocks("life", 0, 100).await.unwrap()), ["C1", "L3"]);
    assert_eq!(
        c.blocks("life", 0, 100).await.unwrap()[0],
        out,
        "lineage round-trips"
    );
    // The sources are retired, not gone: deletable only once the delay has passed.
    assert!(ids(c.deletable_blocks(0).await.unwrap()).is_empty());
    let deletable = ids(c.deletable_blocks(far).await.unwrap());
    assert_eq!(deletable, ["L1", "L2"]);
    assert!(
        !c.claim_blocks("life", &both, "b", far).await.unwrap(),
        "retired blocks cannot be claimed"
    );

    // Recovery: segment 2 is in C1, segment 3 in L3; a newer segment proves older ones whole.
    assert_eq!(
        c.flushed_tenants("ingester-a", 3).await.unwrap(),
        FlushedTenants::Some(strings(&["life"]))
    );
    assert_eq!(
        c.flushed_tenants("ingester-a", 1).await.unwrap(),
        FlushedTenants::All
    );
    assert_eq!(
        c.flushed_tenants("ingester-z", 1).await.unwrap(),
        FlushedTenants::Some(vec![])
    );

    // A dead compactor's pending upload becomes deletable once its claim runs out.
    assert!(
        c.claim_blocks("life", &strings(&["L3"]), "b", far)
            .await
            .unwrap()
    );
    let orphan = compacted("life", "C2", 30, 40, &[&l3]);
    c.add_pending_blocks(std::slice::from_ref(&orphan), "b", 0)
        .await
        .unwrap();
    assert_eq!(ids(c.deletable_blocks(0).await.unwrap()), ["C2"]);
    assert_eq!(
        c.mark_deleting("life", &strings(&["C2", "L3"]), 0)
            .await
            .unwrap(),
        ["C2"],
        "live blocks are never marked"
    );
    let err = c
        .replace_blocks("life", &strings(&["C2"]), &strings(&["L3"]), "b")
        .await
        .unwrap_err();
    assert!(
        matches!(err, CatalogError::Conflict(_)),
        "a block being deleted cannot go live: {err}"
    );
    c.release_claims("b").await.unwrap();
    assert!(
        c.claim_blocks("life", &strings(&["L3"]), "c", far)
            .await
            .unwrap(),
        "released"
    );

    // Deleting, then forgetting; lineage survives in the descendant.
    assert_eq!(c.mark_deleting("life", &both, far).await.unwrap(), both);
    c.forget_blocks("life", &strings(&["L1", "L2", "C2"]))
        .await
        .unwrap();
    assert!(ids(c.deletable_blocks(far).await.unwrap()).is_empty());
    assert_eq!(
        c.flushed_tenants("ingester-a", 2).await.unwrap(),
        FlushedTenants::All
    );
    // A flush retried after its block was compacted does not bring the block back.
    c.register_block(&l1).await.unwrap();
    assert_eq!(ids(c.blocks("life", 0, 100).await.unwrap()), ["C1", "L3"]);
}

async fn suite(c: &dyn Catalog) {
    assert_eq!(
        c.schema_version().await.unwrap(),
        profusion_catalog::migrations::latest_version()
    );

    c.register_block(&block("t1", "B1", 100, 200, 1))
        .await
        .unwrap();
    c.register_block(&block("t1", "B2", 300, 400, 2))
        .await
        .unwrap();
    c.register_block(&block("t2", "B3", 100, 400, 2))
        .await
        .unwrap();
    // Registering again replaces, never duplicates.
    let mut again = block("t1", "B1", 100, 250, 1);
    again.num_samples = 41;
    c.register_block(&again).await.unwrap();

    assert_eq!(ids(c.blocks("t1", 0, 1000).await.unwrap()), ["B1", "B2"]);
    assert_eq!(
        ids(c.blocks("t1", 250, 299).await.unwrap()),
        ["B1"],
        "inclusive bounds"
    );
    assert_eq!(
        ids(c.blocks("t1", 251, 299).await.unwrap()),
        Vec::<String>::new()
    );
    assert_eq!(ids(c.blocks("t1", 400, 400).await.unwrap()), ["B2"]);
    assert_eq!(
        ids(c.blocks("t3", 0, 1000).await.unwrap()),
        Vec::<String>::new()
    );
    let b1 = c.blocks("t1", 0, 150).await.unwrap().remove(0);
    assert_eq!(b1, again, "every field round-trips");

    assert_eq!(
        c.flushed_tenants("ingester-a", 2).await.unwrap(),
        FlushedTenants::Some(strings(&["t1", "t2"]))
    );
    assert_eq!(
        c.flushed_tenants("ingester-a", 1).await.unwrap(),
        FlushedTenants::All
    );
    assert_eq!(
        c.flushed_tenants("ingester-b", 1).await.unwrap(),
        FlushedTenants::Some(vec![])
    );
    assert_eq!(c.tenants().await.unwrap(), ["t1", "t2"]);

    let s = |name: &str, value: &str, at: i64| Setting {
        name: name.into(),
        value: value.into(),
        modified_at_millis: at,
    };
    c.set_setting("t1", &s("theme", "dark", 10), 3)
        .await
        .unwrap();
    c.set_setting("t1", &s("alpha", "1", 10), 3).await.unwrap();
    c.set_setting("t2", &s("theme", "light", 10), 3)
        .await
        .unwrap();
    c.set_setting("t1", &s("theme", "solarized", 20), 3)
        .await
        .unwrap();
    let err = c
        .set_setting("t1", &s("theme", "stale", 15), 3)
        .await
        .unwrap_err();
    assert!(matches!(err, CatalogError::Conflict(_)), "{err}");
    // A third name fits the limit of 3; a fourth does not, while existing names still update.
    c.set_setting("t1", &s("beta", "2", 10), 3).await.unwrap();
    let err = c
        .set_setting("t1", &s("gamma", "3", 10), 3)
        .await
        .unwrap_err();
    assert!(matches!(err, CatalogError::Limit(_)), "{err}");
    assert!(err.to_string().contains("already has 3 settings"), "{err}");
    c.set_setting("t1", &s("beta", "4", 30), 3).await.unwrap();
    c.delete_setting("t1", "beta").await.unwrap();
    assert_eq!(
        c.settings("t1").await.unwrap(),
        vec![s("alpha", "1", 10), s("theme", "solarized", 20)]
    );
    assert_eq!(
        c.settings("t2").await.unwrap(),
        vec![s("theme", "light", 10)]
    );
    c.delete_setting("t1", "theme").await.unwrap();
    c.delete_setting("t1", "absent").await.unwrap();
    assert_eq!(c.settings("t1").await.unwrap(), vec![s("alpha", "1", 10)]);
    lifecycle(c).await;
    tombstones(c).await;
    ring(c).await;
}

/// Ring membership: a heartbeat adds or refreshes a member, keeping when it registered; rings
/// are apart; a forgotten member is gone.
async fn ring(c: &dyn Catalog) {
    let member = |ring: &str, instance: &str, address: &str, tokens: &[u32]| RingMember {
        ring: ring.into(),
        instance: instance.into(),
        address: address.into(),
        tokens: tokens.to_vec(),
        state: MemberState::Joining,
        registered_at_millis: 0,
        heartbeat_at_millis: 0,
    };
    let before = now_millis();
    let b = c
        .heartbeat(&member("ingester", "ingester-b", "10.0.0.2:4040", &[7, 90]))
        .await
        .unwrap();
    assert!(b.registered_at_millis >= before && b.heartbeat_at_millis == b.registered_at_millis);
    let a = c
        .heartbeat(&member("ingester", "ingester-a", "10.0.0.1:4040", &[3, 50]))
        .await
        .unwrap();
    c.heartbeat(&member("querier", "querier-1", "10.0.0.3:4040", &[]))
        .await
        .unwrap();
    assert_eq!(
        c.ring_members("ingester").await.unwrap(),
        vec![a.clone(), b.clone()],
        "by instance id"
    );

    // A later heartbeat: new address, tokens and state; registration kept.
    std::thread::sleep(std::time::Duration::from_millis(5));
    let mut moved = member("ingester", "ingester-b", "10.0.0.9:4040", &[8, 91]);
    moved.state = MemberState::Active;
    let b2 = c.heartbeat(&moved).await.unwrap();
    assert_eq!(b2.registered_at_millis, b.registered_at_millis);
    assert!(b2.heartbeat_at_millis > b.heartbeat_at_millis);
    assert_eq!(
        (b2.address.as_str(), b2.tokens.as_slice(), b2.state),
        ("10.0.0.9:4040", &[8u32, 91][..], MemberState::Active)
    );
    assert!(b2.is_healthy(b2.heartbeat_at_millis + 1000, 1000));
    assert!(!b2.is_healthy(b2.heartbeat_at_millis + 1001, 1000));

    c.forget_member("ingester", "ingester-a").await.unwrap();
    c.forget_member("ingester", "absent").await.unwrap();
    assert_eq!(c.ring_members("ingester").await.unwrap(), vec![b2]);
    assert_eq!(c.ring_members("querier").await.unwrap().len(), 1);
    assert!(c.ring_members("compactor").await.unwrap().is_empty());
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Tombstones round-trip in order of their sequence numbers; retention expires them.
async fn tombstones(c: &dyn Catalog) {
    let t = |tenant: &str, start: i64, end: i64| Tombstone {
        tenant: tenant.into(),
        seq: 0,
        range: TimeRange { start, end },
        selectors: vec![r#"{service_name="api"}"#.into()],
        fingerprints: vec![3, 9],
        services: vec!["api".into()],
        created_at_millis: 1234,
    };
    let a = c.add_tombstone(&t("del", 10, 20)).await.unwrap();
    let b = c.add_tombstone(&t("del", 30, 40)).await.unwrap();
    c.add_tombstone(&t("other", 0, 1)).await.unwrap();
    assert!(a.seq > 0 && b.seq > a.seq, "{} then {}", a.seq, b.seq);
    assert_eq!(
        c.tombstones("del").await.unwrap(),
        vec![a.clone(), b.clone()]
    );
    c.expire_tombstones("del", 21).await.unwrap();
    assert_eq!(c.tombstones("del").await.unwrap(), vec![b]);
    assert_eq!(c.tombstones("other").await.unwrap().len(), 1);
    // A block records the newest tombstone applied to it.
    let mut applied = block("del", "D1", 0, 50, 99);
    applied.tombstone_seq = a.seq;
    c.register_block(&applied).await.unwrap();
    assert_eq!(c.blocks("del", 0, 100).await.unwrap(), vec![applied]);
}

/// Tokens: created once, listed per tenant or all, revoked only within their tenant, and the
/// first revocation time kept.
async fn tokens(c: &dyn Catalog) {
    let t = |id: &str, tenant: &str, created: i64| TokenRecord {
        id: id.into(),
        tenant: tenant.into(),
        scopes: "read,write".into(),
        secret_hash: format!("hash-of-{id}"),
        description: format!("token {id}"),
        created_at_millis: created,
        revoked_at_millis: None,
    };
    let (a, b, other) = (t("a1", "ta", 20), t("a2", "ta", 10), t("b1", "tb", 30));
    for token in [&a, &b, &other] {
        c.create_token(token).await.unwrap();
    }
    let mut same_hash = t("a3", "ta", 40);
    same_hash.secret_hash = a.secret_hash.clone();
    for duplicate in [a.clone(), same_hash] {
        let err = c.create_token(&duplicate).await.unwrap_err();
        assert!(matches!(err, CatalogError::Conflict(_)), "{err}");
    }
    assert_eq!(c.tokens(Some("ta")).await.unwrap(), [b.clone(), a.clone()]);
    assert_eq!(
        c.tokens(None).await.unwrap(),
        [b.clone(), a.clone(), other.clone()]
    );
    // Another tenant's token is not found, and not revoked.
    assert_eq!(c.revoke_token("b1", Some("ta"), 50).await.unwrap(), None);
    assert_eq!(c.revoke_token("absent", None, 50).await.unwrap(), None);
    let revoked = TokenRecord {
        revoked_at_millis: Some(50),
        ..a.clone()
    };
    assert_eq!(
        c.revoke_token("a1", Some("ta"), 50).await.unwrap(),
        Some(revoked.clone())
    );
    assert_eq!(
        c.revoke_token("a1", None, 60).await.unwrap(),
        Some(revoked.clone())
    );
    assert_eq!(c.tokens(Some("ta")).await.unwrap(), [b, revoked]);
    assert_eq!(c.tokens(Some("tb")).await.unwrap(), [other]);
}

#[tokio::test]
async fn sqlite_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/catalog.db");
    let catalog = profusion_catalog::open(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    suite(catalog.as_ref()).await;
    tokens(catalog.as_ref()).await;
    drop(catalog);
    // Reopening applies no migration twice and keeps the data.
    let catalog = profusion_catalog::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    assert_eq!(
        catalog.tenants().await.unwrap(),
        ["del", "life", "t1", "t2"]
    );
}

#[tokio::test]
async fn postgres_catalog() {
    let Some(pg) = PostgresServer::start("postgres_catalog") else {
        return;
    };
    // Two nodes starting at once apply each migration exactly once.
    let url = pg.url();
    let (a, b) = tokio::join!(profusion_catalog::open(&url), profusion_catalog::open(&url));
    let (a, b) = (a.unwrap(), b.unwrap());
    suite(a.as_ref()).await;
    tokens(a.as_ref()).await;
    assert_eq!(
        b.tenants().await.unwrap(),
        ["del", "life", "t1", "t2"],
        "both nodes see one catalog"
    );
    assert_eq!(
        b.ring_members("ingester").await.unwrap(),
        a.ring_members("ingester").await.unwrap(),
        "and one ring"
    );
}
