//! Arrow Flight SQL: the door for ADBC (pandas, polars), JDBC (DBeaver) and other Flight SQL
//! clients.
//!
//! Data scientists' tools fetch Arrow over gRPC without a JSON detour. Statements, prepared
//! statements, catalog, schema, table and table-type listings and the
//! SqlInfo clients ask for on connect are served; results stream batch by batch from the same
//! [`QueryEngine`] as `POST /sql`, under the same limits and read-only guard. Prepared
//! statements take parameters (`?` or `$1`, bound with DoPut). Handles and tickets carry the
//! SQL text itself, and bound values ([`prepared`]), so the server keeps no per-client state. With tokens
//! configured, every call needs `authorization: Bearer <token>`; a client that only knows
//! user and password (ADBC's `username`/`password`) gets the bearer from `Handshake` by giving
//! the token as password.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementIngest, CommandStatementQuery,
    CommandStatementUpdate, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage,
    SchemaAsIpc, Ticket,
};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::arrow::record_batch::RecordBatch;
use futures::{Stream, TryStreamExt};
use prost::Message;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status, Streaming};

mod prepared;

use crate::auth::Tokens;
use crate::doorway::{DoorCounters, Doorway};
use crate::query::{QueryEngine, QueryError};

/// Requests in flight on one connection at most.
const MAX_CONCURRENT_CALLS_PER_CONNECTION: usize = 16;

/// What the server says of itself when a client asks for SqlInfo.
static SQL_INFO: LazyLock<SqlInfoData> = LazyLock::new(|| {
    let mut builder = SqlInfoDataBuilder::new();
    builder.append(SqlInfo::FlightSqlServerName, "flowdaq");
    builder.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    builder.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
    builder.append(SqlInfo::FlightSqlServerReadOnly, true);
    builder.append(SqlInfo::FlightSqlServerSql, true);
    builder.append(SqlInfo::FlightSqlServerSubstrait, false);
    builder.append(SqlInfo::FlightSqlServerTransaction, 0_i32);
    builder.append(SqlInfo::FlightSqlServerCancel, false);
    builder.append(SqlInfo::SqlDdlCatalog, false);
    builder.append(SqlInfo::SqlDdlSchema, false);
    builder.append(SqlInfo::SqlDdlTable, false);
    builder.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    builder.append(SqlInfo::SqlIdentifierCase, 3_i32); // case-insensitive (folded unless quoted)
    builder.append(SqlInfo::SqlQuotedIdentifierCase, 2_i32); // case-sensitive
    builder.append(SqlInfo::SqlTransactionsSupported, false);
    // A constant, valid table of values: building it cannot fail.
    builder.build().expect("static SqlInfo data")
});

/// The Flight SQL service over one engine.
#[derive(Clone)]
pub struct FlightSql {
    query: QueryEngine,
    tokens: Tokens,
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error("flight_sql listen {address}: {source}")]
pub struct BindError {
    address: String,
    source: std::io::Error,
}

/// Binds `address` and serves Flight SQL until `shutdown`; returns the bound address and task.
///
/// # Errors
/// [`BindError`] when the address cannot be bound.
pub async fn serve(
    address: &str,
    query: QueryEngine,
    tokens: Tokens,
    max_connections: usize,
    counters: Arc<DoorCounters>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(SocketAddr, JoinHandle<()>), BindError> {
    let bind_error = |source| BindError {
        address: address.to_string(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    let service = FlightServiceServer::new(FlightSql { query, tokens });
    let incoming = Doorway::new("flight_sql", listener, max_connections, counters).into_stream();
    let task = tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        let served = tonic::transport::Server::builder()
            .concurrency_limit_per_connection(MAX_CONCURRENT_CALLS_PER_CONNECTION)
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, stop)
            .await;
        if let Err(err) = served {
            tracing::error!(%err, "Flight SQL endpoint stopped");
        }
    });
    Ok((local, task))
}

type FlightDataStream =
    Pin<Box<dyn Stream<Item = Result<arrow_flight::FlightData, Status>> + Send>>;

impl FlightSql {
    /// Refuses a call without an accepted bearer token.
    fn authorize(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let header = metadata
            .get("authorization")
            .and_then(|value| value.to_str().ok());
        if self.tokens.allows_bearer(header) {
            Ok(())
        } else {
            Err(Status::unauthenticated(
                "send authorization: Bearer <token> (or handshake with the token as password)",
            ))
        }
    }

