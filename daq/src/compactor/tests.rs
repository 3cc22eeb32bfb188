//! Compaction and retention on real Parquet files and real DataFusion queries: answers never
//! change, a query planned before a merge still reads its files, a directory glob never sees
//! a merged file beside the files it replaces (but for the swap), a crash between steps
//! leaves a complete catalog, and retention drops only its tables' old files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowdaq_schemas::Table;
use futures::StreamExt;

use super::*;
use crate::config::{ParquetConfig, QueryConfig};
use crate::persister::tests::rows_of;
use crate::query::QueryEngine;

const GRACE: Duration = Duration::from_secs(65);
const NOW_NS: i64 = 1_796_083_200_000_000_000;

/// Persists `count` snapshots of `rows` rows of each of `tables`.
fn persist_snapshots(buffer: &WriteBuffer, persister: &Persister, tables: &[Table], count: u64) {
    for i in 0..count {
        for table in tables {
            buffer.insert(&[(*table, rows_of(*table, 50))]);
        }
        let snapshot = buffer
            .take_snapshot(i, Default::default())
            .expect("snapshot");
        persister.persist(&snapshot).expect("persist");
    }
}

fn new_compactor(
    paths: &DataPaths,
    buffer: &Arc<WriteBuffer>,
    retention: &BTreeMap<String, f64>,
) -> Compactor {
    let writer = Persister::new(
        paths.clone(),
        ParquetConfig::default(),
        buffer.clone(),
        crate::storage::LocalStorage::shared(),
        Default::default(),
    );
    let config = CompactionConfig {
        interval_s: 60.0,
        min_files: 4,
        target_file_bytes: 1 << 30,
    };
    Compactor::new(writer, config, retention, GRACE, Arc::default())
}

/// Every file under the tables directory, relative to the data directory, sorted.
fn files_on_disk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.join("tables")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(relative) = path.strip_prefix(root) {
                out.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

/// What a `*.parquet` glob of the table's directory finds.
fn globbed(root: &Path, table: &str) -> Vec<String> {
    files_on_disk(root)
        .into_iter()
        .filter(|f| f.starts_with(&format!("tables/{table}/")) && f.ends_with(".parquet"))
        .collect()
}

fn catalogued(buffer: &WriteBuffer) -> Vec<String> {
    let mut paths: Vec<String> = buffer.catalog_files().into_iter().map(|f| f.path).collect();
    paths.sort();
    paths
}

/// The table's rows as sorted text lines: equal multisets of rows give equal answers.
async fn rows_as_text(engine: &QueryEngine, table: &str) -> Vec<String> {
    let result = engine
        .execute(&format!("SELECT * FROM {table}"))
        .await
        .expect("query");
    lines(&result.batches)
}

fn lines(batches: &[RecordBatch]) -> Vec<String> {
    let text = arrow::util::pretty::pretty_format_batches(batches)
        .expect("format")
        .to_string();
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with('|'))
        .skip(1)
        .map(String::from)
        .collect();
    lines.sort();
    lines
}

#[tokio::test]
async fn small_files_merge_without_changing_an_answer_or_breaking_a_planned_query() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (paths, buffer, persister) =
        crate::persister::local_for_tests(dir.path(), ParquetConfig::default());
    persist_snapshots(&buffer, &persister, &[Table::Photons], 6);
    let engine = QueryEngine::new(buffer.clone(), &QueryConfig::default()).expect("engine");
    let before = rows_as_text(&engine, "photons").await;
    assert_eq!(before.len(), 300);
    let small_files = catalogued(&buffer);
    assert_eq!(small_files.len(), 6);

    // A query planned (and started) before the merge.
    let mut planned = engine
        .stream("SELECT * FROM photons")
        .await
        .expect("planned");
    let mut compactor = new_compactor(&paths, &buffer, &BTreeMap::new());
    let t0 = Instant::now();
    compactor.round(NOW_NS, t0);
    let merged = catalogued(&buffer);
    assert_eq!(merged.len(), 1);
    assert!(merged[0].ends_with(".parquet.merged"), "{merged:?}");
    // A directory glob still sees exactly the files the merge replaced.
    assert_eq!(globbed(dir.path(), "photons"), small_files);
    let mut planned_batches = Vec::new();
    while let Some(batch) = planned.next().await {
        planned_batches.push(batch.expect("the planned query reads the replaced files"));
    }
    assert_eq!(lines(&planned_batches), before);
    assert_eq!(rows_as_text(&engine, "photons").await, before);

    // Within the grace nothing moves; after it the merged file takes its .parquet name.
    compactor.round(NOW_NS, t0 + GRACE / 2);
    assert_eq!(catalogued(&buffer), merged);
    compactor.round(NOW_NS, t0 + GRACE);
    let finished = catalogued(&buffer);
    assert_eq!(
        finished,
        vec![merged[0].trim_end_matches(".merged").to_string()]
    );
    assert_eq!(globbed(dir.path(), "photons"), finished);
    assert_eq!(rows_as_text(&engine, "photons").await, before);
    // The .merged name goes after another grace; then the disk holds what the catalog names.
    compactor.round(NOW_NS, t0 + 2 * GRACE);
    assert_eq!(files_on_disk(dir.path()), finished);
    let saved = crate::catalog::Catalog::load(&paths.catalog_file()).expect("catalog");
    assert_eq!(saved.files, buffer.catalog_files());
    assert_eq!(saved.files[0].rows, 300);
    let counters = compactor.counters.snapshot();
    assert_eq!((counters.merges, counters.files_merged), (1, 6));

    // The merged file (small too) and two new ones are too few to merge; a third makes four.
    persist_snapshots(&buffer, &persister, &[Table::Photons], 2);
    compactor.round(NOW_NS, t0 + 3 * GRACE);
    assert_eq!(catalogued(&buffer).len(), 3);
    persist_snapshots(&buffer, &persister, &[Table::Photons], 1);
    compactor.round(NOW_NS, t0 + 4 * GRACE);
    assert_eq!(catalogued(&buffer).len(), 1);
    assert_eq!(rows_as_text(&engine, "photons").await.len(), 450);
}

