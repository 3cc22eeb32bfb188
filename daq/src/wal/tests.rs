//! WAL round trips, rotation and torn tails, on real files.

use std::sync::Arc;

use arrow::array::{ArrayRef, UInt64Array};
use arrow::record_batch::RecordBatch;
use flowdaq_schemas::Table;

use super::*;

fn batch(values: &[u64]) -> RecordBatch {
    RecordBatch::try_from_iter([(
        "seq",
        Arc::new(UInt64Array::from(values.to_vec())) as ArrayRef,
    )])
    .expect("batch")
}

#[test]
fn appended_batches_replay_in_order_across_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wal = Wal::open(dir.path(), FsyncPolicy::Always).expect("open");
    assert_eq!(
        wal.append(&[(Table::Photons, batch(&[1, 2]))])
            .expect("append"),
        Durability::Synced
    );
    let closed = wal.rotate().expect("rotate");
    wal.append(&[
        (Table::Spectra, batch(&[3])),
        (Table::IngestErrors, batch(&[4])),
    ])
    .expect("append");
    let replayed = replay(dir.path(), 0).expect("replay");
    let tables: Vec<Table> = replayed.batches.iter().map(|(t, _)| *t).collect();
    assert_eq!(
        tables,
        [Table::Photons, Table::Spectra, Table::IngestErrors]
    );
    assert_eq!(replayed.batches[0].1, batch(&[1, 2]));
    let after_first = replay(dir.path(), closed).expect("replay");
    assert_eq!(after_first.batches.len(), 2);
    assert_eq!(
        remove_segments_through(dir.path(), closed).expect("remove"),
        1
    );
    assert_eq!(replay(dir.path(), 0).expect("replay").batches.len(), 2);
}

#[test]
fn a_torn_tail_is_skipped_and_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wal = Wal::open(dir.path(), FsyncPolicy::Never).expect("open");
    wal.append(&[(Table::Photons, batch(&[1]))])
        .expect("append");
    wal.append(&[(Table::Photons, batch(&[2]))])
        .expect("append");
    let path = segment_path(dir.path(), 1);
    let len = std::fs::metadata(&path).expect("meta").len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open");
    file.set_len(len - 7).expect("truncate");
    let replayed = replay(dir.path(), 0).expect("replay");
    assert_eq!(replayed.batches.len(), 1);
    assert_eq!(replayed.torn_segments.len(), 1);
}

#[test]
fn a_flipped_bit_fails_the_checksum() {
    let mut bytes = Vec::new();
    entry::encode(Table::Photons, &batch(&[9]), &mut bytes).expect("encode");
    let last = bytes.len() - 20;
    bytes[last] ^= 0x10;
    assert!(matches!(entry::decode(&bytes), Err(EntryError::Checksum)));
}

#[test]
fn reopening_starts_a_new_segment_after_the_old_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(Wal::open(dir.path(), FsyncPolicy::Never).expect("open"));
    drop(Wal::open(dir.path(), FsyncPolicy::Never).expect("open"));
    assert_eq!(list_segments(dir.path()).expect("list"), vec![1, 2]);
}
