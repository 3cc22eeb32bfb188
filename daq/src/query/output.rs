//! Rendering query results: JSON (array of objects), CSV, Arrow IPC stream, or a text table.

use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;

/// An output format a client can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON array of row objects.
    Json,
    /// CSV with a header row.
    Csv,
    /// Arrow IPC stream.
    Arrow,
    /// A human-readable table.
    Table,
}

impl Format {
    /// Parses a format name (`json`, `csv`, `arrow`, `table`).
    pub fn parse(name: &str) -> Option<Format> {
        match name.to_ascii_lowercase().as_str() {
            "json" => Some(Format::Json),
            "csv" => Some(Format::Csv),
            "arrow" | "arrow_ipc" | "ipc" => Some(Format::Arrow),
            "table" | "text" => Some(Format::Table),
            _ => None,
        }
    }

    /// The HTTP content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Csv => "text/csv",
            Format::Arrow => "application/vnd.apache.arrow.stream",
            Format::Table => "text/plain; charset=utf-8",
        }
    }
}

/// Renders batches in `format`. An empty result still carries its schema (CSV header, IPC schema).
///
/// # Errors
/// Arrow's error if a value cannot be rendered.
pub fn render(
    batches: &[RecordBatch],
    schema: Option<datafusion::arrow::datatypes::SchemaRef>,
    format: Format,
) -> Result<Vec<u8>, ArrowError> {
    let mut out = Vec::new();
    match format {
        Format::Json => {
            let mut writer = datafusion::arrow::json::ArrayWriter::new(&mut out);
            for batch in batches {
                writer.write(batch)?;
            }
            writer.finish()?;
            if out.is_empty() {
                out.extend_from_slice(b"[]");
            }
        }
        Format::Csv => {
            let mut writer = datafusion::arrow::csv::Writer::new(&mut out);
            for batch in batches {
                writer.write(batch)?;
            }
        }
        Format::Arrow => {
            let schema = batches.first().map(|b| b.schema()).or(schema);
            if let Some(schema) = schema {
                let mut writer =
                    datafusion::arrow::ipc::writer::StreamWriter::try_new(&mut out, &schema)?;
                for batch in batches {
                    writer.write(batch)?;
                }
                writer.finish()?;
            }
        }
        Format::Table => {
            let table = datafusion::arrow::util::pretty::pretty_format_batches(batches)?;
            out.extend_from_slice(table.to_string().as_bytes());
            out.push(b'\n');
        }
    }
    Ok(out)
}
