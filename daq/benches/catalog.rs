//! What one persist pays for the catalog as the file count grows: `catalog.json` is rewritten
//! whole (temp file, fsync, rename, directory fsync) each time a snapshot's files are added.
//! Compaction keeps the count down; this says how much that matters. Also what a query pays
//! to take a table's file list from the write buffer, under the lock ingest commits share.
//!
//! With `[storage] delta_lake = true`, a persist also commits its files to the table's Delta
//! log: `delta_commit` is that commit (one file added) as the table's file count grows, on the
//! local disk, a checkpoint every 100 commits included.
//!
//! `cargo bench -p flowdaq-daq --bench catalog`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use flowdaq_daq::catalog::{Catalog, CatalogFile};
use flowdaq_daq::delta_log::DeltaLog;
use flowdaq_daq::paths::DataPaths;
use flowdaq_daq::storage::LocalStorage;
use flowdaq_daq::write_buffer::WriteBuffer;
use flowdaq_schemas::Table;

/// A catalog of `files` files of realistic paths and ranges.
fn catalog_of(files: usize) -> Catalog {
    let mut catalog = Catalog {
        version: 1,
        next_file_id: files as u64,
        ..Catalog::default()
    };
    catalog.files = (0..files)
        .map(|i| CatalogFile {
            table: ["spectra", "spectral_features", "photons"][i % 3].to_string(),
            path: format!(
                "tables/spectra/date=2026-12-06/run=run-{}/{i:012}.parquet",
                i / 1000
            ),
            rows: 5_000,
            size_bytes: 1_048_576 + i as u64,
            min_arrival_time_ns: 1_796_083_200_000_000_000 + i as i64 * 1_000_000_000,
            max_arrival_time_ns: 1_796_083_200_000_000_000 + i as i64 * 1_000_000_000 + 999,
            run_id: format!("run-{}", i / 1000),
            date: "2026-12-06".to_string(),
        })
        .collect();
    catalog
}

fn save(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("catalog.json");
    let mut group = c.benchmark_group("catalog_save");
    group.sample_size(10);
    for files in [1_000, 10_000, 100_000] {
        let catalog = catalog_of(files);
        group.bench_with_input(
            BenchmarkId::from_parameter(files),
            &catalog,
            |b, catalog| {
                b.iter(|| {
                    // What a persist does: copy the catalog, add a file, save it.
                    let mut next = catalog.clone();
                    next.files.push(catalog.files[0].clone());
                    next.save(&LocalStorage, &path).expect("save");
                })
            },
        );
    }
    group.finish();
}

fn table_files(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut group = c.benchmark_group("catalog_table_files");
    for files in [1_000, 10_000, 100_000] {
        let buffer = WriteBuffer::new(
            catalog_of(files),
            DataPaths::new(dir.path()),
            LocalStorage::shared(),
        );
        group.bench_with_input(BenchmarkId::from_parameter(files), &buffer, |b, buffer| {
            // What planning a query over `spectra` does first.
            b.iter(|| buffer.chunks(Table::Spectra))
        });
    }
    group.finish();
}

fn delta_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("delta_commit");
    group.sample_size(10);
    for files in [1_000, 10_000, 100_000] {
        let dir = tempfile::tempdir().expect("tempdir");
        let tables = dir.path().join("tables");
        std::fs::create_dir_all(&tables).expect("tables dir");
        let url = url::Url::from_directory_path(&tables).expect("url");
        let log = DeltaLog::new(
            std::sync::Arc::new(object_store::local::LocalFileSystem::new()),
            url,
            None,
        )
        .expect("log");
        let mut catalog = catalog_of(files);
        log.sync(&catalog).expect("first commit");
        let mut next_id = files;
        group.bench_function(BenchmarkId::from_parameter(files), |b| {
            b.iter(|| {
                // What a persist adds: one more file of the same table.
                let mut file = catalog.files[0].clone();
                file.path =
                    format!("tables/spectra/date=2026-12-06/run=run-new/{next_id:012}.parquet");
                next_id += 1;
                catalog.files.push(file);
                catalog.wal_persisted_through += 1;
                log.sync(&catalog).expect("commit")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, save, table_files, delta_commit);
criterion_main!(benches);
