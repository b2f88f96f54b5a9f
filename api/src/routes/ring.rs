//! The ring pages, as Pyroscope (dskit) serves them: `/ring` for the ingesters and
//! `/<role>/ring` for every other role. `Accept: application/json` gets
//! `{"shards": [{id, state, address, timestamp, registered_timestamp, zone, tokens}], "now"}`,
//! anything else an HTML table; a POST with the form field `forget=<instance>` removes a dead
//! member from its ring and redirects back to the page.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Query;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, SecondsFormat, Utc};
use http::{HeaderMap, StatusCode, header};
use profusion_catalog::{Catalog, RingMember};
use serde::Serialize;

use crate::error::ApiError;

/// The rings a process can show, by role name; `ingester` is served at `/ring`.
pub const RINGS: [&str; 7] = [
    "ingester",
    "distributor",
    "query-frontend",
    "query-scheduler",
    "querier",
    "store-gateway",
    "compactor",
];

/// What the ring pages read.
#[derive(Debug)]
pub struct RingApi {
    pub catalog: Arc<dyn Catalog>,
    /// A member whose last heartbeat is older than this shows as `UNHEALTHY`.
    pub heartbeat_timeout: Duration,
}

/// `/ring` and `/<role>/ring` for every role.
pub fn routes(api: RingApi) -> Router {
    let api = Arc::new(api);
    let mut router = Router::new();
    for ring in RINGS {
        let path = if ring == "ingester" {
            "/ring".to_owned()
        } else {
            format!("/{ring}/ring")
        };
        let (get_api, post_api) = (Arc::clone(&api), Arc::clone(&api));
        router = router.route(
            &path,
            get(
                move |headers: HeaderMap, query: Query<PageQuery>| async move {
                    page(&get_api, ring, &headers, query.0).await
                },
            )
            .post(move |body: Body| async move { forget(&post_api, ring, body).await }),
        );
    }
    router
}

#[derive(Debug, serde::Deserialize)]
struct PageQuery {
    #[serde(default)]
    tokens: Option<String>,
}

/// The JSON form of the ring, with dskit's field names.
#[derive(Debug, Serialize)]
struct RingPage {
    shards: Vec<Shard>,
    now: String,
}

#[derive(Debug, Serialize)]
struct Shard {
    id: String,
    state: String,
    address: String,
    timestamp: String,
    registered_timestamp: String,
    zone: String,
    tokens: Vec<u32>,
    /// Share of the hash space the member owns, in percent (HTML only, as in dskit).
    #[serde(skip)]
    ownership: f64,
}

