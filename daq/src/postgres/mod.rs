//! The PostgreSQL wire protocol: the door for psql, psycopg, Grafana, Metabase and every tool
//! that speaks PostgreSQL.
//!
//! `datafusion-postgres` does the protocol work over the engine's `SessionContext` (simple and
//! extended query protocol, `pg_catalog`, `SET`/`SHOW`, transactions as no-ops). flowdaq wraps
//! it so this door keeps the promises of the others: each statement passes [`guard`] first
//! (read-only, no engine settings, the text limits), each connection runs on the query threads
//! (deep stacks, apart from ingest), statements and their row streams stop at `[query]
//! timeout_s`, connections beyond `max_connections` are closed at once, and with tokens
//! configured the password must be one of them.

mod guard;
mod startup;

use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion_postgres::pgwire;
use datafusion_postgres::{DfSessionService, Parser};
use futures::{Sink, StreamExt};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::auth::Tokens;
use crate::config::{PostgresConfig, QueryConfig};
use crate::doorway::{Admitted, DoorCounters, Doorway};
use crate::query::{limits::LimitError, QueryEngine, QueryError};

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    /// The address could not be bound.
    #[error("postgres listen {address}: {source}")]
    Bind {
        /// The address.
        address: String,
        /// The error.
        source: std::io::Error,
    },
    /// The `pg_catalog` schema could not be set up.
    #[error("postgres: cannot set up pg_catalog: {0}")]
    Catalog(String),
}

/// The statement type `datafusion-postgres` parses into.
type Statement = <DfSessionService as ExtendedQueryHandler>::Statement;

/// The handlers of every connection.
struct Handlers {
    service: Arc<Guarded>,
    startup: Arc<startup::TokenStartup>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.service.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.service.clone()
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        self.startup.clone()
    }
}

/// `datafusion-postgres`'s session service behind the guard and the time limit.
struct Guarded {
    inner: DfSessionService,
    parser: Arc<GuardedParser>,
    timeout: Duration,
    engine: QueryEngine,
}

/// The extended protocol's parser behind the guard.
struct GuardedParser {
    inner: Arc<Parser>,
    config: QueryConfig,
    engine: QueryEngine,
}

/// Binds `config.listen` and serves PostgreSQL clients until `shutdown`.
///
/// # Errors
/// [`PostgresError`].
pub async fn serve(
    config: &PostgresConfig,
    query_config: &QueryConfig,
    engine: QueryEngine,
    tokens: Tokens,
    counters: Arc<DoorCounters>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(SocketAddr, JoinHandle<()>), PostgresError> {
    let bind_error = |source| PostgresError::Bind {
        address: config.listen.clone(),
        source,
    };
    let context = engine.context().clone();
    datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog(
        &context,
        "datafusion",
        Arc::new(datafusion_postgres::auth::AuthManager::default()),
    )
    .map_err(|e| PostgresError::Catalog(e.to_string()))?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    let inner = DfSessionService::new(Arc::new(context));
    let parser = Arc::new(GuardedParser {
        inner: inner.query_parser(),
        config: query_config.clone(),
        engine: engine.clone(),
    });
    let handlers = Arc::new(Handlers {
        service: Arc::new(Guarded {
            inner,
            parser,
            timeout: query_config.timeout(),
            engine: engine.clone(),
        }),
        startup: Arc::new(startup::TokenStartup::new(tokens)),
    });
    let door = Doorway::new("postgres", listener, config.max_connections, counters);
    let task = tokio::spawn(async move {
        loop {
            let admitted = tokio::select! {
                admitted = door.admit() => admitted,
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            let Admitted {
                stream: socket,
                slot,
            } = admitted;
            let handlers = handlers.clone();
            // On the query threads: statements plan and run there, with their deep stacks.
            engine.spawn(async move {
                if let Err(err) = pgwire::tokio::process_socket(socket, None, handlers).await {
                    tracing::debug!(%err, "postgres connection ended");
                }
                drop(slot);
            });
        }
    });
    Ok((local, task))
}

/// A PostgreSQL error for a refused or failed statement, with the SQLSTATE clients expect.
fn refusal(err: QueryError) -> PgWireError {
    let code = match &err {
        QueryError::ReadOnly(_) => "25006", // read_only_sql_transaction
        QueryError::Limit(LimitError::TimedOut { .. }) => "57014", // query_canceled
        QueryError::Limit(_) => "54000",    // program_limit_exceeded
        _ => "XX000",
    };
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        code.into(),
        err.to_string(),
    )))
}

