//! The same contract on both table stores (a temporary data directory, and an in-memory object
//! store through the object-store code path), then the write path and SQL end to end over an
//! object store: persisted rows are read back by DataFusion through the registered store,
//! compaction merges and copies there, and start-up removes what the catalog does not list.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::Int64Array;
use datafusion::execution::object_store::ObjectStoreUrl;
use flowdaq_schemas::Table;
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt};

use super::faulty_object_store::FaultyObjectStore;
use super::*;
use crate::catalog::CatalogFile;
use crate::config::{CompactionConfig, ParquetConfig, QueryConfig};
use crate::paths::DataPaths;
use crate::persister::tests::rows_of;
use crate::persister::Persister;
use crate::query::QueryEngine;
use crate::write_buffer::WriteBuffer;

/// An object table store over `memory`, under `prefix`.
pub(crate) fn in_memory(memory: &Arc<InMemory>, prefix: &str) -> Arc<ObjectTableStore> {
    let store: Arc<dyn ObjectStore> = memory.clone();
    Arc::new(
        ObjectTableStore::new(
            store.clone(),
            store,
            ObjectStoreUrl::parse("s3://lab-bucket").expect("url"),
            prefix,
        )
        .expect("store"),
    )
}

/// Every object key in `memory`, sorted.
fn keys(memory: &InMemory) -> Vec<String> {
    // The in-memory store needs no reactor: any executor drives it, inside a runtime or not.
    futures::executor::block_on(async {
        use futures::TryStreamExt;
        let mut keys: Vec<String> = memory
            .list(None)
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .expect("list");
        keys.sort();
        keys
    })
}

fn write_file(tables: &dyn TableStore, relative: &str, bytes: &[u8]) {
    let mut file = tables.create(relative).expect("create");
    file.write_all(bytes).expect("write");
    file.commit().expect("commit");
}

fn content(tables: &dyn TableStore, relative: &str) -> Vec<u8> {
    use parquet::file::reader::{ChunkReader, Length};
    let reader = tables.read(relative).expect("read");
    reader
        .get_bytes(0, reader.len() as usize)
        .expect("bytes")
        .to_vec()
}

fn sorted(mut files: Vec<String>) -> Vec<String> {
    files.sort();
    files
}

/// The contract every table store keeps.
fn keeps_the_contract(tables: &dyn TableStore) {
    let empty = tables.load_catalog().expect("no catalog yet");
    assert_eq!((empty.version, empty.files.len()), (1, 0));
    let a = "tables/photons/date=2026-12-06/run=r1/000000000001.parquet";
    let b = "tables/photons/date=2026-12-06/run=r1/000000000002.parquet";
    write_file(tables, a, b"first file");
    {
        let mut unfinished = tables.create(b).expect("create");
        unfinished.write_all(b"never committed").expect("write");
    }
    assert_eq!(tables.list_table_files().expect("list"), [a]);
    assert_eq!(
        tables.read(b).expect_err("not committed").kind(),
        std::io::ErrorKind::NotFound
    );
    assert_eq!(content(tables, a), b"first file");
    tables.copy(a, b).expect("copy");
    tables.copy(a, b).expect("a second copy leaves it");
    assert_eq!(content(tables, b), b"first file");
    assert_eq!(sorted(tables.list_table_files().expect("list")), [a, b]);

    let catalog = Catalog {
        version: 1,
        wal_persisted_through: 9,
        next_file_id: 3,
        files: vec![CatalogFile {
            table: "photons".into(),
            path: a.into(),
            rows: 1,
            size_bytes: 10,
            min_arrival_time_ns: 1,
            max_arrival_time_ns: 2,
            run_id: "r1".into(),
            date: "2026-12-06".into(),
        }],
        seq_ledger: Default::default(),
    };
    tables.save_catalog(&catalog).expect("save");
    assert_eq!(tables.load_catalog().expect("load"), catalog);
    // Not strays: a Delta log's commit, and a file of another writer of the same tables.
    let delta_commit = "tables/photons/_delta_log/00000000000000000000.json";
    let other_writers = "tables/photons/date=2026-12-06/run=r1/lab-b-000000000002.parquet";
    write_file(tables, delta_commit, b"{}");
    write_file(tables, other_writers, b"PAR1");
    let listed = tables.list_table_files().expect("list");
    assert_eq!(
        remove_strays(tables, &catalog.files, listed),
        1,
        "b is a stray"
    );
    assert_eq!(
        sorted(tables.list_table_files().expect("list")),
        sorted(vec![
            a.to_string(),
            delta_commit.into(),
            other_writers.into()
        ])
    );
    tables.remove(delta_commit).expect("remove");
    tables.remove(other_writers).expect("remove");
    assert_eq!(
        tables.remove(b).expect_err("gone").kind(),
        std::io::ErrorKind::NotFound
    );
    tables.remove(a).expect("remove");
    assert!(tables.list_table_files().expect("list").is_empty());
}

