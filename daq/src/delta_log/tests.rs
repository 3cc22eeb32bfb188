//! The Delta logs follow the catalog: persists add files, compaction swaps them with
//! `dataChange = false`, retention removes them; a sync lost to a crash is made good at start;
//! a file the log names is never deleted; two writers commit to one table concurrently and
//! neither loses a commit or touches the other's files.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowdaq_schemas::Table;
use object_store::memory::InMemory;
use object_store::ObjectStore;
use serde_json::Value;

use super::*;
use crate::catalog::{Catalog, CatalogFile};
use crate::config::{CompactionConfig, ParquetConfig};
use crate::paths::DataPaths;
use crate::persister::tests::rows_of;
use crate::persister::Persister;
use crate::table_store::faulty_object_store::FaultyObjectStore;
use crate::table_store::{LocalTableStore, SharedTableStore, TableStore};
use crate::write_buffer::WriteBuffer;

/// A data directory's table store with Delta logs.
fn local_delta_store(dir: &std::path::Path) -> Arc<DeltaTableStore> {
    let inner =
        LocalTableStore::shared(DataPaths::new(dir), crate::storage::LocalStorage::shared());
    let (root, url) = inner.tables_root().expect("tables root");
    let log = DeltaLog::new(root, url, None).expect("log");
    Arc::new(
        DeltaTableStore::new(inner, Arc::new(log), Arc::default())
            .with_reader_grace(Duration::ZERO),
    )
}

/// The commits of a local Delta table, oldest first, each as its actions.
fn commits(dir: &std::path::Path, table: Table) -> Vec<Vec<Value>> {
    let log_dir = dir.join("tables").join(table.name()).join("_delta_log");
    let mut names: Vec<String> = std::fs::read_dir(&log_dir)
        .expect("log dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|name| {
            std::fs::read_to_string(log_dir.join(name))
                .expect("commit")
                .lines()
                .map(|line| serde_json::from_str(line).expect("action"))
                .collect()
        })
        .collect()
}

fn actions<'a>(commit: &'a [Value], kind: &str) -> Vec<&'a Value> {
    commit.iter().filter_map(|a| a.get(kind)).collect()
}

/// Every key in `memory` (the in-memory store needs no reactor: any executor drives it).
fn memory_keys(memory: &InMemory) -> Vec<String> {
    futures::executor::block_on(async {
        use futures::TryStreamExt;
        memory
            .list(None)
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .expect("list")
    })
}

fn parts(dir: &std::path::Path, tables: SharedTableStore) -> (Arc<WriteBuffer>, Persister) {
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
    (buffer, persister)
}

fn persist(buffer: &WriteBuffer, persister: &Persister, table: Table, wal_through: u64) {
    buffer.insert(&[(table, rows_of(table, 30))]);
    let snapshot = buffer
        .take_snapshot(wal_through, Default::default())
        .expect("snapshot");
    persister.persist(&snapshot).expect("persist");
}

fn catalog_paths(buffer: &WriteBuffer, table: Table) -> Vec<String> {
    let mut paths: Vec<String> = buffer
        .catalog_files()
        .into_iter()
        .filter(|f| f.table == table.name())
        .map(|f| f.path)
        .collect();
    paths.sort();
    paths
}

