//! Unary RPCs over the three protocols Pyroscope's clients use on one port: Connect (binary
//! protobuf or JSON, optionally gzip-compressed), gRPC (HTTP/2, length-prefixed frames, status
//! in trailers) and gRPC-Web (status in a trailing frame).

use std::io::Read;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::BodyExt;

use crate::error::{ApiError, Code, connect_name, grpc_status};
use crate::request::RequestRules;

/// The wire protocol of a request, from its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    ConnectProto,
    ConnectJson,
    Grpc,
    GrpcWeb,
}

impl Protocol {
    pub fn detect(headers: &HeaderMap) -> Option<Self> {
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let ct = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        Some(match ct.as_str() {
            "application/proto" | "application/x-protobuf" | "application/protobuf" => {
                Self::ConnectProto
            }
            "application/json" => Self::ConnectJson,
            "application/grpc" | "application/grpc+proto" => Self::Grpc,
            "application/grpc-web" | "application/grpc-web+proto" => Self::GrpcWeb,
            _ => return None,
        })
    }
}

/// Reads a request body of at most `limit` bytes, within `timeout` when given (408 after).
pub async fn read_body(
    body: Body,
    limit: usize,
    timeout: Option<std::time::Duration>,
) -> Result<Bytes, ApiError> {
    let collect = http_body_util::Limited::new(body, limit).collect();
    let collected = match timeout {
        None => collect.await,
        Some(t) => tokio::time::timeout(t, collect).await.map_err(|_| {
            ApiError::new(
                Code::RequestTimeout,
                format!(
                    "the request body was not received within {}s (--server.http-read-timeout)",
                    t.as_secs_f64()
                ),
            )
        })?,
    };
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            Code::PayloadTooLarge,
            format!("request body is larger than the limit of {limit} bytes"),
        )),
        Err(e) => Err(ApiError::new(
            Code::RequestTimeout,
            format!("reading the request body: {e}"),
        )),
    }
}

/// Runs CPU-bound request work (decompression, decoding, parsing, conversion) on the blocking
/// pool, so a large or hostile body never holds a runtime thread that other requests and
/// `/ready` need.
pub(crate) async fn on_blocking_pool<T, F>(work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::new(Code::Internal, format!("request task failed: {e}")))?
}

/// Uncompressed bodies up to this size are decoded on the runtime thread: cheaper than a hop
/// to the pool. (A compressed one may expand to the body limit.)
const INLINE_DECODE_BYTES: usize = 64 * 1024;

/// Whether a request body is compressed: a Connect `Content-Encoding` other than identity, or
/// a gRPC frame with its compressed flag.
fn compressed(protocol: Protocol, headers: &HeaderMap, body: &[u8]) -> bool {
    match protocol {
        Protocol::ConnectProto | Protocol::ConnectJson => header_str(headers, "content-encoding")
            .is_some_and(|e| {
                let e = e.trim();
                !e.is_empty() && !e.eq_ignore_ascii_case("identity")
            }),
        Protocol::Grpc | Protocol::GrpcWeb => body.first().is_some_and(|flag| flag & 1 == 1),
    }
}

/// Decompresses a body whose encoding header says gzip, within `limit` bytes of output.
pub fn decode_content(
    encoding: Option<&str>,
    body: Bytes,
    limit: usize,
) -> Result<Bytes, ApiError> {
    match encoding.map(|e| e.trim().to_ascii_lowercase()).as_deref() {
        None | Some("" | "identity") => Ok(body),
        Some("gzip") => gunzip(&body, limit),
        Some(other) => Err(ApiError::new(
            Code::UnsupportedMediaType,
            format!("content encoding {other:?} is not supported; use gzip or identity"),
        )),
    }
}

