//! Which statements a PostgreSQL client may send.
//!
//! PostgreSQL clients send more than queries: psql, psycopg, JDBC and Grafana open
//! transactions, set session variables and ask `SHOW` on connect. Those pass (they change
//! nothing outside the connection); queries pass the same read-only guard as every other
//! door; a `SET datafusion.*`, which would change the engine for every user, and everything
//! that writes are refused.

use datafusion::sql::sqlparser::ast::{Set, Statement};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::config::QueryConfig;
use crate::query::limits;
use crate::query::readonly::ReadOnlyError;
use crate::query::QueryError;

/// Checks every statement of `sql` (the simple protocol may carry several).
///
/// # Errors
/// [`QueryError::Limit`] for text too long or too complex, [`QueryError::ReadOnly`] for a
/// statement that is not allowed or not parseable.
pub fn check(sql: &str, config: &QueryConfig) -> Result<(), QueryError> {
    limits::check_text(sql, config)?;
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql)
        .map_err(|e| ReadOnlyError::Syntax(e.to_string()))?;
    for statement in &statements {
        allowed(statement)?;
    }
    Ok(())
}

fn allowed(statement: &Statement) -> Result<(), ReadOnlyError> {
    match statement {
        Statement::Query(_)
        | Statement::ShowVariable { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. } => Ok(()),
        Statement::Explain { statement, .. } => allowed(statement),
        Statement::Set(set) => {
            let touches_engine = match set {
                Set::SingleAssignment { variable, .. } => variable
                    .to_string()
                    .to_ascii_lowercase()
                    .starts_with("datafusion."),
                Set::SetTimeZone { .. } => false,
                _ => true,
            };
            if touches_engine {
                Err(ReadOnlyError::Forbidden(format!(
                    "{statement} (engine settings are the server's)"
                )))
            } else {
                Ok(())
            }
        }
        other => Err(ReadOnlyError::Forbidden(
            other
                .to_string()
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
                .to_uppercase(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_clients_send_on_connect_passes_and_writes_do_not() {
        let config = QueryConfig::default();
        for sql in [
            "SELECT 1",
            "BEGIN",
            "COMMIT",
            "ROLLBACK",
            "SET extra_float_digits = 3",
            "SET application_name = 'psql'",
            "SET TIME ZONE 'UTC'",
            "SHOW transaction_isolation",
            "SELECT 1; SELECT 2",
            "EXPLAIN SELECT count(*) FROM spectra",
            "SELECT c.relname FROM pg_catalog.pg_class c WHERE c.relkind = 'r'",
        ] {
            assert!(check(sql, &config).is_ok(), "{sql}");
        }
        for sql in [
            "CREATE TABLE t (a INT)",
            "INSERT INTO spectra VALUES (1)",
            "DELETE FROM spectra",
            "COPY spectra TO '/tmp/x'",
            "SET datafusion.execution.target_partitions = 1000",
            "SET SESSION datafusion.execution.batch_size = 1",
            "SELECT 1; DROP TABLE spectra",
            "DROP TABLE spectra",
            "SELEC 1",
        ] {
            assert!(check(sql, &config).is_err(), "{sql}");
        }
        let long = format!("SELECT {}", vec!["1"; 2000].join(" + "));
        assert!(matches!(check(&long, &config), Err(QueryError::Limit(_))));
    }
}
