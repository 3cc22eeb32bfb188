//! `?` placeholders numbered `$1`, `$2`, ... so values bind to them by position.
//!
//! ADBC and JDBC clients write parameters as `?` (DB-API's "qmark" style); DataFusion binds a
//! list of values only to numbered placeholders, and takes every `?` for one named parameter.
//! Each `?` the SQL tokenizer sees as a placeholder (not one inside a string, an identifier or
//! a comment) is replaced, in order, by its number; the rest of the text is kept byte for byte.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, Tokenizer};

use super::readonly::ReadOnlyError;

/// `sql` with its `?` placeholders numbered; unchanged when it has none.
///
/// # Errors
/// [`ReadOnlyError::Syntax`] when the text cannot be tokenized, or mixes `?` with numbered
/// placeholders.
pub fn number_question_marks(sql: &str) -> Result<String, ReadOnlyError> {
    if !sql.contains('?') {
        return Ok(sql.to_owned());
    }
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| ReadOnlyError::Syntax(e.to_string()))?;
    let mut marks = Vec::new();
    let mut numbered = false;
    for token in &tokens {
        if let Token::Placeholder(name) = &token.token {
            if name == "?" {
                marks.push(byte_offset(sql, token.span.start).ok_or_else(|| {
                    ReadOnlyError::Syntax("a placeholder outside the text".into())
                })?);
            } else if name.starts_with('$') {
                numbered = true;
            }
        }
    }
    if marks.is_empty() {
        return Ok(sql.to_owned());
    }
    if numbered {
        return Err(ReadOnlyError::Syntax(
            "use either ? or $1, $2, ... placeholders, not both".into(),
        ));
    }
    let mut out = String::with_capacity(sql.len() + 2 * marks.len());
    let mut from = 0;
    for (index, &at) in marks.iter().enumerate() {
        out.push_str(&sql[from..at]);
        out.push_str(&format!("${}", index + 1));
        from = at + 1;
    }
    out.push_str(&sql[from..]);
    Ok(out)
}

/// The byte offset of a tokenizer location (1-based line and character column) in `sql`,
/// when it falls on a `?`.
fn byte_offset(sql: &str, location: Location) -> Option<usize> {
    let line_start = if location.line <= 1 {
        0
    } else {
        sql.match_indices('\n')
            .nth(usize::try_from(location.line).ok()? - 2)?
            .0
            + 1
    };
    let column = usize::try_from(location.column).ok()?.checked_sub(1)?;
    let (offset, character) = sql[line_start..].char_indices().nth(column)?;
    (character == '?').then_some(line_start + offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_marks_are_numbered_in_order() {
        assert_eq!(
            number_question_marks("SELECT * FROM spectra WHERE source = ? AND seq > ?").unwrap(),
            "SELECT * FROM spectra WHERE source = $1 AND seq > $2"
        );
        assert_eq!(
            number_question_marks(
                "SELECT 'é?', ? -- why?\n, \"a?\", ?\n/* ? */ FROM t WHERE x = ?"
            )
            .unwrap(),
            "SELECT 'é?', $1 -- why?\n, \"a?\", $2\n/* ? */ FROM t WHERE x = $3"
        );
    }

    #[test]
    fn text_without_placeholders_is_unchanged() {
        for sql in [
            "SELECT 1",
            "SELECT 'it''s?' AS q",
            "SELECT $1, $2",
            "SELECT 1 -- ?",
        ] {
            assert_eq!(number_question_marks(sql).unwrap(), sql);
        }
    }

    #[test]
    fn mixing_styles_is_refused() {
        assert!(number_question_marks("SELECT ?, $2").is_err());
    }
}
