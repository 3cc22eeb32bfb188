//! TCSPC kernel throughput: record decoding (+ histogram) in records/s over a 4 Mi-record
//! in-memory HydraHarp v2 T3 buffer (photons at 5 % of the sync rate, so ~1 overflow record per
//! 50 photons), 1- and 2-exponential reconvolution fits of 1024-bin histograms in fits/s (both
//! statistics, Gaussian IRF, free shift and background, earlier-pulse tails), and phasors of
//! 1024-bin histograms (3 harmonics) in histograms/s.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use flowdaq_analytics::tcspc::fit::{FitConfig, FitStatistic, Irf, LifetimeFitter};
use flowdaq_analytics::tcspc::histogram::{
    HistogramLayout, HistogramWindow, HistogramWindower, MicroTimeHistogram,
};
use flowdaq_analytics::tcspc::phasor::{Phasor, PhasorCalculator};
use flowdaq_analytics::tcspc::records::{
    decode_events, decode_into, decode_records, scan_records, DecoderState, EventColumns,
    PhotonColumns, RecordType, TimeBase,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp, Normal};

const RECORDS: usize = 4 << 20;
const MICRO_BINS: usize = 1562;

/// HydraHarp v2 T3 records: exponential micro times on 2 channels, a photon every ~20 syncs.
fn records(rng: &mut StdRng) -> Vec<u8> {
    let gap = Exp::new(1.0 / 20.0).unwrap();
    let micro = Exp::new(1.0 / 200.0).unwrap();
    let mut sync: u64 = 0;
    let mut out = Vec::with_capacity(RECORDS * 4);
    let mut last_wrap = 0u64;
    while out.len() < RECORDS * 4 {
        sync += 1 + gap.sample(rng) as u64;
        let wraps = sync / 1024 - last_wrap;
        if wraps > 0 {
            out.extend(((1u32 << 31) | (63 << 25) | wraps as u32).to_le_bytes());
            last_wrap += wraps;
            continue;
        }
        let dt = ((150.0 + micro.sample(rng)) as u32).min(MICRO_BINS as u32 - 1);
        let ch = rng.random_range(0..2u32);
        out.extend(((ch << 25) | (dt << 10) | (sync % 1024) as u32).to_le_bytes());
    }
    out.truncate(RECORDS * 4);
    out
}

fn bench_decode(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(1);
    let bytes = records(&mut rng);
    let tb = TimeBase {
        macro_unit_ps: 25_000.0,
        micro_bin_ps: 16.0,
    };
    let layout = HistogramLayout {
        channels: 2,
        native_bins: MICRO_BINS,
        bin_width_native: 1,
        micro_bin_ps: 16.0,
        sync_rate_hz: 40e6,
    };
    let mut g = c.benchmark_group("tcspc_decode");
    g.throughput(Throughput::Elements(RECORDS as u64));
    g.sample_size(20);
    g.bench_function("hydraharp_v2_t3_fused_histogram", |b| {
        let mut hist = MicroTimeHistogram::new(layout.clone()).unwrap();
        b.iter(|| {
            hist.clear();
            decode_into(
                RecordType::HydraHarpV2T3,
                &bytes,
                &mut DecoderState::default(),
                &mut hist,
            )
            .unwrap()
        })
    });
    g.bench_function("hydraharp_v2_t3_columns", |b| {
        let mut cols = PhotonColumns::with_capacity(RECORDS);
        b.iter(|| {
            cols.clear();
            decode_records(
                RecordType::HydraHarpV2T3,
                tb,
                &bytes,
                &mut DecoderState::default(),
                &mut cols,
            )
            .unwrap()
        })
    });
    g.bench_function("hydraharp_v2_t3_events", |b| {
        let mut events = EventColumns::default();
        b.iter(|| {
            events.clear();
            decode_events(
                RecordType::HydraHarpV2T3,
                &bytes,
                &mut DecoderState::default(),
                &mut events,
            )
            .unwrap()
        })
    });
    // The live path without stored photons: each message of 65,536 records decoded to native
    // events (cache-resident, as on the ingest thread), then windowed into 0.1 s histograms.
    g.bench_function("hydraharp_v2_t3_messages_to_windows", |b| {
        let mut events = EventColumns::default();
        let mut windower =
            HistogramWindower::new(layout.clone(), HistogramWindow::Syncs(4_000_000)).unwrap();
        let mut windows = Vec::new();
        b.iter(|| {
            let mut state = DecoderState::default();
            windows.clear();
            for message in bytes.chunks(65_536 * 4) {
                events.clear();
                decode_events(RecordType::HydraHarpV2T3, message, &mut state, &mut events).unwrap();
                windower
                    .push_columns(
                        &events.macro_time,
                        &events.micro_time_bins,
                        &events.channel,
                        &events.marker_flags,
                        &mut windows,
                    )
                    .unwrap();
            }
        })
    });
    // The same, fused: each message decoded straight into the windows.
    g.bench_function("hydraharp_v2_t3_messages_into_windows", |b| {
        let mut windower =
            HistogramWindower::new(layout.clone(), HistogramWindow::Syncs(4_000_000)).unwrap();
        let mut windows = Vec::new();
        b.iter(|| {
            let mut state = DecoderState::default();
            windows.clear();
            for message in bytes.chunks(65_536 * 4) {
                decode_into(
                    RecordType::HydraHarpV2T3,
                    message,
                    &mut state,
                    &mut windower.sink(&mut windows),
                )
                .unwrap();
            }
        })
    });
    g.bench_function("hydraharp_v2_t3_scan", |b| {
        b.iter(|| {
            scan_records(
                RecordType::HydraHarpV2T3,
                &bytes,
                &mut DecoderState::default(),
            )
            .unwrap()
        })
    });
    g.bench_function("hydraharp_v2_t3_columns_then_histogram", |b| {
        let mut cols = PhotonColumns::with_capacity(RECORDS);
        let mut hist = MicroTimeHistogram::new(layout.clone()).unwrap();
        b.iter(|| {
            cols.clear();
            hist.clear();
            decode_records(
                RecordType::HydraHarpV2T3,
                tb,
                &bytes,
                &mut DecoderState::default(),
                &mut cols,
            )
            .unwrap();
            hist.add_photons(&cols).unwrap();
        })
    });
    g.finish();
}

