//! Flight SQL on the main port, for ADBC, JDBC and `pyarrow.flight` clients: the same SQL as
//! `POST /api/v1/sql` (read-only, in the tenant's scope, through the read service's queues
//! and memory budget), with Flight SQL's metadata calls and prepared statements.
//!
//! Stateless: a prepared statement's handle is its query and bound parameters, a ticket is a
//! handle and a query id, so any frontend answers any call and nothing waits to expire. A
//! query is planned for `GetFlightInfo` (its schema) and run by `DoGet`. The tenant is the
//! `x-scope-orgid` metadata of each call, as on every API.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandStatementQuery, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    SqlSupportedTransaction, TicketStatementQuery,
};
use arrow_flight::{
    Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, FlightData,
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage,
    SchemaAsIpc, Ticket,
};
use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use futures_util::{Stream, StreamExt, TryStreamExt};
use profusion_engine::service::{QueryContext, ReadService};
use profusion_engine::sql::{self, SqlRequest};
use profusion_engine::table::cast_to_schema;
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use crate::error::ApiError;
use crate::request::RequestRules;

type DoGetStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

/// Flight SQL over a read service.
#[derive(Debug)]
pub struct FlightSqlApi {
    rules: RequestRules,
    read: Arc<dyn ReadService>,
    /// The queries `DoGet` runs now, by query id, for `CancelFlightInfo`.
    running: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
}

/// A prepared statement: its query and the parameters bound to it (an Arrow IPC row).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Handle {
    query: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    params: Vec<u8>,
}

/// What a ticket carries: a statement and the id of this run of it.
#[derive(Debug, Serialize, Deserialize)]
struct StatementTicket {
    #[serde(flatten)]
    handle: Handle,
    id: String,
}

fn decode<T: for<'de> Deserialize<'de>>(what: &str, bytes: &[u8]) -> Result<T, Status> {
    serde_json::from_slice(bytes)
        .map_err(|e| Status::invalid_argument(format!("not a Profusion {what}: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("handles serialize"))
}

/// A failure as a gRPC status, by the one mapping of codes.
fn status(e: impl Into<ApiError>) -> Status {
    let e: ApiError = e.into();
    Status::new(
        tonic::Code::from_i32(i32::from(crate::error::grpc_status(e.code))),
        e.message,
    )
}

fn arrow_status(e: datafusion::arrow::error::ArrowError) -> Status {
    Status::internal(format!("encoding the answer: {e}"))
}

/// The type a client is sent for `data_type`: dictionaries hydrated (Flight's encoder sends
/// their values) and string and binary views as plain strings and binaries, which every
/// Flight SQL client reads (JDBC and older ones do not read views).
fn flight_type(data_type: &DataType) -> DataType {
    let field = |f: &FieldRef| -> FieldRef {
        Arc::new(
            f.as_ref()
                .clone()
                .with_data_type(flight_type(f.data_type())),
        )
    };
    match data_type {
        DataType::Dictionary(_, values) => flight_type(values),
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::List(f) => DataType::List(field(f)),
        DataType::LargeList(f) => DataType::LargeList(field(f)),
        DataType::Map(f, sorted) => DataType::Map(field(f), *sorted),
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(field).collect()),
        other => other.clone(),
    }
}

fn flight_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new_with_metadata(
        schema
            .fields()
            .iter()
            .map(|f| {
                f.as_ref()
                    .clone()
                    .with_data_type(flight_type(f.data_type()))
            })
            .collect::<Vec<Field>>(),
        schema.metadata().clone(),
    ))
}

/// A schema as Flight SQL carries it in messages (an IPC schema message).
fn schema_bytes(schema: &Schema) -> Result<Bytes, Status> {
    let message: IpcMessage = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(arrow_status)?;
    Ok(message.0)
}

/// Rows as a `DoGet` answer: the schema first, even with no rows (clients expect it).
fn rows_stream(schema: SchemaRef, batches: Vec<RecordBatch>) -> DoGetStream {
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures_util::stream::iter(batches.into_iter().map(Ok)))
        .map_err(Status::from);
    Box::pin(stream)
}