#[test]
fn persists_compaction_and_retention_reach_the_delta_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tables = local_delta_store(dir.path());
    let (buffer, persister) = parts(dir.path(), tables.clone());
    for wal_through in 1..=5 {
        persist(&buffer, &persister, Table::Photons, wal_through);
    }
    persist(&buffer, &persister, Table::Spectra, 6);
    let log = tables.log();
    assert_eq!(
        log.live_files(Table::Photons).expect("photons"),
        catalog_paths(&buffer, Table::Photons)
    );
    assert_eq!(
        log.live_files(Table::Spectra).expect("spectra"),
        catalog_paths(&buffer, Table::Spectra)
    );
    assert!(log
        .live_files(Table::FlowFeatures)
        .expect("no flow table")
        .is_empty());
    let photons = commits(dir.path(), Table::Photons);
    assert_eq!(photons.len(), 6, "a create, then one commit per persist");
    let metadata = actions(&photons[0], "metaData");
    assert_eq!(
        metadata[0]["partitionColumns"],
        serde_json::json!(["date", "run"])
    );
    for (version, commit) in photons.iter().enumerate().skip(1) {
        let add = actions(commit, "add");
        assert_eq!(add.len(), 1);
        assert_eq!(add[0]["dataChange"], true);
        assert!(add[0]["partitionValues"]["date"].is_string());
        let stats: Value =
            serde_json::from_str(add[0]["stats"].as_str().expect("stats")).expect("stats json");
        assert_eq!(stats["numRecords"], 30);
        let txn = actions(commit, "txn");
        assert_eq!(txn[0]["appId"], "flowdaq");
        assert_eq!(txn[0]["version"], version as u64, "the WAL watermark");
    }
    assert!(
        !tables
            .list_table_files()
            .expect("list")
            .iter()
            .any(|f| f.contains("_delta_log")),
        "the logs are not table files"
    );

    // Compaction: five files become one with the same rows; not a change of data.
    let mut compactor = crate::compactor::Compactor::new(
        Persister::new(
            DataPaths::new(dir.path()),
            ParquetConfig::default(),
            buffer.clone(),
            crate::storage::LocalStorage::shared(),
            Default::default(),
        ),
        CompactionConfig {
            interval_s: 60.0,
            min_files: 4,
            target_file_bytes: 1 << 30,
        },
        &BTreeMap::from([("spectra".to_string(), 1.0)]),
        Duration::ZERO,
        Arc::default(),
    );
    let before = catalog_paths(&buffer, Table::Photons);
    let now = Instant::now();
    compactor.round(0, now);
    compactor.round(0, now + Duration::from_millis(1));
    compactor.round(0, now + Duration::from_millis(2));
    let after = catalog_paths(&buffer, Table::Photons);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(log.live_files(Table::Photons).expect("photons"), after);
    let photons = commits(dir.path(), Table::Photons);
    let swaps: Vec<&Vec<Value>> = photons[6..].iter().collect();
    assert!(!swaps.is_empty());
    for commit in &swaps {
        for add in actions(commit, "add") {
            assert_eq!(add["dataChange"], false, "{commit:?}");
        }
        for remove in actions(commit, "remove") {
            assert_eq!(remove["dataChange"], false, "{commit:?}");
        }
        let info = actions(commit, "commitInfo");
        assert_eq!(info[0]["operation"], "OPTIMIZE");
    }
    for replaced in &before {
        assert!(
            !dir.path().join(replaced).exists(),
            "{replaced} deleted once the log removed it"
        );
    }

    // Retention: spectra older than a day go; rows gone is a change of data.
    let far_future_ns =
        10 * 86_400_000_000_000i64 + chrono::Utc::now().timestamp_nanos_opt().expect("now");
    compactor.round(far_future_ns, now + Duration::from_millis(3));
    compactor.round(far_future_ns, now + Duration::from_millis(4));
    assert!(catalog_paths(&buffer, Table::Spectra).is_empty());
    assert!(log.live_files(Table::Spectra).expect("spectra").is_empty());
    let spectra = commits(dir.path(), Table::Spectra);
    let last = spectra.last().expect("retention commit");
    let removes = actions(last, "remove");
    assert_eq!(removes.len(), 1);
    assert_eq!(removes[0]["dataChange"], true);
    assert_eq!(actions(last, "commitInfo")[0]["operation"], "DELETE");
    assert_eq!(tables.sync_stats().failures, 0);
}

