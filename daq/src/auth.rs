//! Who may query and control the server: bearer tokens.
//!
//! Anyone who can reach an unprotected query or control surface can read every row and
//! register conditions that re-tag a run's later measurements. With `[auth]` tokens set, every
//! such surface asks for one: HTTP and Flight SQL an `Authorization: Bearer` header, the
//! PostgreSQL wire the token as password, the control ROUTER a `token` field in each request.
//! Tokens come from the configuration, a file, or the `FLOWDAQ_TOKENS` environment variable,
//! and are compared in constant time. [`check_exposure`] refuses to start a server that
//! listens beyond loopback without tokens unless the configuration says so.

use std::path::Path;
use std::sync::Arc;

use subtle::ConstantTimeEq;

use crate::config::{AuthConfig, ServerConfig};

/// Environment variable with tokens, comma- or newline-separated, added to the configured ones.
pub const TOKENS_ENV: &str = "FLOWDAQ_TOKENS";

/// Shortest token accepted: shorter ones can be guessed.
pub const MIN_TOKEN_BYTES: usize = 16;

/// Why the tokens could not be loaded or the server may not start.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The tokens file could not be read.
    #[error("auth.tokens_file {path}: {source}")]
    TokensFile {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A token is too short or holds whitespace.
    #[error("{origin}: a token must be at least {MIN_TOKEN_BYTES} bytes without whitespace")]
    WeakToken {
        /// Where the token came from.
        origin: String,
    },
    /// A surface listens beyond loopback and no token protects it.
    #[error("{surface} listens on {address}, beyond loopback, with no [auth] tokens: set tokens (or FLOWDAQ_TOKENS), listen on 127.0.0.1, or set auth.allow_unauthenticated = true")]
    Exposed {
        /// The configuration key.
        surface: &'static str,
        /// Its address.
        address: String,
    },
}

/// The tokens a server accepts; empty means no authentication.
#[derive(Clone, Default)]
pub struct Tokens(Arc<Vec<Vec<u8>>>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} configured)", self.0.len())
    }
}

impl Tokens {
    /// Tokens from the configuration, its `tokens_file` and the environment value `env`
    /// (the caller reads [`TOKENS_ENV`]).
    ///
    /// # Errors
    /// [`AuthError::TokensFile`] or [`AuthError::WeakToken`].
    pub fn load(config: &AuthConfig, env: Option<&str>) -> Result<Tokens, AuthError> {
        let mut tokens = Vec::new();
        for token in &config.tokens {
            tokens.push(checked(token, "auth.tokens")?);
        }
        if let Some(path) = &config.tokens_file {
            tokens.extend(read_tokens_file(path)?);
        }
        if let Some(value) = env {
            for token in split_tokens(value) {
                tokens.push(checked(token, TOKENS_ENV)?);
            }
        }
        Ok(Tokens(Arc::new(tokens)))
    }

    /// Tokens given directly (tests, embedded servers).
    ///
    /// # Errors
    /// [`AuthError::WeakToken`].
    pub fn from_list(list: &[&str]) -> Result<Tokens, AuthError> {
        let tokens = list
            .iter()
            .map(|t| checked(t, "token list"))
            .collect::<Result<_, _>>()?;
        Ok(Tokens(Arc::new(tokens)))
    }

    /// Whether any token is required.
    pub fn required(&self) -> bool {
        !self.0.is_empty()
    }

    /// Whether `presented` may pass: always when no token is configured, else when it equals
    /// one of them (each compared in constant time).
    pub fn allows(&self, presented: Option<&str>) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let Some(presented) = presented else {
            return false;
        };
        let presented = presented.as_bytes();
        let mut found = subtle::Choice::from(0);
        for token in self.0.iter() {
            found |= token.as_slice().ct_eq(presented);
        }
        found.into()
    }

    /// Whether an HTTP/gRPC `Authorization` header value carries an accepted bearer token.
    pub fn allows_bearer(&self, header: Option<&str>) -> bool {
        self.allows(header.and_then(bearer_token))
    }
}

/// The token of an `Authorization: Bearer <token>` value (scheme case-insensitive).
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn checked(token: &str, origin: &str) -> Result<Vec<u8>, AuthError> {
    if token.len() < MIN_TOKEN_BYTES || token.chars().any(char::is_whitespace) {
        return Err(AuthError::WeakToken {
            origin: origin.to_string(),
        });
    }
    Ok(token.as_bytes().to_vec())
}

fn split_tokens(text: &str) -> impl Iterator<Item = &str> {
    text.split([',', '\n'])
        .map(str::trim)
        .filter(|t| !t.is_empty() && !t.starts_with('#'))
}

fn read_tokens_file(path: &Path) -> Result<Vec<Vec<u8>>, AuthError> {
    let display = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::TokensFile {
        path: display.clone(),
        source,
    })?;
    split_tokens(&text)
        .map(|t| checked(t, &format!("auth.tokens_file {display}")))
        .collect()
}

