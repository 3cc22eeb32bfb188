//! Limits no query can break: text size, expression depth, time, operator memory, result size.
//!
//! Anyone who can reach a query door can send any SQL. A left-deep chain of a few thousand
//! operators (`1+1+...`, `a AND a AND ...`) recurses through DataFusion's planner and optimizer
//! deeper than a 2 MiB runtime thread's stack, which aborts the whole process; a generated
//! series of 1e10 rows is collected into memory or counted for minutes. So every query runs on
//! the query threads (stacks of [`QUERY_STACK_BYTES`]) after [`check_text`] has bounded how
//! deep its expressions can nest, under a time limit, with DataFusion's memory pool bounding
//! what operators reserve, and its result collected only up to `max_result_bytes`.

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use futures::StreamExt;

use crate::config::QueryConfig;

/// Stack of each query thread. Only the pages a query touches become resident; a chain of
/// [`MAX_OPERATORS_CEILING`] operators needs a few MiB of it.
pub const QUERY_STACK_BYTES: usize = 64 << 20;

/// The highest `query.max_operators` the configuration accepts: the deepest expression that
/// the query threads' stack is known to plan (the tests run a chain this long).
pub const MAX_OPERATORS_CEILING: usize = 4096;

/// A limit a query broke.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LimitError {
    /// The SQL text is longer than `max_sql_bytes`.
    #[error("the SQL text is {bytes} bytes; at most {max} are accepted ([query] max_sql_bytes)")]
    TextTooLong {
        /// Size of the text.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// Too many operators to plan safely.
    #[error("the statement has {count} operators, parentheses and boolean keywords; at most {max} are accepted ([query] max_operators): nest less or split the query")]
    TooComplex {
        /// Operators counted.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The query ran out of time.
    #[error("the query took longer than {seconds} s ([query] timeout_s) and was stopped")]
    TimedOut {
        /// The limit.
        seconds: f64,
    },
    /// The result is larger than `max_result_bytes`.
    #[error("the result exceeds {max} bytes ([query] max_result_bytes): add a LIMIT, select fewer columns or aggregate")]
    ResultTooLarge {
        /// The limit.
        max: usize,
    },
}

/// Checks the SQL text against `max_sql_bytes` and `max_operators` before it is parsed into a
/// tree. Counting is one pass over the tokens, with no recursion: operators, opening
/// parentheses and brackets, and the keywords that chain or nest (`AND`, `OR`, `NOT`, `WHEN`,
/// `SELECT`) each count one; names, literals, commas and closing brackets count nothing. An
/// expression cannot nest deeper than that count.
///
/// # Errors
/// [`LimitError::TextTooLong`] or [`LimitError::TooComplex`]. A text that does not tokenize
/// passes: the parser reports it with its position.
pub fn check_text(sql: &str, config: &QueryConfig) -> Result<(), LimitError> {
    if sql.len() > config.max_sql_bytes {
        return Err(LimitError::TextTooLong {
            bytes: sql.len(),
            max: config.max_sql_bytes,
        });
    }
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        return Ok(());
    };
    let count = tokens.iter().filter(|t| nests(t)).count();
    if count > config.max_operators {
        return Err(LimitError::TooComplex {
            count,
            max: config.max_operators,
        });
    }
    Ok(())
}

/// Whether `token` can add a level to an expression tree.
fn nests(token: &Token) -> bool {
    match token {
        Token::Word(word) => matches!(
            word.keyword,
            Keyword::AND | Keyword::OR | Keyword::NOT | Keyword::WHEN | Keyword::SELECT
        ),
        Token::Whitespace(_)
        | Token::Comma
        | Token::Period
        | Token::RParen
        | Token::RBracket
        | Token::RBrace
        | Token::SemiColon
        | Token::EOF
        | Token::Number(..)
        | Token::SingleQuotedString(_)
        | Token::DoubleQuotedString(_)
        | Token::EscapedStringLiteral(_)
        | Token::NationalStringLiteral(_)
        | Token::HexStringLiteral(_)
        | Token::Placeholder(_) => false,
        _ => true,
    }
}

/// Reads `stream` to its end, failing once the batches hold more than `max_bytes` of Arrow
/// data (counted by the rows they cover, not the buffers they share).
///
/// # Errors
/// [`LimitError::ResultTooLarge`] (as a DataFusion error), or the stream's own error.
pub async fn collect_bounded(
    mut stream: SendableRecordBatchStream,
    max_bytes: usize,
) -> Result<Vec<RecordBatch>, super::QueryError> {
    let mut batches = Vec::new();
    let mut bytes = 0usize;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        bytes = bytes.saturating_add(slice_bytes(&batch));
        if bytes > max_bytes {
            return Err(LimitError::ResultTooLarge { max: max_bytes }.into());
        }
        batches.push(batch);
    }
    Ok(batches)
}

/// Bytes of Arrow data the rows of `batch` cover.
fn slice_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|column| {
            column
                .to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| column.get_array_memory_size())
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_operators: usize) -> QueryConfig {
        QueryConfig {
            max_operators,
            max_sql_bytes: 4096,
            ..QueryConfig::default()
        }
    }

    #[test]
    fn operators_are_counted_and_names_literals_and_commas_are_not() {
        let sql =
            "SELECT a + 1, 'x AND y', \"OR\" FROM t WHERE (b > 2 AND NOT c) OR d IN (1, 2, 3)";
        // SELECT + ( > AND NOT OR ( : 8
        assert!(check_text(sql, &config(8)).is_ok());
        assert_eq!(
            check_text(sql, &config(7)),
            Err(LimitError::TooComplex { count: 8, max: 7 })
        );
    }

    #[test]
    fn long_chains_and_long_texts_are_refused() {
        let chain = format!("SELECT {}", vec!["1"; 1000].join("+"));
        assert_eq!(
            check_text(&chain, &config(500)),
            Err(LimitError::TooComplex {
                count: 1000,
                max: 500
            })
        );
        let long = format!("SELECT '{}'", "x".repeat(5000));
        assert!(matches!(
            check_text(&long, &config(500)),
            Err(LimitError::TextTooLong { max: 4096, .. })
        ));
        let wide = format!("SELECT 1 WHERE 1 IN ({})", vec!["7"; 900].join(", "));
        assert!(
            check_text(&wide, &config(500)).is_ok(),
            "a long list nests nothing"
        );
    }
}