#[test]
fn a_sync_lost_to_a_crash_is_made_good_at_start_and_nothing_is_committed_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tables = local_delta_store(dir.path());
    let (buffer, persister) = parts(dir.path(), tables.clone());
    persist(&buffer, &persister, Table::Photons, 1);
    persist(&buffer, &persister, Table::Photons, 2);
    let synced = commits(dir.path(), Table::Photons).len();

    // A crash between a catalog save and its sync: the catalog gains a file and loses one,
    // the log has not seen either.
    let inner = LocalTableStore::shared(
        DataPaths::new(dir.path()),
        crate::storage::LocalStorage::shared(),
    );
    let mut catalog = inner.load_catalog().expect("catalog");
    let lost = catalog.files.remove(0);
    let mut gained = catalog.files[0].clone();
    gained.path = gained.path.replace(".parquet", "9.parquet");
    inner
        .copy(&catalog.files[0].path, &gained.path)
        .expect("copy");
    catalog.files.push(gained.clone());
    catalog.wal_persisted_through = 3;
    inner.save_catalog(&catalog).expect("save without sync");
    drop((buffer, persister, tables));

    let tables = local_delta_store(dir.path());
    assert!(
        tables.log().names(&lost.path),
        "before start-up, the log still names the file the catalog lost"
    );
    let recovered = crate::server::recover_with_tables(
        dir.path(),
        true,
        crate::storage::LocalStorage::shared(),
        tables.clone(),
    )
    .expect("recover");
    let mut expected: Vec<String> = catalog.files.iter().map(|f| f.path.clone()).collect();
    expected.sort();
    assert_eq!(
        tables.log().live_files(Table::Photons).expect("photons"),
        expected
    );
    let after = commits(dir.path(), Table::Photons);
    assert_eq!(
        after.len(),
        synced + 1,
        "one commit made the difference good"
    );
    assert_eq!(actions(&after[synced], "txn")[0]["version"], 3);
    assert!(
        !dir.path().join(&lost.path).exists(),
        "out of catalog and log, the stray is removed at start"
    );

    // Saving the same catalog again commits nothing.
    recovered
        .buffer
        .tables()
        .save_catalog(&catalog)
        .expect("save again");
    assert_eq!(commits(dir.path(), Table::Photons).len(), synced + 1);
}

#[test]
fn a_file_the_delta_log_names_is_never_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tables = local_delta_store(dir.path());
    let (buffer, persister) = parts(dir.path(), tables.clone());
    persist(&buffer, &persister, Table::Photons, 1);
    let path = catalog_paths(&buffer, Table::Photons).remove(0);
    let err = tables.remove(&path).expect_err("named by the log");
    assert!(err.to_string().contains("Delta log"), "{err}");
    assert!(dir.path().join(&path).exists());

    // Once the catalog (and with it the log) drops it, it can go: after the readers' grace.
    buffer
        .replace_files(std::slice::from_ref(&path), Vec::new())
        .expect("drop from catalog");
    assert!(tables
        .log()
        .live_files(Table::Photons)
        .expect("photons")
        .is_empty());
    let patient = DeltaTableStore::new(
        LocalTableStore::shared(
            DataPaths::new(dir.path()),
            crate::storage::LocalStorage::shared(),
        ),
        tables.log().clone(),
        Arc::default(),
    );
    let err = patient
        .remove(&path)
        .expect_err("within the readers' grace");
    assert!(err.to_string().contains("older versions"), "{err}");
    assert!(dir.path().join(&path).exists());
    tables.remove(&path).expect("removed");
    assert!(!dir.path().join(&path).exists());
}

/// A catalog of `files` files of writer `writer` in the photons table, at watermark `through`.
fn writer_catalog(writer: &str, files: u64, through: u64) -> Catalog {
    Catalog {
        version: 1,
        wal_persisted_through: through,
        next_file_id: files + 1,
        files: (1..=files)
            .map(|id| CatalogFile {
                table: "photons".into(),
                path: format!("tables/photons/date=2026-12-07/run=r1/{writer}-{id:012}.parquet"),
                rows: 10,
                size_bytes: 100,
                min_arrival_time_ns: 1,
                max_arrival_time_ns: 2,
                run_id: "r1".into(),
                date: "2026-12-07".into(),
            })
            .collect(),
        seq_ledger: Default::default(),
    }
}

