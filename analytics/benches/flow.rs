//! Phase-sensor kernel throughput, one thread, on simulated traces (`tests/flow_common`: 40
//! mm/s, 3 mm plugs / 4 mm carriers +-20 %, 30 mV noise, baseline and gain drift, jitter):
//! - interface detection in samples/s of one trace (criterion "elements"): 10 s windows at 1
//!   and 10 kHz, f32 (the stored type) and f64;
//! - cross-correlation lag in samples/s of one trace (a pair of traces of that many samples),
//!   with the analyzer's default lag range (1-500 mm/s over 10 mm: up to 10 s of lag);
//! - the whole per-window analysis (both traces, both velocity methods, segments) in samples/s;
//! - the residence-time join in spectra/s (100k spectra on a 1000-entry schedule).
//!
//! `cargo bench -p flowdaq-analytics --bench flow -- --peers <traces.f64> <n> <fs_hz>
//! <min_lag> <max_lag> [interfaces.f64]` instead times detection and correlation on two traces
//! written by `benches/peers/flow_peers.py` (raw little-endian f64, A then B, `n` samples
//! each), prints `key=value` rates (median and best of repeated passes) and the lag, and writes
//! sensor A's interface times (s, f64) for the script to compare with its numpy detector.

#[path = "../tests/flow_common/mod.rs"]
mod flow_common;

use std::hint::black_box;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput};
use flow_common::Sim;
use flowdaq_analytics::flow::{
    reaction_times, CrossCorrelator, DetectorOptions, FlowAnalyzer, FlowOptions, InterfaceDetector,
    PlugPolarity, SensorPair, VelocitySchedule,
};

fn traces(fs: f64) -> (Vec<f64>, Vec<f64>) {
    let mut sim = Sim::typical(42);
    sim.sample_rate_hz = fs;
    let r = sim.run();
    (r.a, r.b)
}

fn bench_interfaces(c: &mut Criterion) {
    let mut g = c.benchmark_group("flow/interfaces");
    let opts = DetectorOptions::default();
    for fs in [1000.0, 10_000.0] {
        let (a, _) = traces(fs);
        let a32: Vec<f32> = a.iter().map(|&v| v as f32).collect();
        let mut det = InterfaceDetector::new();
        let mut out = Vec::new();
        g.throughput(Throughput::Elements(a.len() as u64));
        g.bench_function(BenchmarkId::new("f32", a.len()), |bch| {
            bch.iter(|| {
                det.detect(black_box(&a32), fs, &opts, &mut out)
                    .map(|s| s.samples)
            })
        });
        g.bench_function(BenchmarkId::new("f64", a.len()), |bch| {
            bch.iter(|| {
                det.detect(black_box(&a), fs, &opts, &mut out)
                    .map(|s| s.samples)
            })
        });
    }
    g.finish();
}

fn bench_xcorr(c: &mut Criterion) {
    let mut g = c.benchmark_group("flow/xcorr");
    for fs in [1000.0, 10_000.0] {
        let (a, b) = traces(fs);
        // 10 mm spacing, 1-500 mm/s.
        let (lo, hi) = ((0.02 * fs) as usize, (10.0 * fs) as usize);
        let mut xc = CrossCorrelator::new();
        g.throughput(Throughput::Elements(a.len() as u64));
        g.bench_function(BenchmarkId::new("f64", a.len()), |bch| {
            bch.iter(|| {
                xc.peak(black_box(&a), black_box(&b), lo, hi)
                    .map(|p| p.lag_samples)
            })
        });
    }
    g.finish();
}

fn bench_analyze(c: &mut Criterion) {
    let mut g = c.benchmark_group("flow/analyze");
    for fs in [1000.0, 10_000.0] {
        let (a, b) = traces(fs);
        let (a, b): (Vec<f32>, Vec<f32>) = (
            a.iter().map(|&v| v as f32).collect(),
            b.iter().map(|&v| v as f32).collect(),
        );
        let pair = SensorPair {
            spacing_mm: 10.0,
            sample_rate_hz: fs,
            plug_polarity: PlugPolarity::High,
        };
        let mut an = FlowAnalyzer::new(pair, FlowOptions::default()).expect("valid options");
        g.throughput(Throughput::Elements(a.len() as u64));
        g.bench_function(BenchmarkId::new("f32", a.len()), |bch| {
            bch.iter(|| {
                an.analyze(0, black_box(&a), black_box(&b))
                    .velocity_mm_per_s
            })
        });
    }
    g.finish();
}

