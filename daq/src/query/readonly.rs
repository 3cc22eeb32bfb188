//! The read-only guard: SQL users may read every table and may not change or escape anything.
//!
//! Statements are parsed before planning and only queries (and EXPLAIN of a query) pass; DDL,
//! DML, COPY, CREATE EXTERNAL TABLE, SET and the rest are refused with a clear error. As a second
//! line, planning runs with DataFusion's SQLOptions forbidding DDL, DML and statements, and the
//! session has no URL tables and no file-reading table functions registered.

use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::Statement;

/// Why a SQL text was refused before planning.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReadOnlyError {
    /// Not parseable.
    #[error("SQL syntax error: {0}")]
    Syntax(String),
    /// More or fewer than one statement.
    #[error("send exactly one statement per request (got {0})")]
    StatementCount(usize),
    /// A statement that would change data, schema, settings or read files.
    #[error("flowdaq SQL is read-only: {0} is not allowed (only SELECT, WITH ... SELECT, VALUES and EXPLAIN of those)")]
    Forbidden(String),
}

/// Checks that `sql` is one read-only statement.
///
/// # Errors
/// [`ReadOnlyError`] naming the statement kind that was refused.
pub fn check(sql: &str) -> Result<(), ReadOnlyError> {
    let statements = DFParser::parse_sql(sql).map_err(|e| ReadOnlyError::Syntax(e.to_string()))?;
    if statements.len() != 1 {
        return Err(ReadOnlyError::StatementCount(statements.len()));
    }
    match &statements[0] {
        DfStatement::Statement(statement) => check_statement(statement),
        DfStatement::Explain(explain) => match explain.statement.as_ref() {
            DfStatement::Statement(statement) => check_statement(statement),
            other => Err(ReadOnlyError::Forbidden(describe_df(other))),
        },
        other => Err(ReadOnlyError::Forbidden(describe_df(other))),
    }
}

fn check_statement(statement: &Statement) -> Result<(), ReadOnlyError> {
    match statement {
        Statement::Query(_) => Ok(()),
        Statement::Explain { statement, .. } => check_statement(statement),
        other => Err(ReadOnlyError::Forbidden(keyword_of(&other.to_string()))),
    }
}

fn describe_df(statement: &DfStatement) -> String {
    match statement {
        DfStatement::CreateExternalTable(_) => "CREATE EXTERNAL TABLE".into(),
        DfStatement::CopyTo(_) => "COPY".into(),
        other => keyword_of(&other.to_string()),
    }
}

/// The leading keywords of a statement, for the error message (`CREATE TABLE`, `INSERT`).
fn keyword_of(text: &str) -> String {
    text.split_whitespace()
        .take_while(|w| w.chars().all(|c| c.is_ascii_alphabetic()))
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
        .to_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_pass() {
        for sql in [
            "SELECT * FROM spectra",
            "WITH x AS (SELECT 1 AS a) SELECT a FROM x",
            "EXPLAIN SELECT count(*) FROM photons",
            "VALUES (1, 2)",
        ] {
            assert_eq!(check(sql), Ok(()), "{sql}");
        }
    }

    #[test]
    fn everything_else_is_refused_by_name() {
        let cases = [
            ("CREATE TABLE t (a INT)", "CREATE TABLE"),
            (
                "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '/etc'",
                "CREATE EXTERNAL TABLE",
            ),
            ("INSERT INTO spectra VALUES (1)", "INSERT INTO"),
            ("DELETE FROM spectra", "DELETE FROM"),
            ("UPDATE spectra SET seq = 1", "UPDATE"),
            ("DROP TABLE spectra", "DROP TABLE"),
            ("COPY spectra TO '/tmp/x.parquet'", "COPY"),
            ("CREATE VIEW v AS SELECT 1", "CREATE VIEW"),
            ("SET datafusion.execution.batch_size = 1", "SET"),
            ("EXPLAIN COPY spectra TO '/tmp/x'", "COPY"),
        ];
        for (sql, keyword) in cases {
            match check(sql) {
                Err(ReadOnlyError::Forbidden(found)) => {
                    assert!(found.starts_with(keyword), "{sql}: {found}")
                }
                other => panic!("{sql} should be refused, got {other:?}"),
            }
        }
        assert_eq!(
            check("SELECT 1; SELECT 2"),
            Err(ReadOnlyError::StatementCount(2))
        );
    }
}