#[test]
fn two_writers_commit_to_one_table_concurrently_and_lose_nothing() {
    let memory: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let url = url::Url::parse("s3://lab-bucket/shared/tables/").expect("url");
    let log_of = |writer: &str| {
        Arc::new(DeltaLog::new(memory.clone(), url.clone(), Some(writer.to_string())).expect("log"))
    };
    let logs = [log_of("lab-a"), log_of("lab-b")];
    let rounds = 12u64;
    std::thread::scope(|scope| {
        for (log, writer) in logs.iter().zip(["lab-a", "lab-b"]) {
            scope.spawn(move || {
                for files in 1..=rounds {
                    log.sync(&writer_catalog(writer, files, files * 10))
                        .unwrap_or_else(|e| panic!("{writer}: {e}"));
                }
            });
        }
    });
    let reader = log_of("reader");
    let live = reader.live_files(Table::Photons).expect("photons");
    let mut expected: Vec<String> = ["lab-a", "lab-b"]
        .iter()
        .flat_map(|w| {
            writer_catalog(w, rounds, 0)
                .files
                .into_iter()
                .map(|f| f.path)
        })
        .collect();
    expected.sort();
    assert_eq!(live, expected, "every commit of both writers, each once");

    // One writer's compaction-like change never touches the other's files.
    let mut shrunk = writer_catalog("lab-a", rounds, 200);
    shrunk.files.truncate(2);
    logs[0].sync(&shrunk).expect("lab-a shrinks");
    let live = reader.live_files(Table::Photons).expect("photons");
    assert_eq!(live.iter().filter(|p| p.contains("/lab-a-")).count(), 2);
    assert_eq!(
        live.iter().filter(|p| p.contains("/lab-b-")).count(),
        rounds as usize
    );

    // Each writer's watermark is its own application transaction.
    let table = reader
        .lock_tables()
        .remove(&Table::Photons)
        .expect("loaded");
    let state = table.snapshot().expect("state").clone();
    let log_store = table.log_store();
    let versions = reader
        .block_on(async move {
            Ok((
                state
                    .transaction_version(log_store.as_ref(), "flowdaq-lab-a")
                    .await?,
                state
                    .transaction_version(log_store.as_ref(), "flowdaq-lab-b")
                    .await?,
            ))
        })
        .expect("txn versions");
    assert_eq!(versions, (Some(200), Some(rounds as i64 * 10)));
}