    /// A FlightInfo whose one endpoint's ticket is `ticket`, for a result of `schema`.
    fn info(
        schema: &Schema,
        ticket: impl ProstMessageExt,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let endpoint =
            FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec()));
        let info = FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Status::internal(format!("cannot encode the schema: {e}")))?
            .with_endpoint(endpoint)
            .with_descriptor(descriptor)
            .with_ordered(true);
        Ok(Response::new(info))
    }

    /// A listing's FlightInfo (catalogs, schemas, tables, SqlInfo), after the token check.
    fn metadata_info(
        &self,
        request: Request<FlightDescriptor>,
        schema: &Schema,
        query: impl ProstMessageExt,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(request.metadata())?;
        Self::info(schema, query, request.into_inner())
    }

    /// Plans `sql` for its schema and answers with a ticket that runs it.
    async fn statement_info(
        &self,
        sql: &str,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = self.query.schema(sql).await.map_err(query_status)?;
        let ticket = TicketStatementQuery {
            statement_handle: sql.as_bytes().to_vec().into(),
        };
        Self::info(&schema, ticket, descriptor)
    }

    /// Runs `sql` and streams its batches.
    async fn run(&self, sql: &[u8]) -> Result<Response<FlightDataStream>, Status> {
        let sql = std::str::from_utf8(sql)
            .map_err(|_| Status::invalid_argument("the statement handle is not UTF-8 SQL"))?;
        let stream = self.query.stream(sql).await.map_err(query_status)?;
        Ok(encode_query(stream))
    }
}

/// Flight data for a running query's batches.
fn encode_query(stream: crate::query::QueryStream) -> Response<FlightDataStream> {
    let schema = stream.schema();
    let batches = stream.map_err(|err| FlightError::Tonic(Box::new(query_status(err))));
    encode(schema, batches)
}

/// Flight data for `schema` (sent even when no batch follows) and `batches`.
fn encode(
    schema: SchemaRef,
    batches: impl Stream<Item = Result<RecordBatch, FlightError>> + Send + 'static,
) -> Response<FlightDataStream> {
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(batches)
        .map_err(Status::from);
    Response::new(Box::pin(stream))
}

/// A schema as the IPC message Flight SQL carries it in.
fn schema_bytes(schema: &Schema) -> Result<prost::bytes::Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: datafusion::arrow::error::ArrowError| {
            Status::internal(format!("cannot encode the schema: {e}"))
        })?;
    Ok(bytes)
}

/// One metadata batch as flight data.
fn encode_one<E: std::fmt::Display>(
    schema: SchemaRef,
    batch: Result<RecordBatch, E>,
) -> Result<Response<FlightDataStream>, Status> {
    let batch = batch.map_err(|e| Status::internal(e.to_string()))?;
    Ok(encode(schema, futures::stream::once(async { Ok(batch) })))
}

/// The gRPC status of a query failure: the client's fault, a limit, or the server's.
fn query_status(err: QueryError) -> Status {
    match err {
        QueryError::ReadOnly(_) => Status::permission_denied(err.to_string()),
        QueryError::Limit(crate::query::limits::LimitError::TimedOut { .. }) => {
            Status::deadline_exceeded(err.to_string())
        }
        QueryError::Limit(_) => Status::resource_exhausted(err.to_string()),
        QueryError::DataFusion(_) => Status::invalid_argument(err.to_string()),
        QueryError::Aborted(_) | QueryError::Threads(_) => Status::internal(err.to_string()),
    }
}

