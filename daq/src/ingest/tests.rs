//! Unit tests of the pipeline's pure parts; the pipeline itself is tested end to end.

use arrow::array::AsArray;
use arrow::datatypes::UInt64Type;
use arrow::record_batch::RecordBatch;
use flowdaq_schemas::Table;

use super::commit::coalesce_by_table;
use super::rejection::{rejection_batch, Rejection};

fn errors(seqs: &[u64]) -> RecordBatch {
    let rejections: Vec<Rejection> = seqs
        .iter()
        .map(|&seq| Rejection {
            arrival_time_ns: 1,
            transport: "pull",
            source: Some("s".into()),
            stream: None,
            seq: Some(seq),
            reason: "r".into(),
            raw_size_bytes: 1,
            frame_count: 1,
            first_bytes: vec![1],
        })
        .collect();
    rejection_batch(&rejections).expect("batch")
}

#[test]
fn a_group_becomes_one_batch_per_table_in_order() {
    let photons = RecordBatch::new_empty(Table::Photons.schema());
    let batches = vec![
        (Table::IngestErrors, errors(&[1, 2])),
        (Table::Photons, photons.clone()),
        (Table::IngestErrors, errors(&[3])),
    ];
    let out = coalesce_by_table(batches);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].0, Table::IngestErrors);
    assert_eq!(out[1].0, Table::Photons);
    let seqs = out[0]
        .1
        .column_by_name("seq")
        .expect("seq")
        .as_primitive::<UInt64Type>()
        .values()
        .to_vec();
    assert_eq!(seqs, vec![1, 2, 3]);
}
