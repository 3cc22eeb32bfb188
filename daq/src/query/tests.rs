//! Filters over persisted files: the files the catalog rules out are not scanned, and the
//! answers are those of the rows, with every filter applied.

use std::sync::Arc;

use arrow::array::{
    Array, Int32Array, Int64Array, StringArray, TimestampNanosecondArray, UInt64Array, UInt8Array,
};
use arrow::record_batch::RecordBatch;
use flowdaq_schemas::Table;

use super::QueryEngine;
use crate::config::ParquetConfig;

const HOUR_NS: i64 = 3_600_000_000_000;
/// 2026-12-01T00:00:00Z.
const T0_NS: i64 = 1_796_083_200_000_000_000;

/// `rows` photons of `run`, arriving one second apart from `start_ns`.
fn photons(run: &str, start_ns: i64, rows: usize) -> RecordBatch {
    let times: Vec<i64> = (0..rows as i64)
        .map(|i| start_ns + i * 1_000_000_000)
        .collect();
    let columns: Vec<arrow::array::ArrayRef> = vec![
        Arc::new(TimestampNanosecondArray::from(times.clone()).with_timezone("UTC")),
        Arc::new(TimestampNanosecondArray::from(times).with_timezone("UTC")),
        Arc::new(StringArray::from(vec!["tcspc-1"; rows])),
        Arc::new(StringArray::from(vec![run; rows])),
        Arc::new(StringArray::from(vec![None::<&str>; rows])),
        Arc::new(UInt64Array::from_iter_values(0..rows as u64)),
        Arc::new(Int64Array::from_iter_values(0..rows as i64)),
        Arc::new(Int32Array::from(vec![100; rows])),
        Arc::new(UInt8Array::from(vec![0; rows])),
        Arc::new(UInt8Array::from(vec![0; rows])),
    ];
    RecordBatch::try_new(Table::Photons.schema(), columns).expect("photons batch")
}

/// Persists each batch as its own snapshot (one file per batch), then an engine over them.
fn persisted(dir: &std::path::Path, batches: Vec<RecordBatch>) -> QueryEngine {
    persisted_with_buffer(dir, batches).1
}

/// As [`persisted`], with the write buffer the engine reads.
fn persisted_with_buffer(
    dir: &std::path::Path,
    batches: Vec<RecordBatch>,
) -> (Arc<crate::write_buffer::WriteBuffer>, QueryEngine) {
    let (_paths, buffer, persister) =
        crate::persister::local_for_tests(dir, ParquetConfig::default());
    for batch in batches {
        buffer.insert(&[(Table::Photons, batch)]);
        let snapshot = buffer
            .take_snapshot(0, Default::default())
            .expect("snapshot");
        persister.persist(&snapshot).expect("persist");
    }
    let engine = QueryEngine::new(buffer.clone(), &Default::default()).expect("engine");
    (buffer, engine)
}

async fn count(engine: &QueryEngine, filter: &str) -> i64 {
    let result = engine
        .execute(&format!("SELECT count(*) AS n FROM photons WHERE {filter}"))
        .await
        .expect("query");
    let column = result.batches[0].column(0);
    column
        .as_any()
        .downcast_ref::<Int64Array>()
        .expect("count")
        .value(0)
}

/// The Parquet files the physical plan of `filter` reads, by run and hour.
async fn files_scanned(engine: &QueryEngine, filter: &str) -> usize {
    let result = engine
        .execute(&format!(
            "EXPLAIN SELECT count(*) FROM photons WHERE {filter}"
        ))
        .await
        .expect("explain");
    let plan = arrow::util::pretty::pretty_format_batches(&result.batches)
        .expect("format")
        .to_string();
    plan.matches(".parquet").count()
}

#[tokio::test]
async fn count_of_every_row_comes_from_the_catalog_and_the_buffer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (buffer, engine) = persisted_with_buffer(
        dir.path(),
        vec![photons("a", T0_NS, 10), photons("b", T0_NS, 7)],
    );
    buffer.insert(&[(Table::Photons, photons("b", T0_NS + HOUR_NS, 5))]);
    let sql = "SELECT count(*) AS n FROM photons";
    let result = engine.execute(sql).await.expect("count");
    let n = result.batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .expect("count")
        .value(0);
    assert_eq!(n, 22);
    let explained = engine
        .execute(&format!("EXPLAIN {sql}"))
        .await
        .expect("explain");
    let plan = arrow::util::pretty::pretty_format_batches(&explained.batches)
        .expect("format")
        .to_string();
    assert!(plan.contains("PlaceholderRowExec"), "{plan}");
    assert!(!plan.contains("DataSourceExec"), "{plan}");
}

