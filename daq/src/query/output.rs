//! Rendering query results: JSON (array of objects), CSV, Arrow IPC stream, or a text table.
//!
//! JSON, CSV and Arrow IPC render batch by batch ([`Renderer`]), so a result streams to an
//! HTTP client in bounded memory; the text table needs every row first. CSV cells of list and
//! struct columns (spectra, fit parameters) hold their value as JSON text.

use std::io::Write;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, ArrayRef, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::json::writer::{make_encoder, EncoderOptions};
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

/// Renders batches in `format`. An empty result still carries its schema (CSV header, IPC
/// schema) when `schema` or a batch gives it.
///
/// # Errors
/// Arrow's error if a value cannot be rendered.
pub fn render(
    batches: &[RecordBatch],
    schema: Option<SchemaRef>,
    format: Format,
) -> Result<Vec<u8>, ArrowError> {
    if format == Format::Table {
        let table = datafusion::arrow::util::pretty::pretty_format_batches(batches)?;
        let mut out = table.to_string().into_bytes();
        out.push(b'\n');
        return Ok(out);
    }
    let Some(schema) = batches.first().map(RecordBatch::schema).or(schema) else {
        return Ok(match format {
            Format::Json => b"[]".to_vec(),
            _ => Vec::new(),
        });
    };
    let mut renderer = Renderer::new(format, &schema)?;
    let mut out = renderer.take();
    for batch in batches {
        out.extend(renderer.batch(batch)?);
    }
    out.extend(renderer.finish()?);
    Ok(out)
}

/// Bytes written by a format's writer, taken out after each step.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Sink {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum Writer {
    Json {
        writer: datafusion::arrow::json::ArrayWriter<Sink>,
        rows: usize,
    },
    Csv(Box<datafusion::arrow::csv::Writer<Sink>>),
    Arrow(Box<datafusion::arrow::ipc::writer::StreamWriter<Sink>>),
}

/// Renders one result batch by batch: the bytes of each step come back at once.
pub struct Renderer {
    sink: Sink,
    writer: Writer,
}

impl Renderer {
    /// A renderer of results with `schema` in `format` (not [`Format::Table`], which cannot
    /// stream). The first bytes (CSV header, IPC schema) are ready to [`Renderer::take`].
    ///
    /// # Errors
    /// Arrow's error if the schema cannot be written, or for [`Format::Table`].
    pub fn new(format: Format, schema: &SchemaRef) -> Result<Renderer, ArrowError> {
        let sink = Sink::default();
        let writer = match format {
            Format::Json => Writer::Json {
                writer: datafusion::arrow::json::ArrayWriter::new(sink.clone()),
                rows: 0,
            },
            Format::Csv => {
                let mut writer = datafusion::arrow::csv::Writer::new(sink.clone());
                // The header, even for a result without rows.
                let empty = RecordBatch::new_empty(schema.clone());
                writer.write(&csv_cells(&empty)?)?;
                Writer::Csv(Box::new(writer))
            }
            Format::Arrow => Writer::Arrow(Box::new(
                datafusion::arrow::ipc::writer::StreamWriter::try_new(sink.clone(), schema)?,
            )),
            Format::Table => {
                return Err(ArrowError::InvalidArgumentError(
                    "a text table cannot be rendered batch by batch".into(),
                ))
            }
        };
        Ok(Renderer { sink, writer })
    }

    /// Bytes rendered and not yet taken.
    pub fn take(&mut self) -> Vec<u8> {
        self.sink.take()
    }

    /// Renders one batch; returns its bytes.
    ///
    /// # Errors
    /// Arrow's error if a value cannot be rendered.
    pub fn batch(&mut self, batch: &RecordBatch) -> Result<Vec<u8>, ArrowError> {
        match &mut self.writer {
            Writer::Json { writer, rows } => {
                writer.write(batch)?;
                *rows += batch.num_rows();
            }
            Writer::Csv(writer) => writer.write(&csv_cells(batch)?)?,
            Writer::Arrow(writer) => writer.write(batch)?,
        }
        Ok(self.sink.take())
    }

