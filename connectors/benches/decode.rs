//! Decoder throughput on the ingest thread's hottest path: one photons message of raw
//! HydraHarp v2 T3 records (the `flowdaq bench photons` load) decoded to its `photons` Arrow
//! batch (what a source that stores its photons pays), and accepted without rows (the deferred
//! decode of a source that does not: a scan that counts the records and moves
//! the overflow state), in records/s. Separates the decoder from the
//! transport and the pipeline when the live photon rate is short of its goal.
//!
//!     cargo bench -p flowdaq-connectors --bench decode

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use flowdaq_analytics::tcspc::records::RecordType;
use flowdaq_connectors::decode::{
    decode_message, decode_message_deferred, DecodeContext, DecodeLimits, RecordStreams,
};
use flowdaq_connectors::sim::tcspc_records::hydraharp_t3_records;
use flowdaq_connectors::OutboundMessage;
use flowdaq_schemas::{Dtype, StreamKind};

fn bench_photon_message(c: &mut Criterion) {
    let limits = DecodeLimits::default();
    let ctx = DecodeContext {
        arrival_time_ns: 1_764_000_000_000_000_000,
        default_run_id: "bench",
        limits: &limits,
    };
    let mut g = c.benchmark_group("decode_photons_message");
    g.sample_size(20);
    for records in [16_384usize, 262_144] {
        let frames = OutboundMessage::new("tcspc-bench", StreamKind::Photons)
            .meta("record_type", RecordType::HydraHarpV2T3.code())
            .meta("macro_unit_ps", 25_000.0)
            .meta("micro_bin_ps", 16.0)
            .raw_array(
                "records",
                Dtype::U32,
                &[records as u64],
                hydraharp_t3_records(records),
            )
            .frames();
        g.throughput(Throughput::Elements(records as u64));
        g.bench_function(BenchmarkId::new("hydraharp_v2_t3", records), |b| {
            b.iter(|| decode_message(&frames, &ctx).expect("decodes"))
        });
        g.bench_function(BenchmarkId::new("hydraharp_v2_t3_deferred", records), |b| {
            b.iter(|| {
                // A fresh state each time: the same seq is never a gap.
                let mut streams = RecordStreams::default();
                decode_message_deferred(&frames, &ctx, &mut streams).expect("decodes")
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_photon_message);
criterion_main!(benches);