fn bench_residence(c: &mut Criterion) {
    let mut g = c.benchmark_group("flow/residence");
    const S: i64 = 1_000_000_000;
    let entries = 1000;
    let times: Vec<i64> = (0..entries).map(|k| k as i64 * 10 * S).collect();
    let v: Vec<f64> = (0..entries).map(|k| 20.0 + (k % 7) as f64 * 10.0).collect();
    let sched = VelocitySchedule::new(&times, &v).expect("valid schedule");
    let n = 100_000;
    let ts = arrow_array::Int64Array::from(
        (0..n)
            .map(|i| 100 * S + i as i64 * 97 * S / 1000)
            .collect::<Vec<_>>(),
    );
    let x =
        arrow_array::Float64Array::from((0..n).map(|i| (i % 76) as f64 * 10.0).collect::<Vec<_>>());
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("reaction_times", |bch| {
        bch.iter(|| reaction_times(&sched, black_box(&ts), black_box(&x)).map(|r| r.len()))
    });
    g.finish();
}

/// Median and best of `passes` timed runs of `f` (seconds per run), after one warm-up.
fn time_runs(passes: usize, mut f: impl FnMut()) -> (f64, f64) {
    f();
    let mut t: Vec<f64> = (0..passes)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    (t[t.len() / 2], t[0])
}

fn peers(args: &[String]) {
    let arg = |i: usize, what: &str| -> String {
        args.get(i).cloned().unwrap_or_else(|| {
            eprintln!("--peers <traces.f64> <n> <fs_hz> <min_lag> <max_lag> [interfaces.f64]: missing {what}");
            std::process::exit(2)
        })
    };
    let num = |i: usize, what: &str| -> f64 {
        arg(i, what).parse().unwrap_or_else(|e| {
            eprintln!("{what}: {e}");
            std::process::exit(2)
        })
    };
    let path = arg(0, "traces");
    let n = num(1, "n") as usize;
    let fs = num(2, "fs_hz");
    let (lo, hi) = (num(3, "min_lag") as usize, num(4, "max_lag") as usize);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        eprintln!("{path}: {e}");
        std::process::exit(2)
    });
    let v: Vec<f64> = bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect();
    if v.len() < 2 * n {
        eprintln!("{path} holds {} values, expected {}", v.len(), 2 * n);
        std::process::exit(2);
    }
    let (a, b) = (&v[..n], &v[n..2 * n]);
    let opts = DetectorOptions::default();
    let mut det = InterfaceDetector::new();
    let mut out = Vec::new();
    // Enough passes for ~1 s of work at either size.
    let passes = (2.0e8 / n as f64).clamp(7.0, 2001.0) as usize;
    let (med, best) = time_runs(passes, || {
        black_box(
            det.detect(black_box(a), fs, &opts, &mut out)
                .map(|s| s.samples)
                .ok(),
        );
    });
    println!("samples={n} sample_rate_hz={fs} interfaces_a={}", out.len());
    println!("detect_samples_per_s_median={:.0}", n as f64 / med);
    println!("detect_samples_per_s_best={:.0}", n as f64 / best);
    if let Some(p) = args.get(5) {
        let buf: Vec<u8> = out.iter().flat_map(|i| i.time_s.to_le_bytes()).collect();
        if let Err(e) = std::fs::write(p, buf) {
            eprintln!("{p}: {e}");
            std::process::exit(2);
        }
    }
    let mut xc = CrossCorrelator::new();
    let mut peak = None;
    let (med, best) = time_runs((passes / 20).max(7), || {
        peak = black_box(xc.peak(black_box(a), black_box(b), lo, hi));
    });
    println!("xcorr_samples_per_s_median={:.0}", n as f64 / med);
    println!("xcorr_samples_per_s_best={:.0}", n as f64 / best);
    match peak {
        Some(p) => println!(
            "lag_index={} lag_samples={:.12} coefficient={:.12}",
            p.lag_index, p.lag_samples, p.coefficient
        ),
        None => println!("lag_index=none"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--peers") {
        peers(&args[i + 1..]);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    bench_interfaces(&mut c);
    bench_xcorr(&mut c);
    bench_analyze(&mut c);
    bench_residence(&mut c);
    c.final_summary();
}