#[tokio::test]
async fn a_crash_after_the_swap_leaves_a_complete_catalog_and_start_up_finishes_the_merge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (paths, buffer, persister) =
        crate::persister::local_for_tests(dir.path(), ParquetConfig::default());
    persist_snapshots(&buffer, &persister, &[Table::Photons], 5);
    let engine = QueryEngine::new(buffer.clone(), &QueryConfig::default()).expect("engine");
    let before = rows_as_text(&engine, "photons").await;
    let mut compactor = new_compactor(&paths, &buffer, &BTreeMap::new());
    compactor.round(NOW_NS, Instant::now());
    drop(compactor);
    drop(engine);

    // The crash: the process is gone, the disk holds the merged file and the five it replaced.
    assert_eq!(files_on_disk(dir.path()).len(), 6);
    let catalog = crate::catalog::Catalog::load(&paths.catalog_file()).expect("catalog");
    assert_eq!(catalog.files.len(), 1);
    assert!(catalog.files[0].path.ends_with(".merged"));
    // Start-up: strays removed, the merge finished at once (no query can hold a file yet).
    let buffer = Arc::new(WriteBuffer::new(
        catalog,
        paths.clone(),
        crate::storage::LocalStorage::shared(),
    ));
    let tables = buffer.tables();
    let on_disk = tables.list_table_files().expect("list");
    crate::table_store::remove_strays(tables.as_ref(), &buffer.catalog_files(), on_disk);
    let mut compactor = new_compactor(&paths, &buffer, &BTreeMap::new());
    compactor.finish_merges_at_start();
    let finished = catalogued(&buffer);
    assert_eq!(finished.len(), 1);
    assert!(finished[0].ends_with(".parquet"));
    assert_eq!(files_on_disk(dir.path()), finished);
    let engine = QueryEngine::new(buffer.clone(), &QueryConfig::default()).expect("engine");
    assert_eq!(rows_as_text(&engine, "photons").await, before);
}

#[tokio::test]
async fn a_merge_that_fails_leaves_the_catalog_and_files_as_they_were() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (paths, buffer, persister) =
        crate::persister::local_for_tests(dir.path(), ParquetConfig::default());
    persist_snapshots(&buffer, &persister, &[Table::Photons], 4);
    let before = files_on_disk(dir.path());
    // A file's pages are damaged (its footer is intact): the merge fails and changes nothing.
    let victim: PathBuf = paths.resolve(&buffer.catalog_files()[2].path);
    let saved = std::fs::read(&victim).expect("read");
    let mut damaged = saved.clone();
    let middle = saved.len() / 4;
    damaged[middle..middle + 64].fill(0xff);
    std::fs::write(&victim, &damaged).expect("damage");
    let mut compactor = new_compactor(&paths, &buffer, &BTreeMap::new());
    compactor.round(NOW_NS, Instant::now());
    assert_eq!(catalogued(&buffer).len(), 4);
    assert_eq!(compactor.counters.snapshot().errors, 1);
    assert_eq!(
        files_on_disk(dir.path()),
        before,
        "the failed merge left no file"
    );
    std::fs::write(&victim, saved).expect("restore");
    // Once the file is whole again the next round merges.
    compactor.round(NOW_NS, Instant::now());
    assert_eq!(catalogued(&buffer).len(), 1);
}

