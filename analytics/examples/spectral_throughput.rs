//! Single-core throughput of `pl_features` on a file of raw spectra, for the scipy peer script.
//!
//! Usage: `spectral_throughput <spectra.f32> [pixels=2048] [batch=1000] [out.f64]`
//!
//! The file is raw little-endian f32, `pixels` values per spectrum, as written by
//! `benches/peers/spectral_peers.py`. The wavelength axis is `linspace(300, 900, pixels)` nm,
//! the options are scipy's `find_peaks(prominence=50)` (absolute, no relative threshold). The
//! spectra are read into one Arrow list array first; only the kernel calls are timed (best and
//! median of 7 passes over all spectra, one thread). With `out.f64`, writes per spectrum the
//! pair (fwhm_nm, peak_wavelength_nm) as little-endian f64 (NaN when null) for the script to
//! compare with scipy.

use std::sync::Arc;
use std::time::Instant;

use arrow_array::{Array, Float32Array, ListArray};
use arrow_buffer::OffsetBuffer;
use arrow_schema::{DataType, Field};
use flowdaq_analytics::spectral::{pl_features, PeakOptions};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 2 {
        eprintln!(
            "usage: {} <spectra.f32> [pixels=2048] [batch=1000] [out.f64]",
            args[0]
        );
        std::process::exit(2);
    }
    let pixels: usize = args.get(2).map_or(2048, |s| s.parse().expect("pixels"));
    let batch: usize = args.get(3).map_or(1000, |s| s.parse().expect("batch"));
    let bytes = std::fs::read(&args[1]).expect("read spectra file");
    let values: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let n_spectra = values.len() / pixels;
    assert!(n_spectra > 0, "file holds no complete spectrum");
    let values = values[..n_spectra * pixels].to_vec();
    let list = ListArray::new(
        Arc::new(Field::new_list_field(DataType::Float32, true)),
        OffsetBuffer::from_lengths(std::iter::repeat_n(pixels, n_spectra)),
        Arc::new(Float32Array::from(values)),
        None,
    );
    let axis: Vec<f64> = (0..pixels)
        .map(|i| 300.0 + 600.0 * i as f64 / (pixels - 1) as f64)
        .collect();
    let opts = PeakOptions {
        min_prominence: 50.0,
        min_relative_prominence: 0.0,
        ..Default::default()
    };

    let run = || {
        let mut fwhm = Vec::with_capacity(n_spectra);
        let mut wl = Vec::with_capacity(n_spectra);
        let mut start = 0;
        while start < n_spectra {
            let len = batch.min(n_spectra - start);
            let f = pl_features(&axis, &list.slice(start, len), &opts).expect("pl_features");
            for i in 0..len {
                fwhm.push(if f.fwhm_nm.is_valid(i) {
                    f.fwhm_nm.value(i)
                } else {
                    f64::NAN
                });
                wl.push(if f.peak_wavelength_nm.is_valid(i) {
                    f.peak_wavelength_nm.value(i)
                } else {
                    f64::NAN
                });
            }
            start += len;
        }
        (fwhm, wl)
    };
    let _ = run(); // warm-up (page faults, CPU frequency)
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..7 {
        let t = Instant::now();
        let r = run();
        times.push(t.elapsed().as_secs_f64());
        last = Some(r);
    }
    times.sort_by(f64::total_cmp);
    let (best, median) = (times[0], times[times.len() / 2]);
    let (fwhm, wl) = last.expect("ran");
    let found = fwhm.iter().filter(|v| v.is_finite()).count();
    println!("spectra={n_spectra} pixels={pixels} batch={batch} with_peak={found}");
    println!("spectra_per_s_best={:.0}", n_spectra as f64 / best);
    println!("spectra_per_s_median={:.0}", n_spectra as f64 / median);
    if let Some(out) = args.get(4) {
        let mut buf = Vec::with_capacity(n_spectra * 16);
        for (w, p) in fwhm.iter().zip(&wl) {
            buf.extend_from_slice(&w.to_le_bytes());
            buf.extend_from_slice(&p.to_le_bytes());
        }
        std::fs::write(out, buf).expect("write results");
    }
}
