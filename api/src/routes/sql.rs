//! `POST /api/v1/sql`: a read-only SQL query over the tenant's tables, for curl and notebooks.
//! The query is the body (plain text, or JSON `{"query": "..."}`); the answer is JSON rows
//! (the default), CSV or an Arrow IPC stream, as the `Accept` header asks. The query goes
//! through the read service like every read: the tenant's scope, the scheduler's fair queues,
//! the query memory budget.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::{csv, ipc, json};
use http::{HeaderMap, header};
use profusion_engine::querier::SqlTable;
use profusion_engine::sql::SqlRequest;

use super::ReadApi;
use crate::error::{ApiError, Code};

/// Content types of the answer.
const JSON: &str = "application/json";
const CSV: &str = "text/csv";
const ARROW: &str = "application/vnd.apache.arrow.stream";

/// The SQL endpoint's routes.
pub fn routes(api: Arc<ReadApi>) -> Router {
    Router::new()
        .route("/api/v1/sql", post(sql))
        .with_state(api)
}

/// `POST /api/v1/sql`.
async fn sql(
    State(api): State<Arc<ReadApi>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // The tenant (and the token) first, so a refused request's body is never read.
    let scope = api.rules.read_scope(&headers)?;
    // Chosen before the query runs: an unsupported format costs no query.
    let format = Format::accepted(&headers)?;
    let body = api.rules.read_body(body).await?;
    let query = query_of(&headers, &body)?;
    let ctx = api.read.context(scope);
    let table = api.read.sql(&ctx, SqlRequest::query(query)).await?;
    format.encode(&table.value)
}

/// The query text of the body: the body itself, or its `query` field when it is JSON.
fn query_of(headers: &HeaderMap, body: &[u8]) -> Result<String, ApiError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(JSON));
    if json {
        #[derive(serde::Deserialize)]
        struct Body {
            query: String,
        }
        let parsed: Body = serde_json::from_slice(body).map_err(|e| {
            ApiError::invalid(format!("the JSON body must be {{\"query\": \"...\"}}: {e}"))
        })?;
        return Ok(parsed.query);
    }
    String::from_utf8(body.to_vec())
        .map_err(|e| ApiError::invalid(format!("the query is not UTF-8: {e}")))
}

/// An answer's encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
    Arrow,
}

impl Format {
    /// The first format of `Accept` this endpoint answers in; JSON when none is asked for.
    fn accepted(headers: &HeaderMap) -> Result<Self, ApiError> {
        let Some(accept) = headers.get(header::ACCEPT) else {
            return Ok(Self::Json);
        };
        let accept = accept
            .to_str()
            .map_err(|_| ApiError::invalid("the Accept header is not ASCII"))?;
        for media in accept.split(',') {
            let media = media.split(';').next().unwrap_or("").trim();
            match media {
                JSON | "*/*" | "application/*" | "" => return Ok(Self::Json),
                CSV | "text/*" => return Ok(Self::Csv),
                ARROW => return Ok(Self::Arrow),
                _ => {}
            }
        }
        Err(ApiError::new(
            Code::InvalidArgument,
            format!("cannot answer in {accept:?}; ask for {JSON}, {CSV} or {ARROW}"),
        ))
    }

    fn encode(self, table: &SqlTable) -> Result<Response, ApiError> {
        let failed = |e: datafusion::arrow::error::ArrowError| {
            ApiError::new(Code::Internal, format!("encoding the answer: {e}"))
        };
        let batches: Vec<&RecordBatch> = table.batches.iter().collect();
        let (content_type, bytes) = match self {
            Self::Json => {
                let mut writer = json::ArrayWriter::new(Vec::new());
                writer.write_batches(&batches).map_err(failed)?;
                writer.finish().map_err(failed)?;
                let mut out = writer.into_inner();
                // An answer with no rows is an empty array, not an empty body.
                if out.is_empty() {
                    out.extend(b"[]");
                }
                (JSON, out)
            }
            Self::Csv => {
                let mut writer = csv::WriterBuilder::new()
                    .with_header(true)
                    .build(Vec::new());
                for batch in batches {
                    writer.write(batch).map_err(failed)?;
                }
                let mut out = writer.into_inner();
                if table.batches.iter().all(|b| b.num_rows() == 0) {
                    // The header alone, which the writer only writes with a batch.
                    out = table
                        .schema
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                        .into_bytes();
                    out.push(b'\n');
                }
                (CSV, out)
            }
            Self::Arrow => {
                let mut writer = ipc::writer::StreamWriter::try_new(Vec::new(), &table.schema)
                    .map_err(failed)?;
                for batch in batches {
                    writer.write(batch).map_err(failed)?;
                }
                writer.finish().map_err(failed)?;
                (ARROW, writer.into_inner().map_err(failed)?)
            }
        };
        Ok(([(header::CONTENT_TYPE, content_type)], bytes).into_response())
    }
}