/// A metadata command's answer: the one batch its builder built, in the builder's schema.
fn metadata_rows<E: Into<Status>>(
    schema: SchemaRef,
    batch: Result<RecordBatch, E>,
) -> Result<Response<DoGetStream>, Status> {
    let batch = batch.map_err(Into::into)?;
    Ok(Response::new(rows_stream(schema, vec![batch])))
}

/// What this server says of itself (`GetSqlInfo`).
fn sql_info() -> &'static SqlInfoData {
    static INFO: OnceLock<SqlInfoData> = OnceLock::new();
    INFO.get_or_init(|| {
        let mut info = SqlInfoDataBuilder::new();
        info.append(SqlInfo::FlightSqlServerName, "Profusion");
        info.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        info.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
        info.append(SqlInfo::FlightSqlServerReadOnly, true);
        info.append(SqlInfo::FlightSqlServerSql, true);
        info.append(SqlInfo::FlightSqlServerSubstrait, false);
        info.append(
            SqlInfo::FlightSqlServerTransaction,
            SqlSupportedTransaction::None as i32,
        );
        info.append(SqlInfo::FlightSqlServerCancel, true);
        info.append(SqlInfo::FlightSqlServerBulkIngestion, false);
        info.append(SqlInfo::FlightSqlServerStatementTimeout, 0i32);
        // Bits of the minimum and core grammars: DataFusion's SQL.
        info.append(SqlInfo::SqlSupportedGrammar, 0b11i32);
        info.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
        info.append(SqlInfo::SqlTransactionsSupported, false);
        info.build().expect("the server's SQL info builds")
    })
}

/// The table types of [`sql::TABLES`].
fn table_type(table: &str) -> &'static str {
    if table == "sample_stacks" {
        "VIEW"
    } else {
        "TABLE"
    }
}

impl FlightSqlApi {
    pub fn new(rules: RequestRules, read: Arc<dyn ReadService>) -> Self {
        Self {
            rules,
            read,
            running: Arc::default(),
        }
    }

    /// The read context of a call's tenant.
    fn context(&self, metadata: &MetadataMap) -> Result<QueryContext, Status> {
        let headers = metadata.clone().into_headers();
        let scope = self.rules.read_scope(&headers).map_err(status)?;
        Ok(self.read.context(scope))
    }

    /// The schema `query` answers in, as clients are sent it.
    async fn plan(&self, ctx: &QueryContext, handle: &Handle) -> Result<SchemaRef, Status> {
        let request = SqlRequest {
            query: handle.query.clone(),
            params: sql::params_from_ipc(&handle.params).map_err(status)?,
            schema_only: true,
        };
        let table = self.read.sql(ctx, request).await.map_err(status)?;
        Ok(flight_schema(&table.value.schema))
    }

    /// The `FlightInfo` of a statement: its schema, and one endpoint whose ticket runs it.
    async fn statement_info(
        &self,
        handle: Handle,
        metadata: &MetadataMap,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let ctx = self.context(metadata)?;
        let schema = self.plan(&ctx, &handle).await?;
        let ticket = TicketStatementQuery {
            statement_handle: encode(&StatementTicket {
                handle,
                id: uuid::Uuid::new_v4().to_string(),
            }),
        };
        let endpoint =
            FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec()));
        let info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(arrow_status)?
            .with_endpoint(endpoint)
            .with_descriptor(descriptor);
        Ok(Response::new(info))
    }

    /// The `FlightInfo` of a metadata command: its schema, and a ticket that is the command.
    fn metadata_info(
        command: &impl ProstMessageExt,
        schema: &Schema,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let endpoint =
            FlightEndpoint::new().with_ticket(Ticket::new(command.as_any().encode_to_vec()));
        Ok(Response::new(
            FlightInfo::new()
                .try_with_schema(schema)
                .map_err(arrow_status)?
                .with_endpoint(endpoint)
                .with_descriptor(descriptor),
        ))
    }

    /// Cancels the running queries of `info`'s tickets; whether there were any.
    fn cancel(&self, tickets: impl Iterator<Item = Vec<u8>>) -> bool {
        let running = self.running.lock().expect("running queries");
        let mut cancelled = false;
        for ticket in tickets {
            let id = Any::decode(ticket.as_slice())
                .ok()
                .and_then(|any| any.unpack::<TicketStatementQuery>().ok().flatten())
                .and_then(|t| serde_json::from_slice::<StatementTicket>(&t.statement_handle).ok())
                .map(|t| t.id);
            if let Some(notify) = id.and_then(|id| running.get(&id).cloned()) {
                notify.notify_one();
                cancelled = true;
            }
        }
        cancelled
    }
}