impl FlightSql {
    /// Every write is refused, after the token check (an anonymous client learns nothing).
    fn refuse_write<T>(&self, metadata: &MetadataMap) -> Result<T, Status> {
        self.authorize(metadata)?;
        Err(Status::permission_denied(
            "flowdaq is read-only over SQL: data arrives through the ingest sockets",
        ))
    }
}

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("");
        let token = basic_password(header)
            .or_else(|| crate::auth::bearer_token(header).map(str::to_string));
        if !self.tokens.allows(token.as_deref()) {
            return Err(Status::unauthenticated(
                "give a configured token as the password (basic) or bearer",
            ));
        }
        let token = if self.tokens.required() {
            token.unwrap_or_default()
        } else {
            String::new()
        };
        let answer = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into(),
        };
        let mut response: Response<Pin<Box<dyn Stream<Item = _> + Send>>> =
            Response::new(Box::pin(futures::stream::iter([Ok(answer)])));
        if !token.is_empty() {
            let value = MetadataValue::try_from(format!("Bearer {token}"))
                .map_err(|_| Status::invalid_argument("the token is not a valid header value"))?;
            response.metadata_mut().insert("authorization", value);
        }
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(request.metadata())?;
        self.statement_info(&query.query, request.into_inner())
            .await
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorize(request.metadata())?;
        self.run(&ticket.statement_handle).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        self.authorize(request.metadata())?;
        let sql = crate::query::placeholders::number_question_marks(&query.query)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (schema, parameters) = self.query.prepare(&sql).await.map_err(query_status)?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: sql.into_bytes().into(),
            dataset_schema: schema_bytes(&schema)?,
            parameter_schema: schema_bytes(&parameters)?,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        // The handle is the statement's text: nothing is held to release.
        self.authorize(request.metadata())
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(request.metadata())?;
        let statement = prepared::decode(&query.prepared_statement_handle)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let schema = self
            .query
            .schema_with_params(&statement.sql, statement.params)
            .await
            .map_err(query_status)?;
        Self::info(&schema, query, request.into_inner())
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorize(request.metadata())?;
        let statement = prepared::decode(&query.prepared_statement_handle)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let stream = self
            .query
            .stream_with_params(&statement.sql, statement.params)
            .await
            .map_err(query_status)?;
        Ok(encode_query(stream))
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<arrow_flight::sql::DoPutPreparedStatementResult, Status> {
        self.authorize(request.metadata())?;
        let statement = prepared::decode(&query.prepared_statement_handle)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let data = request.into_inner().map_err(FlightError::from);
        let mut values = FlightRecordBatchStream::new_from_flight_data(data);
        let mut batches = Vec::new();
        let mut bytes = 0;
        while let Some(batch) = values.try_next().await? {
            bytes += batch.get_array_memory_size();
            if bytes > prepared::MAX_BOUND_BYTES {
                return Err(Status::resource_exhausted(format!(
                    "bound values beyond {} bytes",
                    prepared::MAX_BOUND_BYTES
                )));
            }
            batches.push(batch);
        }
        let handle = prepared::bind(&statement.sql, &batches)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(arrow_flight::sql::DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle.into()),
        })
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.metadata_info(request, &schema, query)
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorize(request.metadata())?;
        let mut builder = query.into_builder();
        for catalog in self.query.context().catalog_names() {
            builder.append(catalog);
        }
        encode_one(builder.schema(), builder.build())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.metadata_info(request, &schema, query)
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorize(request.metadata())?;
        let mut builder = query.into_builder();
        let context = self.query.context();
        for catalog_name in context.catalog_names() {
            if let Some(catalog) = context.catalog(&catalog_name) {
                for schema_name in catalog.schema_names() {
                    builder.append(&catalog_name, schema_name);
                }
            }
        }
        encode_one(builder.schema(), builder.build())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.metadata_info(request, &schema, query)
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorize(request.metadata())?;
        let mut builder = query.into_builder();
        let context = self.query.context();
        for catalog_name in context.catalog_names() {
            let Some(catalog) = context.catalog(&catalog_name) else {
                continue;
            };
            for schema_name in catalog.schema_names() {
                let Some(schema) = catalog.schema(&schema_name) else {
                    continue;
                };
                let kind = if schema_name == "information_schema" {
                    "VIEW"
                } else {
                    "TABLE"
                };
                for table_name in schema.table_names() {
                    let table = schema
                        .table(&table_name)
                        .await
                        .map_err(|e| Status::internal(e.to_string()))?;
                    let Some(table) = table else { continue };
                    builder
                        .append(
                            &catalog_name,
                            &schema_name,
                            &table_name,
                            kind,
                            &table.schema(),
                        )
                        .map_err(|e| Status::internal(e.to_string()))?;
                }
            }
        }
        encode_one(builder.schema(), builder.build())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.metadata_info(request, &schema, query)
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorize(request.metadata())?;
        let mut builder = query.into_builder();
        builder.append("TABLE");
        builder.append("VIEW");
        encode_one(builder.schema(), builder.build())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&SQL_INFO).schema();
        self.metadata_info(request, &schema, query)
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorize(request.metadata())?;
        let builder = query.into_builder(&SQL_INFO);
        encode_one(builder.schema(), builder.build())
    }

    async fn do_put_statement_update(
        &self,
        _ticket: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.refuse_write(request.metadata())
    }

    async fn do_put_statement_ingest(
        &self,
        _ticket: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.refuse_write(request.metadata())
    }

    async fn do_put_prepared_statement_update(
        &self,
        _query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.refuse_write(request.metadata())
    }

    async fn do_get_fallback(
        &self,
        request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorize(request.metadata())?;
        Err(Status::unimplemented(format!(
            "unsupported ticket {}",
            message.type_url
        )))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// The password of an HTTP `Basic` authorization value (the user name is ignored).
fn basic_password(header: &str) -> Option<String> {
    use base64::Engine;
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_user, password) = text.split_once(':')?;
    Some(password.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_give_their_password() {
        // "lab:0123456789abcdef" in base64.
        assert_eq!(
            basic_password("Basic bGFiOjAxMjM0NTY3ODlhYmNkZWY=").as_deref(),
            Some("0123456789abcdef")
        );
        assert_eq!(basic_password("Bearer bGFiOjAxMjM0NTY3ODlhYmNkZWY="), None);
        assert_eq!(basic_password("Basic !!!"), None);
        assert_eq!(basic_password("Basic bm9jb2xvbg=="), None); // "nocolon"
    }
}