/// Simulated 1024-bin decays over a 25 ns period, 1e5 counts, Gaussian IRF of 0.15 ns FWHM.
fn histograms(rng: &mut StdRng, taus: &[f64], count: usize) -> Vec<Vec<f64>> {
    let (period, n) = (25.0, 1024usize);
    let irf = Normal::new(3.0, 0.15 / 2.3548).unwrap();
    let exps: Vec<_> = taus.iter().map(|t| Exp::new(1.0 / t).unwrap()).collect();
    (0..count)
        .map(|_| {
            let mut h = vec![0.0; n];
            for i in 0..100_000 {
                let t = if i % 50 == 0 {
                    rng.random::<f64>() * period
                } else {
                    (irf.sample(rng) + exps[i % exps.len()].sample(rng)).rem_euclid(period)
                };
                h[((t / period * n as f64) as usize).min(n - 1)] += 1.0;
            }
            h
        })
        .collect()
}

fn bench_fit(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(2);
    let mut g = c.benchmark_group("tcspc_fit_1024_bins");
    g.throughput(Throughput::Elements(1));
    for (k, taus) in [(1usize, vec![2.5]), (2, vec![0.8, 4.0])] {
        let hists = histograms(&mut rng, &taus, 16);
        for (name, stat) in [
            ("neyman", FitStatistic::NeymanLeastSquares),
            ("mle", FitStatistic::PoissonMle),
        ] {
            let mut config = FitConfig::new(k, stat, 25.0 / 1024.0);
            config.period_ns = Some(25.0);
            let mut fitter = LifetimeFitter::new(
                config,
                Irf::Gaussian {
                    fwhm_ns: 0.15,
                    center_ns: None,
                },
                1024,
            )
            .unwrap();
            let mut i = 0;
            g.bench_function(BenchmarkId::new(format!("{k}exp"), name), |b| {
                b.iter(|| {
                    i = (i + 1) % hists.len();
                    fitter.fit(&hists[i]).unwrap()
                })
            });
        }
    }
    g.finish();
}

fn bench_phasor(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(3);
    let hists = histograms(&mut rng, &[2.5], 4);
    let mut calc = PhasorCalculator::new(1024, 3).unwrap();
    let mut out = [Phasor::default(); 3];
    let mut g = c.benchmark_group("tcspc_phasor");
    g.throughput(Throughput::Elements(1));
    let mut i = 0;
    g.bench_function("1024_bins_3_harmonics", |b| {
        b.iter(|| {
            i = (i + 1) % hists.len();
            calc.phasors(&hists[i], 0.0, &mut out).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench_decode, bench_fit, bench_phasor);
criterion_main!(benches);