pub fn gunzip(data: &[u8], limit: usize) -> Result<Bytes, ApiError> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| ApiError::invalid(format!("invalid gzip body: {e}")))?;
    if out.len() > limit {
        return Err(ApiError::new(
            Code::PayloadTooLarge,
            format!("decompressed body is larger than the limit of {limit} bytes"),
        ));
    }
    Ok(out.into())
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Decodes the single request message of a unary call.
pub fn decode_request<M>(
    protocol: Protocol,
    headers: &HeaderMap,
    body: Bytes,
    limit: usize,
) -> Result<M, ApiError>
where
    M: prost::Message + prost::Name + Default + serde::de::DeserializeOwned,
{
    let bytes = match protocol {
        Protocol::ConnectProto | Protocol::ConnectJson => {
            decode_content(header_str(headers, "content-encoding"), body, limit)?
        }
        Protocol::Grpc | Protocol::GrpcWeb => {
            if body.len() < 5 {
                return Err(ApiError::invalid("gRPC request has no message frame"));
            }
            let compressed = body[0] & 1 == 1;
            let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
            if body.len() != 5 + len {
                return Err(ApiError::invalid(format!(
                    "gRPC frame declares {len} bytes but the body holds {} after the header",
                    body.len() - 5
                )));
            }
            let payload = body.slice(5..);
            if compressed {
                decode_content(
                    Some(header_str(headers, "grpc-encoding").unwrap_or("unset")),
                    payload,
                    limit,
                )?
            } else {
                payload
            }
        }
    };
    if protocol == Protocol::ConnectJson {
        profusion_proto::from_json(&bytes).map_err(|e| ApiError::invalid(e.to_string()))
    } else {
        M::decode(bytes)
            .map_err(|e| ApiError::invalid(format!("invalid {} protobuf: {e}", M::full_name())))
    }
}

/// Encodes the answer of a unary call, or its error, in the request's protocol.
pub fn respond<M>(protocol: Protocol, result: Result<M, ApiError>) -> Response
where
    M: prost::Message + prost::Name + serde::Serialize,
{
    match (protocol, result) {
        (Protocol::ConnectProto, Ok(m)) => (
            [(header::CONTENT_TYPE, "application/proto")],
            m.encode_to_vec(),
        )
            .into_response(),
        (Protocol::ConnectJson, Ok(m)) => match profusion_proto::to_json(&m) {
            Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
            Err(e) => connect_error(&ApiError::new(Code::Internal, e.to_string())),
        },
        (Protocol::ConnectProto | Protocol::ConnectJson, Err(e)) => connect_error(&e),
        (Protocol::Grpc, result) => grpc_response(result, false),
        (Protocol::GrpcWeb, result) => grpc_response(result, true),
    }
}

/// Runs a unary RPC for one tenant (writes and per-tenant state): resolves the tenant (allowed
/// to do what `need` names), reads
/// and decodes the request in the protocol its content type names, calls `handler`, and
/// encodes the answer or error the same way.
pub(crate) async fn unary<Req, Resp, F, Fut>(
    rules: &RequestRules,
    need: crate::auth::Scope,
    headers: &HeaderMap,
    body: Body,
    handler: F,
) -> Response
where
    Req: prost::Message + prost::Name + Default + serde::de::DeserializeOwned + Send + 'static,
    Resp: prost::Message + prost::Name + serde::Serialize,
    F: FnOnce(String, Req) -> Fut,
    Fut: std::future::Future<Output = Result<Resp, ApiError>>,
{
    unary_as(rules, headers, body, |h| rules.tenant(h, need), handler).await
}

/// [`unary`] for reads, which may cover several tenants (`a|b`).
pub(crate) async fn unary_read<Req, Resp, F, Fut>(
    rules: &RequestRules,
    headers: &HeaderMap,
    body: Body,
    handler: F,
) -> Response
where
    Req: prost::Message + prost::Name + Default + serde::de::DeserializeOwned + Send + 'static,
    Resp: prost::Message + prost::Name + serde::Serialize,
    F: FnOnce(profusion_model::tenant::TenantScope, Req) -> Fut,
    Fut: std::future::Future<Output = Result<Resp, ApiError>>,
{
    unary_as(rules, headers, body, |h| rules.read_scope(h), handler).await
}