/// Whether a listen address (`host:port` or `tcp://host:port`) is reachable only from this
/// machine. Host names other than `localhost` count as reachable from elsewhere.
pub fn is_loopback(address: &str) -> bool {
    let address = address.strip_prefix("tcp://").unwrap_or(address);
    let host = match address.rsplit_once(':') {
        Some((host, _port)) => host,
        None => address,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// Refuses a configuration whose query or control surfaces listen beyond loopback without
/// tokens, unless `auth.allow_unauthenticated` is set.
///
/// # Errors
/// [`AuthError::Exposed`] naming the first such surface.
pub fn check_exposure(config: &ServerConfig, tokens: &Tokens) -> Result<(), AuthError> {
    if tokens.required() || config.auth.allow_unauthenticated {
        return Ok(());
    }
    for (surface, address) in [
        ("http.listen", &config.http.listen),
        ("flight_sql.listen", &config.flight_sql.listen),
        ("postgres.listen", &config.postgres.listen),
        ("control.listen", &config.control.listen),
    ] {
        if !address.is_empty() && !is_loopback(address) {
            return Err(AuthError::Exposed {
                surface,
                address: address.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "0123456789abcdef-good";

    #[test]
    fn no_tokens_allows_everyone_and_tokens_allow_only_themselves() {
        assert!(Tokens::default().allows(None));
        let tokens = Tokens::from_list(&[GOOD, "another-token-of-16"]).expect("tokens");
        assert!(tokens.allows(Some(GOOD)));
        assert!(tokens.allows(Some("another-token-of-16")));
        assert!(!tokens.allows(None));
        assert!(!tokens.allows(Some("")));
        assert!(!tokens.allows(Some("0123456789abcdef-goo")));
        assert!(!tokens.allows(Some("0123456789abcdef-good!")));
        assert!(tokens.allows_bearer(Some("Bearer 0123456789abcdef-good")));
        assert!(tokens.allows_bearer(Some("bearer  0123456789abcdef-good ")));
        assert!(!tokens.allows_bearer(Some("Basic 0123456789abcdef-good")));
        assert!(!tokens.allows_bearer(Some(GOOD)));
    }

    #[test]
    fn weak_tokens_are_refused_wherever_they_come_from() {
        assert!(matches!(
            Tokens::from_list(&["short"]),
            Err(AuthError::WeakToken { .. })
        ));
        let config = AuthConfig {
            tokens: vec!["with a space in it....".into()],
            ..AuthConfig::default()
        };
        assert!(Tokens::load(&config, None).is_err());
        let err = Tokens::load(&AuthConfig::default(), Some("ok-token-0123456789,tiny"))
            .expect_err("tiny");
        assert!(err.to_string().contains(TOKENS_ENV), "{err}");
    }

    #[test]
    fn tokens_come_from_config_file_and_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("tokens");
        std::fs::write(&file, "# lab tokens\nfile-token-0123456789\n\n").expect("write");
        let config = AuthConfig {
            tokens: vec!["config-token-0123456789".into()],
            tokens_file: Some(file),
            allow_unauthenticated: false,
        };
        let tokens = Tokens::load(&config, Some("env-token-0123456789, env-two-0123456789"))
            .expect("tokens");
        for token in [
            "config-token-0123456789",
            "file-token-0123456789",
            "env-token-0123456789",
            "env-two-0123456789",
        ] {
            assert!(tokens.allows(Some(token)), "{token}");
        }
        assert!(!tokens.allows(Some("# lab tokens")));
        let missing = AuthConfig {
            tokens_file: Some(dir.path().join("absent")),
            ..AuthConfig::default()
        };
        assert!(matches!(
            Tokens::load(&missing, None),
            Err(AuthError::TokensFile { .. })
        ));
    }

    #[test]
    fn loopback_addresses_are_told_apart() {
        for address in [
            "127.0.0.1:8080",
            "tcp://127.0.0.1:5561",
            "[::1]:8080",
            "localhost:0",
            "127.1.2.3:80",
        ] {
            assert!(is_loopback(address), "{address}");
        }
        for address in [
            "0.0.0.0:8080",
            "tcp://0.0.0.0:5561",
            "[::]:8080",
            "192.168.1.10:8080",
            "lab-server:8080",
            "tcp://*:5561",
        ] {
            assert!(!is_loopback(address), "{address}");
        }
    }

    #[test]
    fn exposed_surfaces_need_tokens_or_an_explicit_opt_out() {
        let mut config = ServerConfig::default();
        assert!(check_exposure(&config, &Tokens::default()).is_ok());
        config.control.listen = "tcp://0.0.0.0:5561".into();
        let err = check_exposure(&config, &Tokens::default()).expect_err("exposed");
        assert!(err.to_string().contains("control.listen"), "{err}");
        let tokens = Tokens::from_list(&[GOOD]).expect("tokens");
        assert!(check_exposure(&config, &tokens).is_ok());
        config.auth.allow_unauthenticated = true;
        assert!(check_exposure(&config, &Tokens::default()).is_ok());
    }
}
