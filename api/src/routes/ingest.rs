//! Write endpoints: Connect/gRPC Push, the legacy `/ingest`, and OTLP profiles. They decode a
//! request into profiles and hand them to a [`PushService`] (the distributor).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use profusion_ingest::distributor::{IncomingProfile, ProfileBody, PushService};
use profusion_ingest::limits::Limits;
use profusion_ingest::pprof::ConvertOptions;
use profusion_model::labels::Labels;
use profusion_proto::otlp::collector::{
    ExportProfilesServiceRequest, ExportProfilesServiceResponse,
};
use profusion_proto::push::v1::{PushRequest, PushResponse};

use crate::auth::Scope;
use crate::error::ApiError;
use crate::request::RequestRules;
use crate::rpc::{self, Protocol};

/// What the write handlers share: the request rules and the service profiles go to.
#[derive(Debug)]
pub struct IngestApi {
    pub rules: RequestRules,
    pub push: Arc<dyn PushService>,
}

/// The write API's routes.
pub fn routes(api: IngestApi) -> Router {
    Router::new()
        .route("/push.v1.PusherService/Push", post(push))
        .route("/ingest", post(ingest))
        .route("/pyroscope/ingest", post(ingest))
        .route("/v1development/profiles", post(otlp_http))
        .route(
            "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export",
            post(otlp_export),
        )
        .with_state(Arc::new(api))
}

