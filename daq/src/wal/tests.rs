//! WAL round trips, rotation, torn tails, cuts at every byte, and I/O faults, on real files.

use std::sync::Arc;

use arrow::array::{ArrayRef, UInt64Array};
use arrow::record_batch::RecordBatch;
use flowdaq_schemas::Table;

use super::*;
use crate::storage::fault::errno::{EIO, EMFILE, ENOSPC};
use crate::storage::{Fault, FaultKind, FaultyStorage, LocalStorage, Op};

fn batch(values: &[u64]) -> RecordBatch {
    RecordBatch::try_from_iter([(
        "seq",
        Arc::new(UInt64Array::from(values.to_vec())) as ArrayRef,
    )])
    .expect("batch")
}

fn span(source: &str, first: u64, last: u64) -> SeqSpan {
    SeqSpan {
        source: source.into(),
        session: String::new(),
        first,
        last,
    }
}

/// A group like the pipeline's: raw rows, their derived rows, and the seqs.
fn group(n: u64) -> WalGroup {
    WalGroup {
        batches: vec![
            (Table::Spectra, batch(&[n, n + 1])),
            (Table::SpectralFeatures, batch(&[n, n + 1])),
        ],
        seqs: vec![span("spec", n, n + 1)],
    }
}

fn append(wal: &mut Wal, group: &WalGroup) -> Result<Durability, WalError> {
    wal.append(&group.batches, &group.seqs)
}

fn open(dir: &Path, fsync: FsyncPolicy) -> Wal {
    Wal::open(dir, fsync, LocalStorage::shared()).expect("open")
}

#[test]
fn appended_groups_replay_whole_and_in_order_across_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wal = open(dir.path(), FsyncPolicy::Always);
    assert_eq!(
        append(&mut wal, &group(1)).expect("append"),
        Durability::Synced
    );
    let closed = wal.rotate().expect("rotate");
    append(&mut wal, &group(3)).expect("append");
    append(&mut wal, &group(5)).expect("append");
    let replayed = replay(dir.path(), 0).expect("replay");
    assert_eq!(replayed.groups, vec![group(1), group(3), group(5)]);
    assert_eq!(replayed.rows(), 12);
    let after_first = replay(dir.path(), closed).expect("replay");
    assert_eq!(after_first.groups, vec![group(3), group(5)]);
    let storage = LocalStorage::shared();
    assert_eq!(
        remove_segments_through(&storage, dir.path(), closed).expect("remove"),
        1
    );
    assert_eq!(replay(dir.path(), 0).expect("replay").groups.len(), 2);
}

#[test]
fn a_wal_cut_anywhere_replays_whole_groups_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wal = open(dir.path(), FsyncPolicy::Never);
    let groups: Vec<WalGroup> = (0..4).map(|i| group(10 * i)).collect();
    let mut boundaries = vec![0u64];
    for g in &groups {
        append(&mut wal, g).expect("append");
        boundaries.push(wal.segment_bytes());
    }
    let path = segment_path(dir.path(), 1);
    let bytes = std::fs::read(&path).expect("read");
    let last_start = boundaries[boundaries.len() - 2] as usize;
    // Every entry boundary, and every byte of the last group.
    let cuts: Vec<usize> = boundaries
        .iter()
        .map(|&b| b as usize)
        .chain(last_start..bytes.len())
        .collect();
    for cut in cuts {
        std::fs::write(&path, &bytes[..cut]).expect("cut");
        let replayed = replay(dir.path(), 0).expect("replay");
        let whole = boundaries.iter().filter(|&&b| b as usize <= cut).count() - 1;
        assert_eq!(
            replayed.groups,
            groups[..whole].to_vec(),
            "cut at byte {cut}"
        );
        let torn = !boundaries.contains(&(cut as u64));
        assert_eq!(
            replayed.torn_segments.len(),
            usize::from(torn),
            "cut at byte {cut}"
        );
        for g in &replayed.groups {
            let rows = |t: Table| {
                g.batches
                    .iter()
                    .filter(|(x, _)| *x == t)
                    .map(|(_, b)| b.num_rows())
                    .sum::<usize>()
            };
            assert_eq!(
                rows(Table::Spectra),
                rows(Table::SpectralFeatures),
                "raw rows without their features"
            );
        }
    }
}

#[test]
fn a_flipped_bit_fails_the_checksum() {
    let mut bytes = Vec::new();
    let g = group(9);
    entry::encode(&g.batches, &g.seqs, &mut bytes).expect("encode");
    let last = bytes.len() - 20;
    bytes[last] ^= 0x10;
    assert!(matches!(entry::decode(&bytes), Err(EntryError::Checksum)));
}

#[test]
fn entries_of_the_first_format_are_still_read() {
    // FDW1: magic | u32 length | crc32 | table name | Arrow IPC stream of one batch.
    let mut payload = vec![b"photons".len() as u8];
    payload.extend_from_slice(b"photons");
    {
        let b = batch(&[4, 5]);
        let mut writer =
            arrow::ipc::writer::StreamWriter::try_new(&mut payload, &b.schema()).expect("writer");
        writer.write(&b).expect("write");
        writer.finish().expect("finish");
    }
    let mut bytes = b"FDW1".to_vec();
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    bytes.extend_from_slice(&payload);
    let (group, used) = entry::decode(&bytes).expect("decode");
    assert_eq!(used, bytes.len());
    assert_eq!(group.batches, vec![(Table::Photons, batch(&[4, 5]))]);
    assert!(group.seqs.is_empty());
}