#[tokio::test]
async fn filters_on_run_and_arrival_time_skip_files_and_keep_the_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Three files: run a at hour 0, run a at hour 2, run b at hour 2; 10 rows each.
    let engine = persisted(
        dir.path(),
        vec![
            photons("a", T0_NS, 10),
            photons("a", T0_NS + 2 * HOUR_NS, 10),
            photons("b", T0_NS + 2 * HOUR_NS, 10),
        ],
    );
    let hour = |h: i64| format!("to_timestamp_nanos({})", T0_NS + h * HOUR_NS);
    let cases = [
        // No filter left: the catalog's row counts answer, no file is opened.
        ("true", 30, 0),
        ("run_id = 'a'", 20, 2),
        ("run_id IN ('b', 'c')", 10, 1),
        ("run_id = 'c'", 0, 0),
        (&format!("arrival_time_ns >= {}", hour(1)) as &str, 20, 2),
        (&format!("arrival_time_ns < {}", hour(1)), 10, 1),
        (
            &format!("run_id = 'a' AND arrival_time_ns > {}", hour(1)),
            10,
            1,
        ),
        // The last row of the hour-0 file is at +9 s: a bound on it keeps that file only.
        (
            &format!(
                "arrival_time_ns BETWEEN {} AND {}",
                hour(0) + " + INTERVAL '9 seconds'",
                hour(1)
            ),
            1,
            1,
        ),
        // A string timestamp, cast by DataFusion and folded into a literal before the scan.
        ("arrival_time_ns >= '2026-12-01T02:00:00Z'", 20, 2),
        // Not understood by the pruning: every file is scanned, the answer is still right.
        ("run_id <> 'a'", 10, 3),
        ("run_id = 'a' OR seq = 3", 21, 3),
    ];
    for (filter, rows, files) in cases {
        assert_eq!(count(&engine, filter).await, rows, "rows of {filter}");
        assert_eq!(
            files_scanned(&engine, filter).await,
            files,
            "files scanned for {filter}"
        );
    }
    // A LIMIT is not applied before the (inexact) filters: five rows, all of run b.
    let limited = engine
        .execute("SELECT run_id FROM photons WHERE run_id = 'b' OR seq = 100 LIMIT 5")
        .await
        .expect("limit");
    let runs: Vec<String> = limited
        .batches
        .iter()
        .flat_map(|b| {
            let column = b.column(0).as_any().downcast_ref::<StringArray>();
            let column = column.expect("run_id").clone();
            (0..column.len()).map(move |i| column.value(i).to_string())
        })
        .collect();
    assert_eq!(runs, vec!["b"; 5]);
}

