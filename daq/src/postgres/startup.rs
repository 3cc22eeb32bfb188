//! Logging in over the PostgreSQL wire: with tokens configured, the password must be one of
//! them (any user name); without, every login is accepted.
//!
//! pgwire's cleartext handler compares the password with one per user; flowdaq has a set of
//! tokens instead. So the password is checked here, and only an accepted login is handed on
//! to pgwire's handler (which finishes the protocol: parameters, keys, ready).

use std::fmt::Debug;

use async_trait::async_trait;
use datafusion_postgres::pgwire;
use futures::Sink;
use pgwire::api::auth::cleartext::CleartextPasswordAuthStartupHandler;
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use pgwire::api::ClientInfo;
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::startup::{Password as PasswordMessage, PasswordMessageFamily};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use crate::auth::Tokens;

/// What an accepted login is replaced by before pgwire's handler sees it.
const ACCEPTED: &str = "accepted-by-flowdaq";

/// Tells pgwire's handler the password every accepted login carries.
#[derive(Debug)]
struct AcceptedSource;

#[async_trait]
impl AuthSource for AcceptedSource {
    async fn get_password(&self, _login: &LoginInfo) -> PgWireResult<Password> {
        Ok(Password::new(None, ACCEPTED.as_bytes().to_vec()))
    }
}

/// Logs every client in without a password (no tokens configured).
struct Trust;

impl NoopStartupHandler for Trust {}

/// The startup handler of every connection.
pub struct TokenStartup {
    tokens: Tokens,
    inner: CleartextPasswordAuthStartupHandler<AcceptedSource, DefaultServerParameterProvider>,
}

impl TokenStartup {
    /// A handler accepting `tokens` as passwords (any password when there are none).
    pub fn new(tokens: Tokens) -> TokenStartup {
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.server_version = "16.0 (flowdaq)".into();
        TokenStartup {
            tokens,
            inner: CleartextPasswordAuthStartupHandler::new(AcceptedSource, parameters),
        }
    }
}

#[async_trait]
impl StartupHandler for TokenStartup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !self.tokens.required() {
            return Trust.on_startup(client, message).await;
        }
        let message = match message {
            PgWireFrontendMessage::PasswordMessageFamily(family) => {
                let presented = family.into_password()?.password;
                if !self.tokens.allows(Some(&presented)) {
                    let user = LoginInfo::from_client_info(client)
                        .user()
                        .map(str::to_owned)
                        .unwrap_or_default();
                    return Err(PgWireError::InvalidPassword(user));
                }
                PgWireFrontendMessage::PasswordMessageFamily(PasswordMessageFamily::Password(
                    PasswordMessage::new(ACCEPTED.into()),
                ))
            }
            other => other,
        };
        self.inner.on_startup(client, message).await
    }
}
