//! Spectral kernel throughput in spectra/s (criterion "elements"), one thread, batches of 1000
//! spectra x 2048 pixels (a CCD spectrometer frame, 300-900 nm):
//! - `pl_features` on raw PL spectra (Gaussian line at 450-650 nm, 8-20 nm sigma, 1000 counts
//!   on a 200-count offset, 5-count noise): default options, with 10 % null rows, and with
//!   Savitzky-Golay (15, 3) + linear edge baseline; AsLS baseline on batches of 100;
//! - one spectrum per call (what a message of one spectrum costs): `pl_features`, which
//!   prepares the axis every call, against a `PlAnalyzer` kept for the calibration;
//! - `absorbance` from sample/dark/reference counts, and `absorbance_features` (band edge,
//!   OD at 405 nm, Beer-Lambert, Brus size) on absorbance spectra with an excitonic peak.

use std::hint::black_box;
use std::sync::Arc;

use arrow_array::{Float32Array, ListArray};
use arrow_buffer::{NullBuffer, OffsetBuffer};
use arrow_schema::{DataType, Field};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use flowdaq_analytics::spectral::baseline::{AslsParams, Baseline};
use flowdaq_analytics::spectral::{
    absorbance, absorbance_features, pl_features, AbsorbanceOptions, BeerLambert, PeakOptions,
    PlAnalyzer, Preprocessing,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

const PIXELS: usize = 2048;
const BATCH: usize = 1000;

fn axis() -> Vec<f64> {
    (0..PIXELS)
        .map(|i| 300.0 + 600.0 * i as f64 / (PIXELS - 1) as f64)
        .collect()
}

fn list(values: Vec<f32>, rows: usize, nulls: Option<NullBuffer>) -> ListArray {
    ListArray::new(
        Arc::new(Field::new_list_field(DataType::Float32, true)),
        OffsetBuffer::from_lengths(std::iter::repeat_n(PIXELS, rows)),
        Arc::new(Float32Array::from(values)),
        nulls,
    )
}

/// `rows` PL spectra, flat.
fn pl_spectra(rows: usize, rng: &mut StdRng) -> Vec<f32> {
    let x = axis();
    let noise = Normal::new(0.0, 5.0).unwrap();
    let mut out = Vec::with_capacity(rows * PIXELS);
    for _ in 0..rows {
        let (c, s) = (rng.random_range(450.0..650.0), rng.random_range(8.0..20.0));
        out.extend(x.iter().map(|&w| {
            (200.0 + 1000.0 * (-0.5 * ((w - c) / s).powi(2)).exp() + noise.sample(rng)) as f32
        }));
    }
    out
}

/// `rows` absorbance spectra: Urbach-like rise to the UV plus an excitonic peak at 480-520 nm.
fn abs_spectra(rows: usize, rng: &mut StdRng) -> Vec<f32> {
    let x = axis();
    let noise = Normal::new(0.0, 0.001).unwrap();
    let mut out = Vec::with_capacity(rows * PIXELS);
    for _ in 0..rows {
        let c = rng.random_range(480.0..520.0);
        out.extend(x.iter().map(|&w| {
            (0.3 / (1.0 + ((w - c + 10.0) / 8.0).exp())
                + 0.1 * (-0.5 * ((w - c) / 7.0f64).powi(2)).exp()
                + noise.sample(rng)) as f32
        }));
    }
    out
}

fn bench_pl(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(1);
    let x = axis();
    let data = list(pl_spectra(BATCH, &mut rng), BATCH, None);
    let with_nulls = list(
        pl_spectra(BATCH, &mut rng),
        BATCH,
        Some(NullBuffer::from(
            (0..BATCH).map(|i| i % 10 != 3).collect::<Vec<_>>(),
        )),
    );
    let abs_opts = PeakOptions {
        min_prominence: 50.0,
        min_relative_prominence: 0.0,
        ..Default::default()
    };
    let smooth = PeakOptions {
        preprocessing: Preprocessing {
            savgol: Some((15, 3)),
            baseline: Baseline::LinearEdge { edge_pixels: 50 },
        },
        ..abs_opts.clone()
    };
    let asls = PeakOptions {
        preprocessing: Preprocessing {
            savgol: None,
            baseline: Baseline::Asls(AslsParams {
                lambda: 1e7,
                p: 0.01,
                ..Default::default()
            }),
        },
        ..abs_opts.clone()
    };

    let mut g = c.benchmark_group("pl_features_2048px");
    g.sample_size(20);
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function(BenchmarkId::new("raw", "no_nulls"), |b| {
        b.iter(|| pl_features(&x, black_box(&data), &abs_opts).unwrap())
    });
    g.bench_function(BenchmarkId::new("raw", "10pct_nulls"), |b| {
        b.iter(|| pl_features(&x, black_box(&with_nulls), &abs_opts).unwrap())
    });
    g.bench_function(BenchmarkId::new("raw_default_options", "no_nulls"), |b| {
        b.iter(|| pl_features(&x, black_box(&data), &PeakOptions::default()).unwrap())
    });
    g.bench_function(
        BenchmarkId::new("savgol15_linear_baseline", "no_nulls"),
        |b| b.iter(|| pl_features(&x, black_box(&data), &smooth).unwrap()),
    );
    g.finish();

    let one = data.slice(0, 1);
    let mut analyzer = PlAnalyzer::new(&x, &abs_opts).unwrap();
    let mut g = c.benchmark_group("pl_features_2048px_one_per_call");
    g.throughput(Throughput::Elements(1));
    g.bench_function("pl_features", |b| {
        b.iter(|| pl_features(&x, black_box(&one), &abs_opts).unwrap())
    });
    g.bench_function("analyzer_kept", |b| {
        b.iter(|| analyzer.features(black_box(&one)).unwrap())
    });
    g.finish();

    let small = data.slice(0, 100);
    let mut g = c.benchmark_group("pl_features_2048px_asls");
    g.sample_size(10);
    g.throughput(Throughput::Elements(100));
    g.bench_function("asls_lambda1e7", |b| {
        b.iter(|| pl_features(&x, black_box(&small), &asls).unwrap())
    });
    g.finish();
}

fn bench_absorbance(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(2);
    let x = axis();
    let a = list(abs_spectra(BATCH, &mut rng), BATCH, None);
    // Raw counts for the S/D/R kernel: transmitted fraction 10^-A on a 30000-count lamp.
    let dark = vec![100.0; PIXELS];
    let reference = vec![30_100.0; PIXELS];
    let counts = {
        let v = a.values().as_any().downcast_ref::<Float32Array>().unwrap();
        list(
            v.values()
                .iter()
                .map(|&av| 100.0 + 30_000.0 * 10f32.powf(-av))
                .collect(),
            BATCH,
            None,
        )
    };
    let opts = AbsorbanceOptions {
        min_exciton_prominence: 0.02,
        excitation_nm: Some(405.0),
        beer_lambert: Some(BeerLambert {
            epsilon_l_per_mol_cm: 1e6,
            path_length_cm: 0.1,
            wavelength_nm: None,
        }),
        ..Default::default()
    };
    let mut g = c.benchmark_group("absorbance_2048px");
    g.sample_size(20);
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("absorbance_from_sdr", |b| {
        b.iter(|| absorbance(black_box(&counts), &dark, &reference).unwrap())
    });
    g.bench_function("absorbance_features", |b| {
        b.iter(|| absorbance_features(&x, black_box(&a), &opts).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench_pl, bench_absorbance);
criterion_main!(benches);