#[test]
fn the_data_directory_keeps_the_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tables = LocalTableStore::new(
        DataPaths::new(dir.path()),
        crate::storage::LocalStorage::shared(),
    );
    keeps_the_contract(&tables);
    assert!(dir.path().join("catalog.json").exists());
}

#[test]
fn an_object_store_keeps_the_contract_under_its_prefix() {
    let memory = Arc::new(InMemory::new());
    let tables = in_memory(&memory, "lab-7/flowdaq/");
    keeps_the_contract(tables.as_ref());
    assert_eq!(keys(&memory), ["lab-7/flowdaq/catalog.json"]);
    assert_eq!(tables.describe(), "s3://lab-bucket/lab-7/flowdaq");
    assert_eq!(
        tables.scan_location("tables/x.parquet"),
        "lab-7/flowdaq/tables/x.parquet"
    );
}

#[test]
fn a_file_larger_than_a_part_goes_up_in_parts_and_an_abandoned_one_leaves_nothing() {
    let memory = Arc::new(InMemory::new());
    let tables = in_memory(&memory, "big");
    // 2.5 parts of distinct bytes, written in odd-sized pieces as a Parquet writer does.
    let bytes: Vec<u8> = (0..(5 * object::PART_BYTES / 2))
        .map(|i| (i % 251) as u8)
        .collect();
    let relative = "tables/spectra/date=2026-12-06/run=r/000000000001.parquet";
    let mut file = tables.create(relative).expect("create");
    for piece in bytes.chunks(999_983) {
        file.write_all(piece).expect("write");
    }
    assert!(
        keys(&memory).is_empty(),
        "nothing is visible before the commit, parts sent or not"
    );
    file.commit().expect("commit");
    assert_eq!(content(tables.as_ref(), relative), bytes);

    let abandoned = "tables/spectra/date=2026-12-06/run=r/000000000002.parquet";
    let mut file = tables.create(abandoned).expect("create");
    file.write_all(&bytes).expect("write");
    drop(file);
    assert_eq!(
        tables.list_table_files().expect("list"),
        [relative],
        "an abandoned upload is never an object"
    );
}

#[test]
fn a_corrupt_catalog_in_the_store_is_an_error_not_an_empty_catalog() {
    let memory = Arc::new(InMemory::new());
    let tables = in_memory(&memory, "p");
    futures::executor::block_on(memory.put(
        &object_store::path::Path::from("p/catalog.json"),
        b"{not json".to_vec().into(),
    ))
    .expect("put");
    let err = tables.load_catalog().expect_err("corrupt");
    assert!(
        matches!(err, CatalogError::Corrupt { ref path, .. } if path == "s3://lab-bucket/p/catalog.json"),
        "{err}"
    );
}