pub(crate) async fn unary_as<T, Req, Resp, F, Fut>(
    rules: &RequestRules,
    headers: &HeaderMap,
    body: Body,
    tenant: impl FnOnce(&HeaderMap) -> Result<T, ApiError>,
    handler: F,
) -> Response
where
    Req: prost::Message + prost::Name + Default + serde::de::DeserializeOwned + Send + 'static,
    Resp: prost::Message + prost::Name + serde::Serialize,
    F: FnOnce(T, Req) -> Fut,
    Fut: std::future::Future<Output = Result<Resp, ApiError>>,
{
    let Some(protocol) = Protocol::detect(headers) else {
        return unsupported_content_type(
            headers,
            "application/proto, application/json, application/grpc or application/grpc-web",
        );
    };
    let result = async {
        // The tenant first, so an unauthenticated request is refused before its body is read.
        let tenant = tenant(headers)?;
        let limit = rules.body_limit_bytes;
        let bytes = rules.read_body(body).await?;
        let request: Req =
            if bytes.len() <= INLINE_DECODE_BYTES && !compressed(protocol, headers, &bytes) {
                decode_request(protocol, headers, bytes, limit)?
            } else {
                let headers = headers.clone();
                on_blocking_pool(move || decode_request(protocol, &headers, bytes, limit)).await?
            };
        handler(tenant, request).await
    }
    .await;
    respond(protocol, result)
}

/// 415 for a body whose content type is not one of `expected`.
pub(crate) fn unsupported_content_type(headers: &HeaderMap, expected: &str) -> Response {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("(none)");
    ApiError::new(
        Code::UnsupportedMediaType,
        format!("unsupported content type {ct:?}; expected {expected}"),
    )
    .into_response()
}

/// `unimplemented` in the caller's protocol, or a plain 404 for non-RPC callers.
pub(crate) fn unimplemented(headers: &HeaderMap, what: &str) -> Response {
    let message = format!("no such method: {what}");
    match Protocol::detect(headers) {
        Some(protocol) => respond::<profusion_proto::push::v1::PushResponse>(
            protocol,
            Err(ApiError::new(Code::Unimplemented, message)),
        ),
        None => (StatusCode::NOT_FOUND, message + "\n").into_response(),
    }
}

fn log_error(e: &ApiError) {
    if matches!(e.code, Code::Internal | Code::Unavailable) {
        tracing::error!(code = connect_name(e.code), message = %e.message, "rpc failed");
    } else {
        tracing::debug!(code = connect_name(e.code), message = %e.message, "rpc refused");
    }
}

/// A Connect unary error: the code's HTTP status and a JSON body `{code, message}`.
pub fn connect_error(e: &ApiError) -> Response {
    log_error(e);
    let body = serde_json::json!({ "code": connect_name(e.code), "message": e.message });
    let status = e.connect_status();
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn frame(flag: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + payload.len());
    b.put_u8(flag);
    b.put_u32(payload.len() as u32);
    b.put_slice(payload);
    b.freeze()
}

/// gRPC messages are percent-encoded in the `grpc-message` header.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn grpc_response<M: prost::Message>(result: Result<M, ApiError>, web: bool) -> Response {
    let content_type = if web {
        "application/grpc-web+proto"
    } else {
        "application/grpc"
    };
    let (status, message, data) = match result {
        Ok(m) => (0u8, String::new(), Some(frame(0, &m.encode_to_vec()))),
        Err(e) => {
            log_error(&e);
            (grpc_status(e.code), percent_encode(&e.message), None)
        }
    };
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(u16::from(status)));
    if let Ok(v) = HeaderValue::from_str(&message)
        && !message.is_empty()
    {
        trailers.insert("grpc-message", v);
    }
    if web {
        let mut body = BytesMut::new();
        if let Some(d) = data {
            body.extend_from_slice(&d);
        }
        let mut text = String::new();
        for (k, v) in &trailers {
            text.push_str(&format!("{}: {}\r\n", k, v.to_str().unwrap_or("")));
        }
        body.extend_from_slice(&frame(0x80, text.as_bytes()));
        return ([(header::CONTENT_TYPE, content_type)], body.freeze()).into_response();
    }
    match data {
        // Trailers-only response: the status travels in the headers.
        None => {
            let mut response =
                ([(header::CONTENT_TYPE, content_type)], Body::empty()).into_response();
            response.headers_mut().extend(trailers);
            response
        }
        Some(d) => {
            let frames = futures_util::stream::iter([
                Ok::<_, std::convert::Infallible>(http_body::Frame::data(d)),
                Ok(http_body::Frame::trailers(trailers)),
            ]);
            let body = Body::new(http_body_util::StreamBody::new(frames));
            ([(header::CONTENT_TYPE, content_type)], body).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_message_encoding() {
        assert_eq!(
            percent_encode("bad 100% ünïcode\n"),
            "bad 100%25 %C3%BCn%C3%AFcode%0A"
        );
    }
}