#[tokio::test]
async fn retention_drops_old_files_of_its_tables_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (paths, buffer, persister) =
        crate::persister::local_for_tests(dir.path(), ParquetConfig::default());
    // Rows of both tables arrived in the first microsecond of 1970.
    persist_snapshots(&buffer, &persister, &[Table::Spectra, Table::Photons], 2);
    let engine = QueryEngine::new(buffer.clone(), &QueryConfig::default()).expect("engine");
    let photons = rows_as_text(&engine, "photons").await;
    let retention = BTreeMap::from([("spectra".to_string(), 1.0)]);
    let mut compactor = new_compactor(&paths, &buffer, &retention);
    let t0 = Instant::now();
    // Half a day later nothing is old enough.
    compactor.round(43_200_000_000_000, t0);
    assert_eq!(rows_as_text(&engine, "spectra").await.len(), 100);
    // Two days later the spectra go, the photons (no retention) stay.
    let spectra_files: Vec<String> = globbed(dir.path(), "spectra");
    assert_eq!(spectra_files.len(), 2);
    compactor.round(2 * 86_400_000_000_000, t0);
    assert!(rows_as_text(&engine, "spectra").await.is_empty());
    assert_eq!(rows_as_text(&engine, "photons").await, photons);
    let counters = compactor.counters.snapshot();
    assert_eq!((counters.files_expired, counters.rows_expired), (2, 100));
    // The files stay for the grace (a planned query may read them), then go.
    assert_eq!(globbed(dir.path(), "spectra"), spectra_files);
    compactor.round(2 * 86_400_000_000_000, t0 + GRACE);
    assert!(globbed(dir.path(), "spectra").is_empty());
}

/// Rewrites a catalogued file as an earlier version wrote it, without `column` (the catalog
/// entry's size follows).
fn rewrite_without(paths: &DataPaths, buffer: &WriteBuffer, file: CatalogFile, column: &str) {
    let path = paths.resolve(&file.path);
    let reader =
        ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).expect("open"))
            .expect("reader")
            .build()
            .expect("build");
    let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().expect("read");
    let schema = batches[0].schema();
    let kept: Vec<usize> = (0..schema.fields().len())
        .filter(|&i| schema.field(i).name() != column)
        .collect();
    assert!(kept.len() < schema.fields().len(), "{column} is a column");
    let earlier = Arc::new(schema.project(&kept).expect("project"));
    let mut writer = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&path).expect("create"),
        earlier,
        None,
    )
    .expect("writer");
    for batch in &batches {
        writer
            .write(&batch.project(&kept).expect("project"))
            .expect("write");
    }
    writer.close().expect("close");
    let size_bytes = std::fs::metadata(&path).expect("size").len();
    let replaced = [file.path.clone()];
    buffer
        .replace_files(&replaced, vec![CatalogFile { size_bytes, ..file }])
        .expect("catalog");
}

#[tokio::test]
async fn files_of_an_earlier_layout_are_merged_with_its_missing_columns_as_nulls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (paths, buffer, persister) =
        crate::persister::local_for_tests(dir.path(), ParquetConfig::default());
    persist_snapshots(&buffer, &persister, &[Table::Photons], 4);
    // Two of the four files as a version before `condition_id` wrote them.
    for file in buffer.catalog_files().into_iter().take(2) {
        rewrite_without(&paths, &buffer, file, "condition_id");
    }
    let engine = QueryEngine::new(buffer.clone(), &QueryConfig::default()).expect("engine");
    let before = rows_as_text(&engine, "photons").await;
    assert_eq!(before.len(), 200);
    let nulls = "SELECT count(*) AS n FROM photons WHERE condition_id IS NULL";
    let null_rows = |batches: &[RecordBatch]| lines(batches);
    let before_nulls = null_rows(&engine.execute(nulls).await.expect("nulls").batches);
    assert_eq!(before_nulls, ["| 100 |"]);

    let mut compactor = new_compactor(&paths, &buffer, &BTreeMap::new());
    compactor.round(NOW_NS, Instant::now());
    let merged = buffer.catalog_files();
    assert_eq!(merged.len(), 1, "all four merged");
    assert_eq!(merged[0].rows, 200);
    assert_eq!(compactor.counters.snapshot().errors, 0);
    assert_eq!(rows_as_text(&engine, "photons").await, before);
    assert_eq!(
        null_rows(&engine.execute(nulls).await.expect("nulls").batches),
        before_nulls
    );
    // The merged file holds today's layout, stamped with today's version.
    let path = paths.resolve(&merged[0].path);
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).expect("open"))
            .expect("reader");
    assert_eq!(builder.schema().fields(), Table::Photons.schema().fields());
    let version = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| {
            kv.iter()
                .find(|kv| kv.key == flowdaq_schemas::SCHEMA_VERSION_KEY)
        })
        .and_then(|kv| kv.value.clone());
    assert_eq!(
        version,
        Some(format!("photons/{}", Table::Photons.schema_version()))
    );
}

#[tokio::test]
async fn a_file_of_an_unknown_layout_is_left_as_it_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (paths, buffer, persister) =
        crate::persister::local_for_tests(dir.path(), ParquetConfig::default());
    persist_snapshots(&buffer, &persister, &[Table::Photons], 5);
    // A non-nullable column missing: no version of flowdaq wrote this file.
    let odd = buffer.catalog_files()[0].clone();
    rewrite_without(&paths, &buffer, odd.clone(), "macro_time_ps");
    let mut compactor = new_compactor(&paths, &buffer, &BTreeMap::new());
    compactor.round(NOW_NS, Instant::now());
    let after = buffer.catalog_files();
    assert_eq!(after.len(), 2, "the four others merged");
    assert!(after.iter().any(|f| f.path == odd.path), "{after:?}");
    assert_eq!(compactor.counters.snapshot().errors, 0);
}