/// A write buffer, persister and query engine over `tables` in a fresh data directory.
fn server_parts(
    dir: &std::path::Path,
    tables: SharedTableStore,
) -> (Arc<WriteBuffer>, Persister, QueryEngine) {
    let paths = DataPaths::new(dir);
    std::fs::create_dir_all(paths.wal_dir()).expect("wal dir");
    let catalog = tables.load_catalog().expect("catalog");
    let buffer = Arc::new(WriteBuffer::with_tables(catalog, tables));
    let persister = Persister::new(
        paths,
        ParquetConfig::default(),
        buffer.clone(),
        crate::storage::LocalStorage::shared(),
        Default::default(),
    );
    let engine = QueryEngine::new(buffer.clone(), &QueryConfig::default()).expect("engine");
    (buffer, persister, engine)
}

async fn photon_count_and_sum(engine: &QueryEngine) -> (i64, i64) {
    let result = engine
        .execute("SELECT count(*) AS n, sum(micro_time_ps) AS s FROM photons WHERE channel >= 0")
        .await
        .expect("query");
    let batch = &result.batches[0];
    let column = |i: usize| {
        batch
            .column(i)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("int64")
            .value(0)
    };
    (column(0), column(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_persisted_to_an_object_store_are_queried_merged_and_found_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let memory = Arc::new(InMemory::new());
    let tables = in_memory(&memory, "lab");
    let (buffer, persister, engine) = server_parts(dir.path(), tables.clone());
    let mut expected_sum = 0i64;
    for generation in 0..5 {
        let batch = rows_of(Table::Photons, 40);
        let micro = batch
            .column_by_name("micro_time_ps")
            .and_then(|c| c.as_any().downcast_ref::<arrow::array::Int32Array>())
            .expect("micro_time_ps");
        expected_sum += micro.values().iter().map(|&v| i64::from(v)).sum::<i64>();
        buffer.insert(&[(Table::Photons, batch)]);
        let snapshot = buffer
            .take_snapshot(generation, Default::default())
            .expect("snapshot");
        persister.persist(&snapshot).expect("persist");
    }
    assert_eq!(photon_count_and_sum(&engine).await, (200, expected_sum));
    let parquet_keys = || {
        keys(&memory)
            .into_iter()
            .filter(|k| k.starts_with("lab/tables/photons/"))
            .count()
    };
    assert_eq!(parquet_keys(), 5);
    assert!(keys(&memory).contains(&"lab/catalog.json".to_string()));
    assert!(
        !dir.path().join("tables").exists() && !dir.path().join("catalog.json").exists(),
        "nothing but the WAL on the local disk"
    );

    // Compaction in the store: five files become one, the answer stays.
    let writer = Persister::new(
        DataPaths::new(dir.path()),
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
    let mut compactor = crate::compactor::Compactor::new(
        writer,
        config,
        &Default::default(),
        Duration::ZERO,
        Arc::default(),
    );
    let now = Instant::now();
    let merged = tokio::task::spawn_blocking(move || {
        compactor.round(0, now);
        compactor.round(0, now + Duration::from_millis(1));
        compactor
    })
    .await
    .expect("compaction rounds");
    drop(merged);
    assert_eq!(buffer.chunks(Table::Photons).files.len(), 1);
    assert_eq!(parquet_keys(), 1, "merged file only: {:?}", keys(&memory));
    assert_eq!(photon_count_and_sum(&engine).await, (200, expected_sum));

    // A stray (a persist that crashed before its catalog save) is gone at the next start, and
    // a new server over the same bucket answers the same.
    write_file(
        tables.as_ref(),
        "tables/photons/date=2026-12-06/run=r/999999999999.parquet",
        b"half a file",
    );
    drop((buffer, persister, engine));
    let restarted = crate::server::recover_with_tables(
        dir.path(),
        true,
        crate::storage::LocalStorage::shared(),
        tables.clone(),
    )
    .expect("recover");
    assert_eq!(parquet_keys(), 1, "the stray was removed");
    let engine = QueryEngine::new(restarted.buffer, &QueryConfig::default()).expect("engine");
    assert_eq!(photon_count_and_sum(&engine).await, (200, expected_sum));
}

/// A data directory written through injectable faults, with a buffer and a persister.
fn faulty_parts(
    dir: &std::path::Path,
) -> (
    Arc<crate::storage::FaultyStorage>,
    Arc<WriteBuffer>,
    Persister,
) {
    let faults = crate::storage::FaultyStorage::new();
    let paths = DataPaths::new(dir);
    std::fs::create_dir_all(paths.wal_dir()).expect("wal dir");
    let storage = faults.storage();
    let buffer = Arc::new(WriteBuffer::new(
        Catalog::default(),
        paths.clone(),
        storage.clone(),
    ));
    let persister = Persister::new(
        paths,
        ParquetConfig::default(),
        buffer.clone(),
        storage,
        Default::default(),
    );
    (faults, buffer, persister)
}

/// Persists `files` snapshots of 30 rows of `table`, one file each.
fn persist_files(buffer: &WriteBuffer, persister: &Persister, table: Table, files: u64) {
    for generation in 0..files {
        buffer.insert(&[(table, rows_of(table, 30))]);
        let snapshot = buffer
            .take_snapshot(generation, Default::default())
            .expect("snapshot");
        persister.persist(&snapshot).expect("persist");
    }
}

/// The next catalog save fails at `op`: before it lands (`Rename`), or after (`SyncDir`: the
/// new catalog is in place, its directory entry not fsynced). For `SyncDir`, the persist of
/// one file comes first: its file's directory is synced once before the catalog's.
fn fail_next_catalog_save(faults: &crate::storage::FaultyStorage, op: crate::storage::Op) {
    let (path, skip) = if op == crate::storage::Op::SyncDir {
        ("", 1)
    } else {
        ("catalog.json", 0)
    };
    faults.inject(crate::storage::Fault::once(
        op,
        path,
        skip,
        crate::storage::FaultKind::Os(crate::storage::fault::errno::EIO),
    ));
}

fn compactor(persister: Persister, grace: Duration) -> crate::compactor::Compactor {
    crate::compactor::Compactor::new(
        persister,
        CompactionConfig {
            interval_s: 60.0,
            min_files: 4,
            target_file_bytes: 1 << 30,
        },
        &Default::default(),
        grace,
        Arc::default(),
    )
}

#[test]
fn files_of_a_failed_catalog_save_stay_until_a_later_save_succeeds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (faults, buffer, persister) = faulty_parts(dir.path());
    fail_next_catalog_save(&faults, crate::storage::Op::Rename);
    let tables = buffer.tables();
    buffer.insert(&[(Table::Photons, rows_of(Table::Photons, 30))]);
    let snapshot = buffer
        .take_snapshot(0, Default::default())
        .expect("snapshot");
    let err = persister
        .persist(&snapshot)
        .expect_err("the catalog save fails");
    assert!(
        matches!(err, crate::persister::PersistError::Catalog(_)),
        "{err}"
    );
    // The save may have reached the disk: the catalog it wrote would name this file.
    let kept = tables.list_table_files().expect("list");
    assert_eq!(kept.len(), 1, "{kept:?}");

    let persisted = persister.persist(&snapshot).expect("the retry succeeds");
    assert_eq!(persisted.len(), 1);
    assert_eq!(
        tables.list_table_files().expect("list"),
        [persisted[0].path.clone()],
        "the first attempt's file goes once a catalog without it is saved"
    );
    assert_eq!(
        tables.load_catalog().expect("catalog").files,
        persisted,
        "the catalog names the retry's file only"
    );
}

#[test]
fn a_merged_file_whose_catalog_save_failed_stays_until_a_later_save_succeeds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (faults, buffer, persister) = faulty_parts(dir.path());
    persist_files(&buffer, &persister, Table::Photons, 5);
    fail_next_catalog_save(&faults, crate::storage::Op::Rename);
    let tables = buffer.tables();
    let before = sorted(tables.list_table_files().expect("list"));
    let grace = Duration::from_secs(65);
    let mut compactor = compactor(persister, grace);
    let start = Instant::now();
    compactor.round(0, start);
    let after_failure = sorted(tables.list_table_files().expect("list"));
    let unsure: Vec<&String> = after_failure
        .iter()
        .filter(|f| !before.contains(f))
        .collect();
    assert_eq!(unsure.len(), 1, "the merged file stays: {after_failure:?}");
    assert!(unsure[0].ends_with(".merged"));
    let unsure = unsure[0].clone();
    assert_eq!(buffer.catalog_files().len(), 5, "the catalog is unchanged");

    // The next round merges again and saves; the first merged file is then out for good.
    compactor.round(0, start + Duration::from_secs(1));
    let catalogued: Vec<String> = buffer.catalog_files().into_iter().map(|f| f.path).collect();
    assert_eq!(catalogued.len(), 1);
    assert_ne!(catalogued[0], unsure);
    assert!(tables.list_table_files().expect("list").contains(&unsure));
    compactor.round(0, start + Duration::from_secs(1) + grace);
    compactor.round(0, start + Duration::from_secs(2) + 2 * grace);
    let left = tables.list_table_files().expect("list");
    assert!(!left.contains(&unsure), "{left:?}");
    let catalogued: Vec<String> = buffer.catalog_files().into_iter().map(|f| f.path).collect();
    assert_eq!(left, catalogued, "only the catalogued file is left");
}

#[test]
fn a_catalog_save_that_landed_though_it_failed_loses_no_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (faults, buffer, persister) = faulty_parts(dir.path());
    persist_files(&buffer, &persister, Table::Photons, 2);
    // The next save renames its catalog into place, then fails to fsync the directory.
    fail_next_catalog_save(&faults, crate::storage::Op::SyncDir);
    buffer.insert(&[(Table::Photons, rows_of(Table::Photons, 30))]);
    let snapshot = buffer
        .take_snapshot(2, Default::default())
        .expect("snapshot");
    let err = persister.persist(&snapshot).expect_err("reported failed");
    assert!(
        matches!(err, crate::persister::PersistError::Catalog(_)),
        "{err}"
    );
    drop((buffer, persister));
    // A crash now: the catalog on disk is the one that "failed", and names the third file.
    let recovered =
        crate::server::recover(dir.path(), true, crate::storage::LocalStorage::shared())
            .expect("recover");
    let tables = recovered.buffer.tables();
    let catalog = tables.load_catalog().expect("catalog");
    assert_eq!(catalog.files.len(), 3);
    assert_eq!(catalog.files.iter().map(|f| f.rows).sum::<u64>(), 90);
    for file in &catalog.files {
        tables
            .read(&file.path)
            .expect("every catalogued file is there");
    }
}