impl Guarded {
    fn timed_out(&self) -> PgWireError {
        let err: QueryError = LimitError::TimedOut {
            seconds: self.timeout.as_secs_f64(),
        }
        .into();
        self.engine.record_failure(&err);
        refusal(err)
    }

    /// `response` with its rows stopped at `deadline`.
    fn bounded(&self, response: Response, deadline: Instant) -> Response {
        let Response::Query(query) = response else {
            return response;
        };
        let command_tag = query.command_tag().to_owned();
        let QueryResponse {
            row_schema,
            data_rows,
            ..
        } = query;
        let seconds = self.timeout.as_secs_f64();
        let engine = self.engine.clone();
        let rows = futures::stream::unfold(Some(data_rows), move |rows| {
            let engine = engine.clone();
            async move {
                let mut rows = rows?;
                // A row ready at once would never meet the timeout: check the clock too.
                let next = if Instant::now() >= deadline {
                    Err(())
                } else {
                    tokio::time::timeout_at(deadline, rows.next())
                        .await
                        .map_err(|_| ())
                };
                match next {
                    Ok(Some(row)) => Some((row, Some(rows))),
                    Ok(None) => None,
                    Err(()) => {
                        let err: QueryError = LimitError::TimedOut { seconds }.into();
                        engine.record_failure(&err);
                        Some((Err(refusal(err)), None))
                    }
                }
            }
        });
        let mut bounded = QueryResponse::new(row_schema, rows);
        bounded.set_command_tag(&command_tag);
        Response::Query(bounded)
    }
}

#[async_trait]
impl SimpleQueryHandler for Guarded {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.engine.record_start();
        if let Err(err) = guard::check(query, &self.parser.config) {
            self.engine.record_failure(&err);
            return Err(refusal(err));
        }
        let deadline = Instant::now() + self.timeout;
        let responses = tokio::time::timeout_at(
            deadline,
            SimpleQueryHandler::do_query(&self.inner, client, query),
        )
        .await
        .map_err(|_| self.timed_out())??;
        Ok(responses
            .into_iter()
            .map(|response| self.bounded(response, deadline))
            .collect())
    }
}

#[async_trait]
impl ExtendedQueryHandler for Guarded {
    type Statement = Statement;
    type QueryParser = GuardedParser;

    fn query_parser(&self) -> Arc<GuardedParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.engine.record_start();
        let deadline = Instant::now() + self.timeout;
        let response = tokio::time::timeout_at(
            deadline,
            ExtendedQueryHandler::do_query(&self.inner, client, portal, max_rows),
        )
        .await
        .map_err(|_| self.timed_out())??;
        Ok(self.bounded(response, deadline))
    }
}

#[async_trait]
impl QueryParser for GuardedParser {
    type Statement = Statement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        if let Err(err) = guard::check(sql, &self.config) {
            self.engine.record_start();
            self.engine.record_failure(&err);
            return Err(refusal(err));
        }
        self.inner.parse_sql(client, sql, types).await
    }

    fn get_parameter_types(&self, statement: &Statement) -> PgWireResult<Vec<Type>> {
        self.inner.get_parameter_types(statement)
    }

    fn get_result_schema(
        &self,
        statement: &Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        self.inner.get_result_schema(statement, column_format)
    }
}