/// The first column of the first row, as text.
async fn scalar_text(engine: &QueryEngine, sql: &str) -> Result<String, String> {
    let result = engine.execute(sql).await.map_err(|e| e.to_string())?;
    let column = arrow::util::display::ArrayFormatter::try_new(
        result.batches[0].column(0).as_ref(),
        &Default::default(),
    )
    .map_err(|e| e.to_string())?;
    Ok(column.value(0).to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_that_build_huge_values_are_refused_before_they_allocate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = persisted(dir.path(), vec![]);
    for sql in [
        "SELECT repeat('x', 2000000000)",
        "SELECT lpad('a', 1000000000)",
        "SELECT rpad('a', 1000000000, 'xy')",
        "SELECT array_repeat(1, 1000000000)",
        "SELECT array_repeat([1.5, 2.5], 100000000)",
        // Small per row, too much for one batch of rows.
        "SELECT max(length(repeat('x', 100000 + value % 2))) FROM generate_series(1, 10000)",
    ] {
        let err = scalar_text(&engine, sql).await.expect_err(sql);
        assert!(err.contains("at most 67108864"), "{sql}: {err}");
    }
    // Reasonable calls still work, under their own names and aliases.
    for (sql, want) in [
        ("SELECT repeat('ab', 3)", "ababab"),
        ("SELECT lpad('7', 3, '0')", "007"),
        ("SELECT rpad('7', 3, '0')", "700"),
        ("SELECT array_repeat(2, 3)", "[2, 2, 2]"),
        ("SELECT list_repeat('a', 2)", "[a, a]"),
        (
            "SELECT max(length(repeat('x', 1000))) FROM generate_series(1, 10000)",
            "1000",
        ),
    ] {
        assert_eq!(scalar_text(&engine, sql).await.expect(sql), want, "{sql}");
    }
}

/// `photons` with the micro times of `micro_time_ps`.
fn photons_with_micro_times(run: &str, start_ns: i64, micro_time_ps: Vec<i32>) -> RecordBatch {
    let batch = photons(run, start_ns, micro_time_ps.len());
    let mut columns = batch.columns().to_vec();
    let index = batch.schema().index_of("micro_time_ps").expect("column");
    columns[index] = Arc::new(Int32Array::from(micro_time_ps));
    RecordBatch::try_new(batch.schema(), columns).expect("photons batch")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approximate_percentile_gives_one_answer_on_every_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Eight files of different sizes and skewed, overlapping distributions, so the t-digests of
    // different subsets differ and any change in what a partition reads, or in the order its
    // partial results are merged, changes the answer.
    let batches = (0..8_i32)
        .map(|file| {
            let rows = 20_000 + 7_000 * file;
            let micro = (0..rows)
                .map(|i| (i * 7_919 + file * 104_729) % (1_000 + 900 * file))
                .collect();
            photons_with_micro_times("a", T0_NS + i64::from(file) * HOUR_NS, micro)
        })
        .collect();
    let engine = persisted(dir.path(), batches);
    let sql = "SELECT approx_percentile_cont(0.5) WITHIN GROUP (ORDER BY micro_time_ps) AS p \
               FROM photons";
    let mut answers = std::collections::BTreeSet::new();
    for _ in 0..24 {
        let result = engine.execute(sql).await.expect("query");
        let column = result.batches[0].column(0);
        let value = column
            .as_any()
            .downcast_ref::<arrow::array::Float64Array>()
            .expect("float")
            .value(0);
        answers.insert(value.to_bits());
    }
    assert_eq!(answers.len(), 1, "{} different answers", answers.len());
}

/// Columns `lifetime_features` gained after schema version 2 (in versions 3 and 4).
const LIFETIME_COLUMNS_SINCE_V2: [&str; 5] = [
    "fit_flags",
    "fit_flag_names",
    "fit_range_start_ns",
    "fit_range_end_ns",
    "irf_fwhm_ps",
];

/// `rows` rows of `lifetime_features` as version 2 wrote them: without the later columns,
/// nullable columns null and the others zero (or "0").
fn lifetime_features_v2(rows: usize, start_ns: i64) -> RecordBatch {
    let current = Table::LifetimeFeatures.schema();
    let mut fields = Vec::new();
    let mut columns: Vec<arrow::array::ArrayRef> = Vec::new();
    for field in current.fields() {
        if LIFETIME_COLUMNS_SINCE_V2.contains(&field.name().as_str()) {
            continue;
        }
        let column = if field.is_nullable() {
            arrow::array::new_null_array(field.data_type(), rows)
        } else if field.name() == "arrival_time_ns" {
            let times: Vec<i64> = (0..rows as i64).map(|i| start_ns + i).collect();
            Arc::new(TimestampNanosecondArray::from(times).with_timezone("UTC"))
        } else {
            let zeros = Int64Array::from(vec![0_i64; rows]);
            arrow::compute::cast(&zeros, field.data_type())
                .unwrap_or_else(|e| panic!("no zero for {}: {e}", field.name()))
        };
        fields.push(field.as_ref().clone());
        columns.push(column);
    }
    let mut metadata = current.metadata().clone();
    metadata.insert(
        flowdaq_schemas::SCHEMA_VERSION_KEY.to_string(),
        "lifetime_features/2".into(),
    );
    let schema = Arc::new(arrow::datatypes::Schema::new_with_metadata(
        fields, metadata,
    ));
    RecordBatch::try_new(schema, columns).expect("version 2 batch")
}

/// The Int64 values (counts) of a result's first row.
fn first_row_counts(result: &super::QueryResult) -> Vec<i64> {
    result.batches[0]
        .columns()
        .iter()
        .map(|column| {
            column
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("count")
                .value(0)
        })
        .collect()
}

/// `batch` as start-up replays it from a WAL segment the previous version wrote.
fn through_the_wal(batch: RecordBatch) -> RecordBatch {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = crate::storage::LocalStorage::shared();
    let paths = crate::paths::DataPaths::new(dir.path());
    let mut wal = crate::wal::Wal::open(
        &paths.wal_dir(),
        crate::config::FsyncPolicy::Always,
        storage.clone(),
    )
    .expect("wal");
    wal.append(&[(Table::LifetimeFeatures, batch)], &[])
        .expect("append");
    drop(wal);
    let recovered = crate::server::recover(dir.path(), true, storage).expect("recover");
    let chunks = recovered.buffer.chunks(Table::LifetimeFeatures);
    chunks.batches.into_iter().next().expect("one batch")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_written_by_the_previous_schema_version_are_read_with_nulls() {
    let replayed = through_the_wal(lifetime_features_v2(3, T0_NS));
    assert_eq!(replayed.schema(), Table::LifetimeFeatures.schema());
    let dir = tempfile::tempdir().expect("tempdir");
    let (_paths, buffer, persister) =
        crate::persister::local_for_tests(dir.path(), ParquetConfig::default());
    // Replayed version-2 rows persisted to Parquet, more still buffered, queried together.
    buffer.insert(&[(Table::LifetimeFeatures, replayed)]);
    let snapshot = buffer
        .take_snapshot(0, Default::default())
        .expect("snapshot");
    persister.persist(&snapshot).expect("persist");
    let buffered = through_the_wal(lifetime_features_v2(2, T0_NS + HOUR_NS));
    buffer.insert(&[(Table::LifetimeFeatures, buffered)]);
    let engine = QueryEngine::new(buffer, &Default::default()).expect("engine");
    let result = engine
        .execute(
            "SELECT count(*) AS n, count(fit_flags) AS flagged, count(fit_flag_names) AS named \
             FROM lifetime_features",
        )
        .await
        .expect("query over both");
    assert_eq!(first_row_counts(&result), [5, 0, 0]);
}

#[test]
fn rows_of_no_known_layout_are_refused_by_name() {
    let batch = lifetime_features_v2(1, T0_NS);
    let without_components = batch
        .project(
            &(0..batch.num_columns())
                .filter(|&i| batch.schema().field(i).name() != "components")
                .collect::<Vec<_>>(),
        )
        .expect("project");
    let err = Table::LifetimeFeatures
        .conform(without_components)
        .expect_err("a required column is missing");
    assert!(
        err.to_string().contains("\"components\" is missing"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_files_of_the_previous_schema_version_are_read_with_nulls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (paths, buffer, _persister) =
        crate::persister::local_for_tests(dir.path(), ParquetConfig::default());
    // A file exactly as the previous version's persister wrote it (its own schema, its version
    // in the metadata), entered in the catalog.
    let old = lifetime_features_v2(4, T0_NS);
    let relative = "tables/lifetime_features/date=2026-12-01/run=default/000000000000.parquet";
    let absolute = paths.resolve(relative);
    std::fs::create_dir_all(absolute.parent().expect("parent")).expect("dirs");
    let file = std::fs::File::create(&absolute).expect("file");
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(file, old.schema(), None).expect("writer");
    writer.write(&old).expect("write");
    writer.close().expect("close");
    buffer.insert(&[(Table::LifetimeFeatures, lifetime_features_v2(1, T0_NS))]);
    let snapshot = buffer
        .take_snapshot(0, Default::default())
        .expect("snapshot");
    let entry = crate::catalog::CatalogFile {
        table: Table::LifetimeFeatures.name().into(),
        path: relative.into(),
        rows: 4,
        size_bytes: std::fs::metadata(&absolute).expect("size").len(),
        min_arrival_time_ns: T0_NS,
        max_arrival_time_ns: T0_NS + 3,
        run_id: "default".into(),
        date: "2026-12-01".into(),
    };
    buffer.complete(&snapshot, vec![entry]).expect("catalog");
    let engine = QueryEngine::new(buffer, &Default::default()).expect("engine");
    let result = engine
        .execute(
            "SELECT count(*) AS n, count(fit_flags) AS flagged, count(components) AS fitted \
             FROM lifetime_features WHERE fit_range_end_ns IS NULL",
        )
        .await
        .expect("a version 2 file under the version 3 table");
    assert_eq!(first_row_counts(&result), [4, 0, 4]);
}