#[test]
fn a_merge_finished_again_after_a_failed_save_keeps_its_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (faults, buffer, persister) = faulty_parts(dir.path());
    let photons_writer = Persister::new(
        DataPaths::new(dir.path()),
        ParquetConfig::default(),
        buffer.clone(),
        faults.storage(),
        Default::default(),
    );
    persist_files(&buffer, &photons_writer, Table::Photons, 5);
    let tables = buffer.tables();
    let grace = Duration::from_secs(65);
    let mut compactor = compactor(persister, grace);
    let start = Instant::now();
    compactor.round(0, start);
    // Spectra files to merge in the round whose finish of the photons merge fails, so that a
    // catalog save succeeds after the failed one in the same round.
    persist_files(&buffer, &photons_writer, Table::Spectra, 5);
    fail_next_catalog_save(&faults, crate::storage::Op::Rename);
    compactor.round(0, start + grace);
    // The photons merge is finished on the next round (inside the grace of anything doomed by
    // the one before), then rounds run until every grace has passed.
    for step in 1..=4u32 {
        compactor.round(
            0,
            start + grace * step + Duration::from_secs(u64::from(step)),
        );
    }
    let catalog = buffer.catalog_files();
    assert_eq!(catalog.len(), 2, "one merged file per table: {catalog:?}");
    for file in &catalog {
        assert!(!file.path.ends_with(".merged"), "{}", file.path);
        tables
            .read(&file.path)
            .unwrap_or_else(|err| panic!("{} is catalogued but gone: {err}", file.path));
    }
    for table in ["photons", "spectra"] {
        let rows: u64 = catalog
            .iter()
            .filter(|f| f.table == table)
            .map(|f| f.rows)
            .sum();
        assert_eq!(rows, 150, "{table}");
    }
    let mut left = tables.list_table_files().expect("list");
    left.sort();
    let mut named: Vec<String> = catalog.into_iter().map(|f| f.path).collect();
    named.sort();
    assert_eq!(left, named);
}

