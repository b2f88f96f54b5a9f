//! The side services UIs call: per-tenant settings kept in the catalog across restarts,
//! the querier API version, feature flags and build information.

use profusion_proto::capabilities::v1::{GetFeatureFlagsRequest, GetFeatureFlagsResponse};
use profusion_proto::settings::v1::{
    DeleteSettingsRequest, DeleteSettingsResponse, GetSettingsRequest, GetSettingsResponse,
    SetSettingsRequest, SetSettingsResponse, Setting,
};
use profusion_proto::version::v1::{VersionRequest, VersionResponse};
use profusion_tests::{TestServer, get};
use prost::Message;

fn call<Req: Message, Resp: Message + Default>(
    server: &TestServer,
    path: &str,
    tenant: &str,
    req: &Req,
) -> Result<Resp, (u16, String)> {
    profusion_tests::connect_call(server, path, Some(tenant), req)
}

fn settings(server: &TestServer, tenant: &str) -> Vec<Setting> {
    call::<_, GetSettingsResponse>(
        server,
        "/settings.v1.SettingsService/Get",
        tenant,
        &GetSettingsRequest {},
    )
    .unwrap()
    .settings
}

fn set(server: &TestServer, tenant: &str, setting: Setting) -> Result<Setting, (u16, String)> {
    call::<_, SetSettingsResponse>(
        server,
        "/settings.v1.SettingsService/Set",
        tenant,
        &SetSettingsRequest {
            setting: Some(setting),
        },
    )
    .map(|r| r.setting.unwrap())
}

#[test]
fn settings_are_per_tenant_refuse_older_writes_and_survive_a_restart() {
    let mut server = TestServer::start(&["--auth.multitenancy-enabled"]);
    assert!(settings(&server, "team-a").is_empty());

    let stored = set(
        &server,
        "team-a",
        Setting {
            name: "pluginSettings".into(),
            value: r#"{"maxNodes":16384}"#.into(),
            modified_at: 0,
        },
    )
    .unwrap();
    assert!(stored.modified_at > 0, "the server stamps the change");
    assert_eq!(settings(&server, "team-a"), std::slice::from_ref(&stored));
    assert!(
        settings(&server, "team-b").is_empty(),
        "tenants are isolated"
    );

    // A write older than the stored one is refused; a newer one replaces it.
    let (status, body) = set(
        &server,
        "team-a",
        Setting {
            name: "pluginSettings".into(),
            value: "stale".into(),
            modified_at: stored.modified_at - 1,
        },
    )
    .unwrap_err();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("failed_precondition"), "{body}");
    let newer = Setting {
        name: "pluginSettings".into(),
        value: "fresh".into(),
        modified_at: stored.modified_at + 1,
    };
    assert_eq!(set(&server, "team-a", newer.clone()).unwrap(), newer);

    let (status, body) = set(&server, "team-a", Setting::default()).unwrap_err();
    assert_eq!(status, 400);
    assert!(body.contains("name must not be empty"), "{body}");

    server.stop();
    server.restart();
    assert_eq!(settings(&server, "team-a"), [newer]);
    let _: DeleteSettingsResponse = call(
        &server,
        "/settings.v1.SettingsService/Delete",
        "team-a",
        &DeleteSettingsRequest {
            name: "pluginSettings".into(),
        },
    )
    .unwrap();
    assert!(settings(&server, "team-a").is_empty());
}

#[test]
fn version_feature_flags_and_build_info() {
    let server = TestServer::start(&[]);
    let v: VersionResponse = call(
        &server,
        "/version.v1.Version/Version",
        "anonymous",
        &VersionRequest {},
    )
    .unwrap();
    assert_eq!(v.querier_api, 1);

    let flags: GetFeatureFlagsResponse = call(
        &server,
        "/capabilities.v1.FeatureFlagsService/GetFeatureFlags",
        "anonymous",
        &GetFeatureFlagsRequest {},
    )
    .unwrap();
    let flag = |name: &str| {
        flags
            .feature_flags
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.enabled)
    };
    assert_eq!(flag("utf8LabelNames"), Some(true));
    assert_eq!(flag("heatmap"), Some(false));

    let r = get(&server.url("/api/v1/status/buildinfo"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let info = r.json();
    assert_eq!(info["status"], "success");
    assert_eq!(info["data"]["version"], env!("CARGO_PKG_VERSION"));
}