#[test]
fn reopening_starts_a_new_segment_after_the_old_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(open(dir.path(), FsyncPolicy::Never));
    drop(open(dir.path(), FsyncPolicy::Never));
    assert_eq!(list_segments(dir.path()).expect("list"), vec![1, 2]);
}

/// Appends `before`, then one group under `fault`, then heals and appends `after`: replay
/// must give exactly the groups whose append returned Ok.
fn survives(fault: Fault, fsync: FsyncPolicy) {
    let dir = tempfile::tempdir().expect("tempdir");
    let faults = FaultyStorage::new();
    let mut wal = Wal::open(dir.path(), fsync, faults.storage()).expect("open");
    let mut kept = Vec::new();
    for i in 0..3 {
        append(&mut wal, &group(i * 10)).expect("append before the fault");
        kept.push(group(i * 10));
    }
    faults.inject(fault.clone());
    assert!(
        append(&mut wal, &group(100)).is_err(),
        "{fault:?} must fail the append"
    );
    assert!(faults.triggered() > 0);
    // The disk stays bad for a second append too.
    let _ = append(&mut wal, &group(200)).map(|_| kept.push(group(200)));
    faults.heal();
    for i in 0..3 {
        append(&mut wal, &group(300 + i)).expect("append after healing");
        kept.push(group(300 + i));
    }
    let replayed = replay(dir.path(), 0).expect("replay");
    assert_eq!(replayed.groups, kept, "{fault:?}");
}

#[test]
fn a_failed_append_never_hides_later_ones() {
    for fsync in [FsyncPolicy::Always, FsyncPolicy::Never] {
        for bytes in [0, 1, 11, 16, 40, 300, 700] {
            survives(
                Fault::once(Op::Write, ".wal", 0, FaultKind::ShortWrite(bytes)),
                fsync,
            );
        }
        survives(Fault::always(Op::Write, ".wal", ENOSPC), fsync);
    }
    survives(
        Fault::once(Op::SyncData, ".wal", 0, FaultKind::Os(EIO)),
        FsyncPolicy::Always,
    );
    survives(
        Fault::always(Op::SyncData, ".wal", EIO),
        FsyncPolicy::Always,
    );
}

#[test]
fn a_segment_that_cannot_be_cut_back_is_abandoned_for_a_new_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let faults = FaultyStorage::new();
    let mut wal = Wal::open(dir.path(), FsyncPolicy::Always, faults.storage()).expect("open");
    append(&mut wal, &group(0)).expect("append");
    faults.inject(Fault::once(Op::Write, ".wal", 0, FaultKind::ShortWrite(50)));
    faults.inject(Fault::always(Op::SetLen, ".wal", EIO));
    assert!(append(&mut wal, &group(1)).is_err());
    faults.heal();
    append(&mut wal, &group(2)).expect("append to a new segment");
    assert_eq!(list_segments(dir.path()).expect("list"), vec![1, 2]);
    let replayed = replay(dir.path(), 0).expect("replay");
    assert_eq!(replayed.groups, vec![group(0), group(2)]);
    assert_eq!(
        replayed.torn_segments.len(),
        1,
        "the abandoned segment's torn tail"
    );
}

#[test]
fn a_rotation_that_fails_half_way_never_blocks_the_next_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let faults = FaultyStorage::new();
    let mut wal = Wal::open(dir.path(), FsyncPolicy::Always, faults.storage()).expect("open");
    append(&mut wal, &group(0)).expect("append");
    // The new segment's file is created, but the directory cannot be opened to sync it.
    faults.inject(Fault::always(Op::SyncDir, "", EMFILE));
    assert!(wal.rotate().is_err());
    append(&mut wal, &group(1)).expect("appends go on in the current segment");
    faults.heal();
    let closed = wal
        .rotate()
        .expect("rotation works once descriptors are back");
    append(&mut wal, &group(2)).expect("append");
    let before_closed = replay(dir.path(), 0).expect("replay");
    assert_eq!(before_closed.groups, vec![group(0), group(1), group(2)]);
    let after = replay(dir.path(), closed).expect("replay");
    assert_eq!(
        after.groups,
        vec![group(2)],
        "everything before the rotation is at or below {closed}"
    );
    // Creating the next segment fails outright.
    faults.inject(Fault::always(Op::Create, ".wal", EMFILE));
    assert!(wal.rotate().is_err());
    faults.heal();
    append(&mut wal, &group(3)).expect("append");
    assert_eq!(replay(dir.path(), 0).expect("replay").groups.len(), 4);
}

#[test]
fn segments_are_numbered_above_a_watermark_that_lies_past_this_disk() {
    // A new data directory beside a catalog (in an object store) persisted through segment 7.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wal =
        Wal::open_after(dir.path(), FsyncPolicy::Always, LocalStorage::shared(), 7).expect("open");
    append(&mut wal, &group(1)).expect("append");
    drop(wal);
    assert_eq!(list_segments(dir.path()).expect("list"), [8]);
    let replayed = replay(dir.path(), 7).expect("replay");
    assert_eq!(
        replayed.groups.len(),
        1,
        "its rows are replayed, not taken for persisted"
    );
    // Segments already above the watermark keep their order.
    let wal =
        Wal::open_after(dir.path(), FsyncPolicy::Always, LocalStorage::shared(), 3).expect("open");
    drop(wal);
    assert_eq!(list_segments(dir.path()).expect("list"), [8, 9]);
}