/// Removes a query from the running ones when its `DoGet` ends, however it ends.
struct Running {
    queries: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
    id: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.queries
            .lock()
            .expect("running queries")
            .remove(&self.id);
    }
}

type HandshakeStream = Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl FlightSqlService for FlightSqlApi {
    type FlightService = FlightSqlApi;

    /// Flight's authentication step, which clients given a user and password (ADBC, JDBC)
    /// take first: the credentials are checked as every call's are, and the token is handed
    /// back as the `authorization: Bearer` header the client then sends on each call.
    async fn do_handshake(
        &self,
        request: Request<tonic::Streaming<HandshakeRequest>>,
    ) -> Result<Response<HandshakeStream>, Status> {
        let headers = request.metadata().clone().into_headers();
        self.rules.read_scope(&headers).map_err(status)?;
        let answer = HandshakeResponse {
            protocol_version: 0,
            payload: Bytes::new(),
        };
        let mut response: Response<HandshakeStream> =
            Response::new(Box::pin(futures_util::stream::once(async { Ok(answer) })));
        if let Some(token) = crate::auth::presented_token(&headers)
            && let Ok(value) = format!("Bearer {token}").parse()
        {
            response.metadata_mut().insert("authorization", value);
        }
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let handle = Handle {
            query: query.query,
            params: Vec::new(),
        };
        let (metadata, _, descriptor) = request.into_parts();
        self.statement_info(handle, &metadata, descriptor).await
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let handle: Handle = decode(
            "prepared statement handle",
            &query.prepared_statement_handle,
        )?;
        let (metadata, _, descriptor) = request.into_parts();
        self.statement_info(handle, &metadata, descriptor).await
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let ticket: StatementTicket = decode("ticket", &ticket.statement_handle)?;
        let ctx = self.context(request.metadata())?;
        let sql = SqlRequest {
            query: ticket.handle.query,
            params: sql::params_from_ipc(&ticket.handle.params).map_err(status)?,
            schema_only: false,
        };
        let cancelled = Arc::new(Notify::new());
        let _running = {
            let mut running = self.running.lock().expect("running queries");
            running.insert(ticket.id.clone(), Arc::clone(&cancelled));
            Running {
                queries: Arc::clone(&self.running),
                id: ticket.id,
            }
        };
        // A client that goes away drops this future, which cancels the query; one that
        // cancels its FlightInfo wakes `cancelled`.
        let table = tokio::select! {
            table = self.read.sql(&ctx, sql) => table.map_err(status)?,
            () = cancelled.notified() => {
                return Err(Status::cancelled("the query was cancelled (CancelFlightInfo)"));
            }
        };
        let schema = flight_schema(&table.value.schema);
        let batches = table
            .value
            .batches
            .iter()
            .map(|b| cast_to_schema(b, &schema))
            .collect::<datafusion::error::Result<Vec<_>>>()
            .map_err(|e| Status::internal(format!("encoding the answer: {e}")))?;
        // The answer stays charged to the budget until it is sent.
        let stream = rows_stream(schema, batches).map(move |data| {
            let _held = &table;
            data
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let ticket = TicketStatementQuery {
            statement_handle: encode(&StatementTicket {
                handle: decode(
                    "prepared statement handle",
                    &query.prepared_statement_handle,
                )?,
                id: uuid::Uuid::new_v4().to_string(),
            }),
        };
        self.do_get_statement(ticket, request).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let ctx = self.context(request.metadata())?;
        let handle = Handle {
            query: query.query,
            params: Vec::new(),
        };
        // Planned now: a statement that cannot run is refused before any parameter is bound.
        let schema = self.plan(&ctx, &handle).await?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: encode(&handle),
            dataset_schema: schema_bytes(&schema)?,
            parameter_schema: Bytes::new(),
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let mut handle: Handle = decode(
            "prepared statement handle",
            &query.prepared_statement_handle,
        )?;
        let batches: Vec<RecordBatch> =
            arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
                request.into_inner().map_err(FlightError::from),
            )
            .try_collect()
            .await
            .map_err(|e| Status::invalid_argument(format!("parameters: {e}")))?;
        let rows: Vec<&RecordBatch> = batches.iter().filter(|b| b.num_rows() > 0).collect();
        let params = match rows.as_slice() {
            [] => Vec::new(),
            [row] => sql::params_of_row(row).map_err(status)?,
            _ => {
                return Err(Status::invalid_argument(
                    "parameters bind one row per execution, not several batches",
                ));
            }
        };
        handle.params = sql::params_ipc(&params).map_err(status)?;
        // The bound statement is a new handle: nothing is kept here.
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(encode(&handle)),
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<(), Status> {
        // Handles hold the statement themselves: nothing to free.
        Ok(())
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        let action = request.into_inner();
        let result = match action.r#type.as_str() {
            "CancelFlightInfo" => {
                let cancel = CancelFlightInfoRequest::decode(action.body.as_ref())
                    .map_err(|e| Status::invalid_argument(format!("CancelFlightInfo body: {e}")))?;
                let tickets = cancel
                    .info
                    .into_iter()
                    .flat_map(|info| info.endpoint)
                    .filter_map(|e| e.ticket.map(|t| t.ticket.to_vec()));
                // A query not running here has finished, or runs on another frontend.
                let status = if self.cancel(tickets) {
                    CancelStatus::Cancelled
                } else {
                    CancelStatus::NotCancellable
                };
                Some(CancelFlightInfoResult::new(status).encode_to_vec())
            }
            // Sessions hold nothing here.
            "CloseSession" => None,
            other => {
                return Err(Status::unimplemented(format!(
                    "no action {other:?}: Profusion's Flight SQL is read-only and stateless"
                )));
            }
        };
        let results = result.map(|body| Ok(arrow_flight::Result { body: body.into() }));
        Ok(Response::new(Box::pin(futures_util::stream::iter(results))))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(sql_info()).schema();
        Self::metadata_info(&query, &schema, request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let builder = query.into_builder(sql_info());
        metadata_rows(builder.schema(), builder.build())
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        Self::metadata_info(&query, &schema, request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut builder = query.into_builder();
        builder.append(sql::CATALOG);
        metadata_rows(builder.schema(), builder.build())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        Self::metadata_info(&query, &schema, request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut builder = query.into_builder();
        builder.append(sql::CATALOG, sql::SCHEMA);
        metadata_rows(builder.schema(), builder.build())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        Self::metadata_info(&query, &schema, request.into_inner())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let include_schema = query.include_schema;
        let mut builder = query.into_builder();
        let ctx = include_schema
            .then(|| self.context(request.metadata()))
            .transpose()?;
        for table in sql::TABLES {
            let schema = match &ctx {
                // The tables' schemas are the scope's: planned as any query is.
                Some(ctx) => {
                    let handle = Handle {
                        query: format!("SELECT * FROM {table}"),
                        params: Vec::new(),
                    };
                    self.plan(ctx, &handle).await?
                }
                None => Arc::new(Schema::empty()),
            };
            builder
                .append(sql::CATALOG, sql::SCHEMA, table, table_type(table), &schema)
                .map_err(Status::from)?;
        }
        metadata_rows(builder.schema(), builder.build())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        Self::metadata_info(&query, &schema, request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut builder = query.into_builder();
        builder.append("TABLE");
        builder.append("VIEW");
        metadata_rows(builder.schema(), builder.build())
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