fn catalog_with(files: u64) -> Catalog {
    Catalog {
        version: 1,
        next_file_id: files,
        wal_persisted_through: files,
        ..Catalog::default()
    }
}

#[test]
fn a_second_writer_never_overwrites_the_catalog() {
    let memory = Arc::new(InMemory::new());
    let first = in_memory(&memory, "shared");
    let second = in_memory(&memory, "shared");
    first.load_catalog().expect("absent");
    second.load_catalog().expect("absent");
    first.save_catalog(&catalog_with(1)).expect("first save");
    let err = second
        .save_catalog(&catalog_with(7))
        .expect_err("the other writer's catalog is there");
    assert!(err.to_string().contains("another writer"), "{err}");
    first
        .save_catalog(&catalog_with(2))
        .expect("the first writer goes on");
    assert_eq!(first.load_catalog().expect("load"), catalog_with(2));
    // Having read the current catalog, the second writer may save over it.
    assert_eq!(second.load_catalog().expect("load"), catalog_with(2));
    second.save_catalog(&catalog_with(3)).expect("after a load");
    let err = first.save_catalog(&catalog_with(4)).expect_err("stale");
    assert!(err.to_string().contains("another writer"), "{err}");
}

#[test]
fn a_save_whose_answer_was_lost_is_recognised_and_a_late_one_never_wins() {
    let memory = Arc::new(InMemory::new());
    let lost = Arc::new(FaultyObjectStore {
        inner: memory.clone(),
        ..FaultyObjectStore::default()
    });
    let store: Arc<dyn ObjectStore> = lost.clone();
    let tables = ObjectTableStore::new(
        store.clone(),
        store,
        ObjectStoreUrl::parse("s3://lab-bucket").expect("url"),
        "p",
    )
    .expect("store");
    tables.load_catalog().expect("absent");
    tables.save_catalog(&catalog_with(1)).expect("save");
    let catalog_key = object_store::path::Path::from("p/catalog.json");
    let first_version = futures::executor::block_on(memory.head(&catalog_key))
        .expect("head")
        .e_tag;
    // The next save lands, but the answer is lost: reported failed.
    lost.lose_next_answer
        .store(true, std::sync::atomic::Ordering::SeqCst);
    tables
        .save_catalog(&catalog_with(2))
        .expect_err("reported failed");
    // The save after it finds its own earlier write, not another writer's, and goes on.
    tables.save_catalog(&catalog_with(3)).expect("recognised");
    assert_eq!(tables.load_catalog().expect("load"), catalog_with(3));
    // A save delayed in the network, conditional on the version it was made against, lands
    // late: the store refuses it, and the later catalog stays.
    let late = futures::executor::block_on(memory.put_opts(
        &catalog_key,
        serde_json::to_vec(&catalog_with(2)).expect("json").into(),
        object_store::PutOptions {
            mode: object_store::PutMode::Update(object_store::UpdateVersion {
                e_tag: first_version,
                version: None,
            }),
            ..Default::default()
        },
    ));
    assert!(
        matches!(late, Err(object_store::Error::Precondition { .. })),
        "{late:?}"
    );
    assert_eq!(tables.load_catalog().expect("load"), catalog_with(3));
    // A save of the same bytes that landed before its retry is taken as done.
    lost.lose_next_answer
        .store(true, std::sync::atomic::Ordering::SeqCst);
    tables
        .save_catalog(&catalog_with(4))
        .expect_err("reported failed");
    tables
        .save_catalog(&catalog_with(4))
        .expect("the same catalog is there");
    assert_eq!(tables.load_catalog().expect("load"), catalog_with(4));
}