impl IngestApi {
    /// The tenant of a write and its body (at most the configured limit), in that order so an
    /// unauthenticated request is refused before its body is read.
    async fn tenant_and_body(
        &self,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<(String, Bytes), ApiError> {
        let tenant = self.rules.tenant(headers, Scope::Write)?;
        let bytes = self.rules.read_body(body).await?;
        Ok((tenant, bytes))
    }

    /// Like [`Self::tenant_and_body`], with the body decompressed per its `Content-Encoding`
    /// (on the blocking pool: decompression is CPU work).
    async fn tenant_and_decoded_body(
        &self,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<(String, Bytes), ApiError> {
        let (tenant, bytes) = self.tenant_and_body(headers, body).await?;
        let encoding = headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let limit = self.rules.body_limit_bytes;
        let bytes = match encoding {
            None => bytes,
            Some(encoding) => {
                rpc::on_blocking_pool(move || rpc::decode_content(Some(&encoding), bytes, limit))
                    .await?
            }
        };
        Ok((tenant, bytes))
    }

    /// Stores the profiles `decode` makes for `tenant`. Decoding, validation and
    /// normalization run on the blocking pool, so a large or hostile profile never stalls the
    /// runtime threads serving other requests and `/ready`.
    async fn push<F>(&self, tenant: &str, decode: F) -> Result<(), ApiError>
    where
        F: FnOnce(&Limits) -> Result<Vec<IncomingProfile>, ApiError> + Send + 'static,
    {
        let service = Arc::clone(&self.push);
        let converted = rpc::on_blocking_pool(move || {
            let profiles = decode(service.limits())?;
            Ok(service.prepare(profiles, profusion_model::time::now_nanos())?)
        })
        .await?;
        self.push.write(tenant, converted).await?;
        Ok(())
    }
}

/// `push.v1.PusherService/Push`.
async fn push(State(api): State<Arc<IngestApi>>, headers: HeaderMap, body: Body) -> Response {
    let st = &*api;
    rpc::unary(
        &st.rules,
        Scope::Write,
        &headers,
        body,
        |tenant, request: PushRequest| async move {
            st.push(&tenant, move |limits| push_profiles(request, limits))
                .await?;
            Ok(PushResponse {})
        },
    )
    .await
}

fn push_profiles(request: PushRequest, limits: &Limits) -> Result<Vec<IncomingProfile>, ApiError> {
    let mut out = Vec::new();
    for (si, series) in request.series.into_iter().enumerate() {
        // Checked before the set is built: it would be refused anyway once built, and a set of
        // a few hundred thousand labels is real work. Derived labels only add to the count.
        if series.labels.len() > limits.max_label_names_per_series {
            return Err(ApiError::invalid(format!(
                "series[{si}] has {} labels, more than the limit of {}",
                series.labels.len(),
                limits.max_label_names_per_series
            )));
        }
        let labels = Labels::from_pairs(
            series
                .labels
                .iter()
                .map(|l| (l.name.as_str(), l.value.as_str())),
        );
        if labels.len() != series.labels.len() {
            let mut seen = std::collections::HashSet::new();
            if let Some(l) = series.labels.iter().find(|l| !seen.insert(&l.name)) {
                return Err(ApiError::invalid(format!(
                    "series[{si}]: duplicate label name {:?}",
                    profusion_model::labels::clip(&l.name, 64)
                )));
            }
        }
        for sample in series.samples {
            out.push(IncomingProfile {
                labels: labels.clone(),
                body: ProfileBody::Raw(sample.raw_profile),
                id: sample.id,
                options: ConvertOptions::default(),
            });
        }
    }
    Ok(out)
}

/// Legacy `POST /ingest` and `/pyroscope/ingest`.
async fn ingest(
    State(state): State<Arc<IngestApi>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result: Result<(), ApiError> = async {
        let (tenant, bytes) = state.tenant_and_decoded_body(&headers, body).await?;
        let pairs: Vec<(String, String)> =
            url::form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        let params = profusion_ingest::legacy::IngestParams::from_pairs(
            pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        );
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        state
            .push(&tenant, move |limits| {
                Ok(profusion_ingest::legacy::decode(
                    &params,
                    &content_type,
                    bytes,
                    profusion_model::time::now_nanos(),
                    limits,
                )?)
            })
            .await
    }
    .await;
    match result {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => e.into_response(),
    }
}

/// OTLP gRPC `ProfilesService/Export`; the same path also takes OTLP/HTTP bodies.
async fn otlp_export(state: State<Arc<IngestApi>>, headers: HeaderMap, body: Body) -> Response {
    match Protocol::detect(&headers) {
        Some(Protocol::Grpc | Protocol::GrpcWeb) => {
            let st = &*state;
            rpc::unary(
                &st.rules,
                Scope::Write,
                &headers,
                body,
                |tenant, request: ExportProfilesServiceRequest| async move {
                    st.push(&tenant, move |limits| otlp_profiles(&request, limits))
                        .await?;
                    Ok(ExportProfilesServiceResponse::default())
                },
            )
            .await
        }
        _ => otlp_http(state, headers, body).await,
    }
}

/// OTLP/HTTP `POST /v1development/profiles`, protobuf or JSON, optionally gzip.
async fn otlp_http(
    State(state): State<Arc<IngestApi>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let json = match Protocol::detect(&headers) {
        Some(Protocol::ConnectProto) => false,
        Some(Protocol::ConnectJson) => true,
        _ => {
            return rpc::unsupported_content_type(
                &headers,
                "application/x-protobuf, application/protobuf or application/json",
            );
        }
    };
    let result = async {
        let (tenant, bytes) = state.tenant_and_decoded_body(&headers, body).await?;
        state
            .push(&tenant, move |limits| {
                let request: ExportProfilesServiceRequest = if json {
                    let mut request = profusion_proto::from_json(&bytes)
                        .map_err(|e| ApiError::invalid(format!("invalid OTLP JSON: {e}")))?;
                    profusion_ingest::otlp::fix_hex_ids(&mut request);
                    request
                } else {
                    prost::Message::decode(bytes)
                        .map_err(|e| ApiError::invalid(format!("invalid OTLP protobuf: {e}")))?
                };
                otlp_profiles(&request, limits)
            })
            .await
    }
    .await;
    match result {
        Ok(()) if json => ([(header::CONTENT_TYPE, "application/json")], "{}").into_response(),
        Ok(()) => (
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            Vec::<u8>::new(),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

fn otlp_profiles(
    request: &ExportProfilesServiceRequest,
    limits: &Limits,
) -> Result<Vec<IncomingProfile>, ApiError> {
    if request.resource_profiles.is_empty() {
        return Err(ApiError::invalid(
            "ExportProfilesServiceRequest has no resource_profiles",
        ));
    }
    Ok(profusion_ingest::otlp::convert(
        request,
        profusion_model::time::now_nanos(),
        limits,
    )?)
}