    /// Ends the result; returns the last bytes.
    ///
    /// # Errors
    /// Arrow's error if the end cannot be written.
    pub fn finish(mut self) -> Result<Vec<u8>, ArrowError> {
        match &mut self.writer {
            Writer::Json { writer, rows } => {
                writer.finish()?;
                if *rows == 0 {
                    return Ok(b"[]".to_vec());
                }
            }
            Writer::Csv(_) => {}
            Writer::Arrow(writer) => writer.finish()?,
        }
        Ok(self.sink.take())
    }
}

/// Whether CSV cannot hold a column of this type as it is.
fn is_nested(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::List(_)
            | DataType::LargeList(_)
            | DataType::FixedSizeList(_, _)
            | DataType::ListView(_)
            | DataType::LargeListView(_)
            | DataType::Struct(_)
            | DataType::Map(_, _)
            | DataType::Union(_, _)
    )
}

/// `batch` with every nested column replaced by its values as JSON text.
fn csv_cells(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    let schema = batch.schema();
    if !schema.fields().iter().any(|f| is_nested(f.data_type())) {
        return Ok(batch.clone());
    }
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        if is_nested(field.data_type()) {
            fields.push(Arc::new(Field::new(field.name(), DataType::Utf8, true)));
            columns.push(json_text(field, column.as_ref())?);
        } else {
            fields.push(field.clone());
            columns.push(column.clone());
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

/// Each value of `column` as JSON text; nulls stay null.
fn json_text(field: &Arc<Field>, column: &dyn Array) -> Result<ArrayRef, ArrowError> {
    let options = EncoderOptions::default();
    let mut encoder = make_encoder(field, column, &options)?;
    let mut builder = StringBuilder::with_capacity(column.len(), column.len() * 16);
    let mut cell = Vec::new();
    for row in 0..column.len() {
        if encoder.is_null(row) {
            builder.append_null();
            continue;
        }
        cell.clear();
        encoder.encode(row, &mut cell);
        builder.append_value(String::from_utf8_lossy(&cell));
    }
    Ok(Arc::new(builder.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float64Array, ListArray};
    use datafusion::arrow::datatypes::Float64Type;

    fn spectra() -> RecordBatch {
        let counts = ListArray::from_iter_primitive::<Float64Type, _, _>([
            Some(vec![Some(1.5), Some(2.0)]),
            None,
            Some(vec![]),
        ]);
        let peaks = Float64Array::from(vec![Some(2.4), None, Some(2.5)]);
        RecordBatch::try_from_iter([
            ("counts", Arc::new(counts) as ArrayRef),
            ("peak_ev", Arc::new(peaks) as ArrayRef),
        ])
        .expect("batch")
    }

    #[test]
    fn csv_holds_list_columns_as_json_cells() {
        let text =
            String::from_utf8(render(&[spectra()], None, Format::Csv).expect("csv")).expect("utf8");
        assert_eq!(text, "counts,peak_ev\n\"[1.5,2.0]\",2.4\n,\n[],2.5\n");
    }

    #[test]
    fn batch_by_batch_equals_all_at_once_in_every_streaming_format() {
        let batch = spectra();
        for format in [Format::Json, Format::Csv, Format::Arrow] {
            let whole = render(&[batch.clone(), batch.clone()], None, format).expect("render");
            let mut renderer = Renderer::new(format, &batch.schema()).expect("renderer");
            let mut pieces = renderer.take();
            pieces.extend(renderer.batch(&batch).expect("batch"));
            pieces.extend(renderer.batch(&batch).expect("batch"));
            pieces.extend(renderer.finish().expect("finish"));
            assert_eq!(whole, pieces, "{format:?}");
        }
    }

    #[test]
    fn empty_results_keep_their_shape() {
        let schema = spectra().schema();
        assert_eq!(
            render(&[], Some(schema.clone()), Format::Json).expect("json"),
            b"[]"
        );
        assert_eq!(
            render(&[], Some(schema.clone()), Format::Csv).expect("csv"),
            b"counts,peak_ev\n"
        );
        let ipc = render(&[], Some(schema.clone()), Format::Arrow).expect("ipc");
        let reader =
            datafusion::arrow::ipc::reader::StreamReader::try_new(&ipc[..], None).expect("reader");
        assert_eq!(reader.schema(), schema);
    }
}