#[test]
fn an_object_store_holds_the_logs_under_its_prefix() {
    let memory = Arc::new(InMemory::new());
    let inner: SharedTableStore = crate::table_store::tests::in_memory(&memory, "lab/2026");
    let (root, url) = inner.tables_root().expect("root");
    assert_eq!(url.as_str(), "s3://lab-bucket/lab/2026/tables/");
    let tables = Arc::new(DeltaTableStore::new(
        inner,
        Arc::new(DeltaLog::new(root, url, None).expect("log")),
        Arc::default(),
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let (buffer, persister) = parts(dir.path(), tables.clone());
    persist(&buffer, &persister, Table::Photons, 1);
    let keys = memory_keys(&memory);
    assert!(
        keys.iter()
            .any(|k| k == "lab/2026/tables/photons/_delta_log/00000000000000000001.json"),
        "{keys:?}"
    );
    assert_eq!(
        tables.log().live_files(Table::Photons).expect("photons"),
        catalog_paths(&buffer, Table::Photons)
    );
}

#[test]
fn a_checkpoint_every_hundred_commits_is_read_by_a_new_reader() {
    let memory = Arc::new(InMemory::new());
    let store: Arc<dyn ObjectStore> = memory.clone();
    let url = url::Url::parse("s3://lab-bucket/tables/").expect("url");
    let log = DeltaLog::new(store.clone(), url.clone(), Some("lab-a".into())).expect("log");
    for files in 1..=100 {
        let report = log
            .sync(&writer_catalog("lab-a", files, files))
            .expect("sync");
        assert_eq!(report.commits, 1);
    }
    let keys = memory_keys(&memory);
    let checkpoints: Vec<&String> = keys
        .iter()
        .filter(|k| k.ends_with(".checkpoint.parquet"))
        .collect();
    assert_eq!(checkpoints.len(), 1, "{keys:?}");
    let reader = DeltaLog::new(store, url, None).expect("reader");
    assert_eq!(
        reader.live_files(Table::Photons).expect("photons").len(),
        100
    );
}

#[test]
fn commits_missed_while_the_log_store_is_down_follow_with_the_next_persist() {
    let memory = Arc::new(InMemory::new());
    let inner: SharedTableStore = crate::table_store::tests::in_memory(&memory, "lab");
    let (_, url) = inner.tables_root().expect("root");
    let flaky = Arc::new(FaultyObjectStore {
        inner: memory.clone(),
        ..FaultyObjectStore::default()
    });
    let counters = Arc::new(DeltaSyncCounters::default());
    let tables = Arc::new(DeltaTableStore::new(
        inner,
        Arc::new(DeltaLog::new(flaky.clone(), url, None).expect("log")),
        counters.clone(),
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let (buffer, persister) = parts(dir.path(), tables.clone());
    persist(&buffer, &persister, Table::Photons, 1);
    assert_eq!(counters.snapshot().commits, 1);

    flaky.down.store(true, std::sync::atomic::Ordering::SeqCst);
    persist(&buffer, &persister, Table::Photons, 2);
    let down = counters.snapshot();
    assert!(down.behind && down.failures >= 1, "{down:?}");
    assert_eq!(
        catalog_paths(&buffer, Table::Photons).len(),
        2,
        "the persist went on"
    );
    assert_eq!(
        tables
            .log()
            .live_files(Table::Photons)
            .expect("photons")
            .len(),
        1
    );

    flaky.down.store(false, std::sync::atomic::Ordering::SeqCst);
    persist(&buffer, &persister, Table::Photons, 3);
    let up = counters.snapshot();
    assert!(!up.behind, "{up:?}");
    assert_eq!(
        up.commits, 2,
        "the missed file and the new one in one commit"
    );
    assert_eq!(
        tables.log().live_files(Table::Photons).expect("photons"),
        catalog_paths(&buffer, Table::Photons)
    );
}

#[test]
fn compactions_are_told_from_changes_of_data_in_one_difference() {
    let d = "date=2026-12-07/run=r1";
    let merged = format!("{d}/000000000009.parquet.merged");
    let replaced = [
        format!("{d}/000000000001.parquet"),
        format!("{d}/000000000002.parquet"),
    ];
    let persisted = "date=2026-12-07/run=r2/000000000010.parquet".to_string();
    let expired = "date=2026-11-01/run=r0/000000000000.parquet".to_string();
    // A merge, a persist and a retention that one sync commits together (the ones before failed).
    let added = [merged.as_str(), persisted.as_str()];
    let removed = [replaced[0].as_str(), replaced[1].as_str(), expired.as_str()];
    let compaction = compaction_paths(added.iter().copied(), removed.iter().copied());
    let expected: HashSet<&str> = [merged.as_str(), replaced[0].as_str(), replaced[1].as_str()]
        .into_iter()
        .collect();
    assert_eq!(compaction, expected);
    // A merge finished: its final name in, its `.merged` name out.
    let finished = format!("{d}/000000000009.parquet");
    let compaction = compaction_paths(
        [finished.as_str()].into_iter(),
        [merged.as_str()].into_iter(),
    );
    assert_eq!(compaction.len(), 2);
}

#[test]
fn other_writers_files_are_flowdaq_files_only() {
    assert!(written_by_flowdaq(
        "date=d/run=r/lab-b-000000000001.parquet"
    ));
    assert!(written_by_flowdaq("date=d/run=r/000000000001.parquet"));
    assert!(!written_by_flowdaq(
        "date=d/run=r/part-00000-1bb9c3e3-c000.snappy.parquet"
    ));
}

#[test]
fn a_lost_catalog_leaves_the_delta_log_as_it_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tables = local_delta_store(dir.path());
    let (buffer, persister) = parts(dir.path(), tables.clone());
    persist(&buffer, &persister, Table::Photons, 1);
    persist(&buffer, &persister, Table::Photons, 2);
    let named = catalog_paths(&buffer, Table::Photons);
    drop((buffer, persister, tables));
    std::fs::remove_file(dir.path().join("catalog.json")).expect("lose the catalog");

    let tables = local_delta_store(dir.path());
    crate::server::recover_with_tables(
        dir.path(),
        true,
        crate::storage::LocalStorage::shared(),
        tables.clone(),
    )
    .expect("recover");
    assert_eq!(
        tables.log().live_files(Table::Photons).expect("photons"),
        named,
        "an empty catalog is not a reason to empty the log"
    );
    assert!(named.iter().all(|path| dir.path().join(path).exists()));
}