fn rfc3339(millis: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(millis)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Each member's share of the token space: a token owns the hashes after its predecessor up
/// to itself.
fn ownership(members: &[RingMember]) -> Vec<f64> {
    let mut tokens: Vec<(u32, usize)> = members
        .iter()
        .enumerate()
        .flat_map(|(i, m)| m.tokens.iter().map(move |&t| (t, i)))
        .collect();
    tokens.sort_unstable();
    let mut owned = vec![0u64; members.len()];
    for (k, &(token, i)) in tokens.iter().enumerate() {
        let previous = if k == 0 {
            tokens[tokens.len() - 1].0
        } else {
            tokens[k - 1].0
        };
        owned[i] += u64::from(token.wrapping_sub(previous));
    }
    if tokens.len() == 1 {
        owned[tokens[0].1] = u64::from(u32::MAX);
    }
    owned
        .into_iter()
        .map(|o| o as f64 / f64::from(u32::MAX) * 100.0)
        .collect()
}

async fn page(api: &RingApi, ring: &str, headers: &HeaderMap, query: PageQuery) -> Response {
    let members = match api.catalog.ring_members(ring).await {
        Ok(members) => members,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let now = profusion_model::time::now_millis();
    let timeout = api.heartbeat_timeout.as_millis() as i64;
    let shares = ownership(&members);
    let shards: Vec<Shard> = members
        .into_iter()
        .zip(shares)
        .map(|(m, ownership)| Shard {
            state: if m.is_healthy(now, timeout) {
                m.state.as_str().to_owned()
            } else {
                "UNHEALTHY".to_owned()
            },
            id: m.instance,
            address: m.address,
            timestamp: rfc3339(m.heartbeat_at_millis),
            registered_timestamp: rfc3339(m.registered_at_millis),
            zone: String::new(),
            tokens: m.tokens,
            ownership,
        })
        .collect();
    let page = RingPage {
        shards,
        now: rfc3339(now),
    };
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"));
    if wants_json {
        return (
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_vec(&page).expect("the ring page serializes"),
        )
            .into_response();
    }
    let show_tokens = query.tokens.as_deref() == Some("true");
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html(ring, &page, show_tokens),
    )
        .into_response()
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn html(ring: &str, page: &RingPage, show_tokens: bool) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{ring} ring</title></head>\
         <body><h1>{ring} ring</h1><p>Current time: {now}</p>\
         <form action=\"\" method=\"POST\"><table border=\"1\" cellpadding=\"4\">\
         <thead><tr><th>Instance ID</th><th>Availability Zone</th><th>State</th><th>Address</th>\
         <th>Registered At</th><th>Last Heartbeat</th><th>Tokens</th><th>Ownership</th>\
         <th>Actions</th></tr></thead><tbody>",
        ring = escape(ring),
        now = escape(&page.now),
    );
    for shard in &page.shards {
        let _ = write!(
            out,
            "<tr><td>{id}</td><td>{zone}</td><td>{state}</td><td>{address}</td>\
             <td>{registered}</td><td>{heartbeat}</td><td>{tokens}</td><td>{ownership:.4}%</td>\
             <td><button name=\"forget\" value=\"{id}\" type=\"submit\">Forget</button></td></tr>",
            id = escape(&shard.id),
            zone = escape(&shard.zone),
            state = escape(&shard.state),
            address = escape(&shard.address),
            registered = escape(&shard.registered_timestamp),
            heartbeat = escape(&shard.timestamp),
            tokens = shard.tokens.len(),
            ownership = shard.ownership,
        );
    }
    out.push_str("</tbody></table></form>");
    if show_tokens {
        for shard in &page.shards {
            let tokens: Vec<String> = shard.tokens.iter().map(u32::to_string).collect();
            let _ = write!(
                out,
                "<h2>Instance {}</h2><p>Tokens: {}</p>",
                escape(&shard.id),
                tokens.join(" ")
            );
        }
    } else {
        out.push_str("<p><a href=\"?tokens=true\">Show tokens</a></p>");
    }
    out.push_str("</body></html>\n");
    out
}

async fn forget(api: &RingApi, ring: &str, body: Body) -> Response {
    let body = match crate::rpc::read_body(body, 64 << 10, Some(Duration::from_secs(10))).await {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    let Some(instance) = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "forget")
        .map(|(_, v)| v.into_owned())
    else {
        return ApiError::invalid("the form has no forget=<instance id> field").into_response();
    };
    if let Err(e) = api.catalog.forget_member(ring, &instance).await {
        return ApiError::from(e).into_response();
    }
    tracing::info!(ring, instance, "forgot a ring member");
    // Post/Redirect/Get, with a relative location, as dskit answers.
    (StatusCode::FOUND, [(header::LOCATION, "#")]).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(instance: &str, tokens: Vec<u32>) -> RingMember {
        RingMember {
            ring: "ingester".into(),
            instance: instance.into(),
            address: String::new(),
            tokens,
            state: profusion_catalog::MemberState::Active,
            registered_at_millis: 0,
            heartbeat_at_millis: 0,
        }
    }

    #[test]
    fn ownership_splits_the_token_space() {
        // a owns (300, 2^32) ∪ [0, 100]; b owns (100, 300].
        let shares = ownership(&[member("a", vec![100]), member("b", vec![300])]);
        let b = 200.0 / f64::from(u32::MAX) * 100.0;
        assert!((shares[1] - b).abs() < 1e-9, "{shares:?}");
        assert!((shares[0] + shares[1] - 100.0).abs() < 1e-6, "{shares:?}");
        assert_eq!(ownership(&[member("a", vec![7])]), vec![100.0]);
    }

    #[test]
    fn member_names_are_escaped_in_html() {
        let page = RingPage {
            shards: vec![Shard {
                id: "<script>".into(),
                state: "ACTIVE".into(),
                address: "a\"b".into(),
                timestamp: String::new(),
                registered_timestamp: String::new(),
                zone: String::new(),
                tokens: vec![],
                ownership: 0.0,
            }],
            now: String::new(),
        };
        let text = html("ingester", &page, false);
        assert!(!text.contains("<script>"));
        assert!(text.contains("&lt;script&gt;") && text.contains("a&quot;b"));
    }
}
