//! What a persisted file looks like inside: measured floats are split into byte streams (or
//! plain, as configured), never dictionary-encoded, and read back bit for bit.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Builder, ListBuilder, StringArray, TimestampNanosecondArray,
    UInt32Array, UInt64Array,
};
use arrow::datatypes::{DataType, Float64Type};
use arrow::record_batch::RecordBatch;
use flowdaq_schemas::Table;
use parquet::basic::Encoding;
use parquet::file::reader::{FileReader, SerializedFileReader};

use crate::config::{FloatEncoding, ParquetConfig};

/// 2026-12-01T00:00:00Z.
const T0_NS: i64 = 1_796_083_200_000_000_000;

/// Three calibrations of `pixels` wavelengths each: distinct, irregular floats.
fn calibrations(pixels: usize) -> RecordBatch {
    let rows = 3;
    let mut axes = ListBuilder::new(Float64Builder::new()).with_field(Arc::new(
        arrow::datatypes::Field::new("item", arrow::datatypes::DataType::Float64, false),
    ));
    for row in 0..rows {
        for pixel in 0..pixels {
            let x = pixel as f64 / pixels as f64;
            axes.values()
                .append_value(350.0 + 400.0 * x + 1e-3 * (x * 37.0 + row as f64).sin());
        }
        axes.append(true);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(TimestampNanosecondArray::from(vec![T0_NS; rows]).with_timezone("UTC")),
        Arc::new(StringArray::from(vec!["spectrometer-1"; rows])),
        Arc::new(UInt64Array::from_iter_values(0..rows as u64)),
        Arc::new(UInt32Array::from(vec![pixels as u32; rows])),
        Arc::new(axes.finish()),
    ];
    RecordBatch::try_new(Table::SpectralCalibrations.schema(), columns).expect("batch")
}

/// `rows` rows of any table: the row number in every scalar column, cast to its type, and
/// three-element lists of floats.
pub(crate) fn rows_of(table: Table, rows: usize) -> RecordBatch {
    let schema = table.schema();
    let columns = schema
        .fields()
        .iter()
        .map(|field| match field.data_type() {
            DataType::Utf8 => Arc::new(StringArray::from(vec!["x"; rows])) as ArrayRef,
            DataType::List(item) => {
                let mut lists = ListBuilder::new(Float64Builder::new());
                for row in 0..rows {
                    lists.values().append_slice(&[row as f64, 0.5, -1.25]);
                    lists.append(true);
                }
                let lists = lists.finish();
                let target = DataType::List(item.clone());
                arrow::compute::cast(&lists, &target).expect("list cast")
            }
            target => {
                let numbers = arrow::array::Int64Array::from_iter_values(0..rows as i64);
                arrow::compute::cast(&numbers, target).expect("cast")
            }
        })
        .collect();
    RecordBatch::try_new(schema, columns).expect("batch")
}

/// Persists `batch` with `config`; returns the file's reader.
fn persist(
    dir: &std::path::Path,
    config: ParquetConfig,
    batch: RecordBatch,
) -> SerializedFileReader<std::fs::File> {
    let (paths, buffer, persister) = super::local_for_tests(dir, config);
    let table = Table::ALL
        .into_iter()
        .find(|t| t.schema() == batch.schema())
        .expect("a table's batch");
    buffer.insert(&[(table, batch)]);
    let snapshot = buffer
        .take_snapshot(0, Default::default())
        .expect("snapshot");
    let files = persister.persist(&snapshot).expect("persist");
    assert_eq!(files.len(), 1, "one partition, one file");
    let file = std::fs::File::open(paths.resolve(&files[0].path)).expect("open");
    SerializedFileReader::new(file).expect("parquet")
}

/// Encodings of the column chunk named `leaf` in every row group.
fn encodings_of(reader: &SerializedFileReader<std::fs::File>, leaf: &str) -> Vec<Vec<Encoding>> {
    reader
        .metadata()
        .row_groups()
        .iter()
        .map(|group| {
            let column = group
                .columns()
                .iter()
                .find(|c| c.column_path().string().starts_with(leaf))
                .expect("column chunk");
            assert!(
                column.dictionary_page_offset().is_none(),
                "{leaf}: no dictionary page"
            );
            column.encodings().collect()
        })
        .collect()
}

fn read_back(dir: &std::path::Path) -> RecordBatch {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                found.push(path);
            }
        }
    }
    assert_eq!(found.len(), 1, "one Parquet file: {found:?}");
    let file = std::fs::File::open(&found[0]).expect("open");
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("reader")
        .build()
        .expect("build");
    let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().expect("read");
    arrow::compute::concat_batches(&batches[0].schema(), &batches).expect("concat")
}

fn axis_values(batch: &RecordBatch) -> Vec<u64> {
    let axes = batch
        .column_by_name("wavelength_nm")
        .expect("axis column")
        .as_list::<i32>();
    axes.values()
        .as_primitive::<Float64Type>()
        .values()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

#[test]
fn float_columns_are_split_into_byte_streams_by_default_and_read_back_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let batch = calibrations(2048);
    let reader = persist(dir.path(), ParquetConfig::default(), batch.clone());
    for encodings in encodings_of(&reader, "wavelength_nm") {
        assert!(
            encodings.contains(&Encoding::BYTE_STREAM_SPLIT),
            "wavelength_nm: {encodings:?}"
        );
        assert!(
            !encodings.contains(&Encoding::RLE_DICTIONARY)
                && !encodings.contains(&Encoding::PLAIN_DICTIONARY),
            "wavelength_nm: {encodings:?}"
        );
    }
    assert_eq!(axis_values(&read_back(dir.path())), axis_values(&batch));
}

#[test]
fn float_encoding_plain_writes_plain_floats() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = ParquetConfig {
        float_encoding: FloatEncoding::Plain,
        ..ParquetConfig::default()
    };
    let batch = calibrations(512);
    let reader = persist(dir.path(), config, batch.clone());
    for encodings in encodings_of(&reader, "wavelength_nm") {
        assert!(encodings.contains(&Encoding::PLAIN), "{encodings:?}");
        assert!(
            !encodings.contains(&Encoding::BYTE_STREAM_SPLIT),
            "{encodings:?}"
        );
    }
    assert_eq!(axis_values(&read_back(dir.path())), axis_values(&batch));
    assert_eq!(read_back(dir.path()).column(2).len(), 3);
}

#[test]
fn list_floats_carry_no_statistics_and_scalar_columns_keep_theirs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reader = persist(
        dir.path(),
        ParquetConfig::default(),
        rows_of(Table::PhaseTraces, 100),
    );
    let group = reader.metadata().row_group(0);
    let column = |name: &str| {
        group
            .columns()
            .iter()
            .find(|c| c.column_path().string() == name)
            .unwrap_or_else(|| panic!("{name}"))
    };
    let rate = column("sample_rate_hz")
        .statistics()
        .expect("scalar statistics");
    let value = |bytes: Option<&[u8]>| {
        f64::from_le_bytes(bytes.expect("bound").try_into().expect("8 bytes"))
    };
    // Parquet writes a minimum of zero as -0.0, which equals 0.0.
    assert_eq!(value(rate.min_bytes_opt()), 0.0);
    assert_eq!(value(rate.max_bytes_opt()), 99.0);
    assert!(column("seq").statistics().is_some());
    for name in ["sensor_a_volts.list.item", "sensor_b_volts.list.item"] {
        assert!(column(name).statistics().is_none(), "{name}");
        assert!(column(name)
            .encodings()
            .any(|e| e == Encoding::BYTE_STREAM_SPLIT));
    }
}
