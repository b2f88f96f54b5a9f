//! One catalog suite, run against SQLite (a real file) and PostgreSQL (a private server started
//! from the installed binaries in a temporary directory).

use profusion_catalog::{Catalog, CatalogError, Setting};
use profusion_model::block::BlockMeta;
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
    }
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

    let ids = |v: Vec<BlockMeta>| v.into_iter().map(|b| b.id).collect::<Vec<_>>();
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
        c.tenants_flushed("ingester-a", 2).await.unwrap(),
        ["t1", "t2"]
    );
    assert_eq!(c.tenants_flushed("ingester-a", 1).await.unwrap(), ["t1"]);
    assert!(c.tenants_flushed("ingester-b", 1).await.unwrap().is_empty());
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
}

#[tokio::test]
async fn sqlite_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/catalog.db");
    let catalog = profusion_catalog::open(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    suite(catalog.as_ref()).await;
    drop(catalog);
    // Reopening applies no migration twice and keeps the data.
    let catalog = profusion_catalog::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    assert_eq!(catalog.tenants().await.unwrap(), ["t1", "t2"]);
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
    assert_eq!(
        b.tenants().await.unwrap(),
        ["t1", "t2"],
        "both nodes see one catalog"
    );
}
