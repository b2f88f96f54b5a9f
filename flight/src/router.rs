//! One Flight service per port: the head protocol and Flight SQL share gRPC's
//! `arrow.flight.protocol.FlightService`, so a process serving both routes each call by what it
//! carries, before either decodes it.
//!
//! Their payloads are disjoint by construction: Flight SQL tickets and commands are protobuf
//! `Any` messages whose type URL names `arrow.flight.protocol.sql`, head tickets are JSON
//! objects and head actions are named `head.*`. Calls only Flight SQL makes (`GetFlightInfo`,
//! `DoPut`, ...) go to it; a process without it answers them `unimplemented`, naming the role
//! that serves them.

use std::pin::Pin;

use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures_util::{Stream, StreamExt};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use crate::head_service::HeadFlightService;
use crate::protocol::{RELEASE, SNAPSHOT, SUMMARY};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The type URL prefix of every Flight SQL message.
const FLIGHT_SQL_TYPE: &str = "type.googleapis.com/arrow.flight.protocol.sql.";

/// The Flight service of a process: the ingester's head service, Flight SQL, or both.
#[derive(Debug)]
pub struct FlightRouter<S> {
    head: Option<HeadFlightService>,
    sql: Option<S>,
}

impl<S> FlightRouter<S>
where
    S: FlightService,
{
    pub fn new(head: Option<HeadFlightService>, sql: Option<S>) -> Self {
        Self { head, sql }
    }

    /// The tonic service, to mount on the process's port. Messages in are parameters and
    /// commands (16 MiB is plenty); messages out are split by the encoders.
    pub fn into_server(self) -> FlightServiceServer<Self> {
        FlightServiceServer::new(self)
            .max_decoding_message_size(16 << 20)
            .max_encoding_message_size(usize::MAX)
    }

    fn sql(&self) -> Result<&S, Status> {
        self.sql.as_ref().ok_or_else(|| {
            Status::unimplemented(
                "Flight SQL is served by the processes that serve reads (the query-frontend, \
                 or --target=all)",
            )
        })
    }

    fn head(&self) -> Result<&HeadFlightService, Status> {
        self.head
            .as_ref()
            .ok_or_else(|| Status::unimplemented("this process runs no ingester head"))
    }
}

/// Whether `bytes` are a Flight SQL message (a protobuf `Any` of a Flight SQL type).
fn is_flight_sql(bytes: &[u8]) -> bool {
    // A JSON head ticket starts with `{`; an `Any` with its type URL, field 1 (tag 0x0a).
    bytes.first() == Some(&0x0a)
        && arrow_flight::sql::Any::decode(bytes)
            .is_ok_and(|any| any.type_url.starts_with(FLIGHT_SQL_TYPE))
}

/// Boxes a stream response of either service.
fn boxed<T, St>(response: Response<St>) -> Response<BoxStream<T>>
where
    St: Stream<Item = Result<T, Status>> + Send + 'static,
{
    response.map(|s| Box::pin(s) as BoxStream<T>)
}

#[tonic::async_trait]
impl<S> FlightService for FlightRouter<S>
where
    S: FlightService,
{
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = BoxStream<FlightData>;
    type DoPutStream = BoxStream<PutResult>;
    type DoActionStream = BoxStream<arrow_flight::Result>;
    type ListActionsStream = BoxStream<ActionType>;
    type DoExchangeStream = BoxStream<FlightData>;

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        if is_flight_sql(&request.get_ref().ticket) {
            return Ok(boxed(self.sql()?.do_get(request).await?));
        }
        Ok(boxed(self.head()?.do_get(request).await?))
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        if [SNAPSHOT, SUMMARY, RELEASE].contains(&request.get_ref().r#type.as_str()) {
            return Ok(boxed(self.head()?.do_action(request).await?));
        }
        Ok(boxed(self.sql()?.do_action(request).await?))
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let mut actions: Vec<Result<ActionType, Status>> = Vec::new();
        if let Some(head) = &self.head {
            let listed = head.list_actions(Request::new(Empty {})).await?;
            actions.extend(listed.into_inner().collect::<Vec<_>>().await);
        }
        if let Some(sql) = &self.sql {
            let listed = sql.list_actions(request).await?;
            actions.extend(listed.into_inner().collect::<Vec<_>>().await);
        }
        Ok(Response::new(Box::pin(futures_util::stream::iter(actions))))
    }

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Ok(boxed(self.sql()?.handshake(request).await?))
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Ok(boxed(self.sql()?.list_flights(request).await?))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.sql()?.get_flight_info(request).await
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        self.sql()?.poll_flight_info(request).await
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        self.sql()?.get_schema(request).await
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        Ok(boxed(self.sql()?.do_put(request).await?))
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Ok(boxed(self.sql()?.do_exchange(request).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flight_sql_messages_and_head_tickets_are_told_apart() {
        let any = arrow_flight::sql::Any {
            type_url: format!("{FLIGHT_SQL_TYPE}TicketStatementQuery"),
            value: b"handle".to_vec().into(),
        };
        assert!(is_flight_sql(&any.encode_to_vec()));
        assert!(!is_flight_sql(br#"{"id":1,"request":{}}"#));
        assert!(!is_flight_sql(b""));
        let other = arrow_flight::sql::Any {
            type_url: "type.googleapis.com/something.Else".into(),
            value: Default::default(),
        };
        assert!(!is_flight_sql(&other.encode_to_vec()));
    }
}
