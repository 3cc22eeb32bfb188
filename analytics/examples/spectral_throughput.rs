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
//!
//! Two kernels are timed, each printed as `<name>_spectra_per_s_{best,median}`:
//! - `pl_features`: the whole PL row (main peak, sub-pixel position, nm and eV widths,
//!   integral, IQR, secondary peaks, flags) into Arrow columns;
//! - `peaks_widths`: what scipy's `find_peaks(prominence=50)` + `peak_widths(rel_height=0.5)`
//!   return, no more: every peak with its prominence and bases, and every peak's width and
//!   crossings ([`find_peaks`] and [`peak_width`] per spectrum, results into flat vectors).
//!
//! With `SPECTRAL_THROUGHPUT_SERVE` set, it then prints `ready` and answers requests on
//! stdin, one per line: `pl_features` or `peaks_widths` runs one pass over all spectra and
//! prints its rate (spectra/s); end of input ends it. The peer script uses this to alternate
//! scipy and flowdaq every few tens of milliseconds, so that each ratio compares the machine
//! with itself (its speed drifts by tens of percent within seconds).

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::Instant;

use arrow_array::{Array, Float32Array, ListArray};
use arrow_buffer::OffsetBuffer;
use arrow_schema::{DataType, Field};
use flowdaq_analytics::spectral::{find_peaks, peak_width, pl_features, PeakOptions, PeakScratch};

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
    let (times, last) = time_passes(run);
    let (fwhm, wl) = last;
    let flat = list
        .values()
        .as_any()
        .downcast_ref::<Float32Array>()
        .expect("f32")
        .values();
    // scipy's outputs per spectrum: the peaks (index, prominence, bases) and their widths.
    let mut scratch = PeakScratch::new();
    let mut peaks_out = Vec::new();
    let mut widths_out = Vec::new();
    let mut peaks_widths = || {
        peaks_out.clear();
        widths_out.clear();
        for y in flat.chunks_exact(pixels) {
            let peaks = find_peaks(y, opts.min_prominence, &mut scratch).expect("finite spectra");
            for pk in peaks {
                widths_out.push(peak_width(y, pk, 0.5).expect("own peak"));
            }
            peaks_out.extend_from_slice(peaks);
        }
        peaks_out.len() + widths_out.len()
    };
    let (pw_times, _) = time_passes(&mut peaks_widths);
    let found = fwhm.iter().filter(|v| v.is_finite()).count();
    println!("spectra={n_spectra} pixels={pixels} batch={batch} with_peak={found}");
    for (name, t) in [("pl_features", &times), ("peaks_widths", &pw_times)] {
        let (best, median) = (t[0], t[t.len() / 2]);
        println!("{name}_spectra_per_s_best={:.0}", n_spectra as f64 / best);
        println!(
            "{name}_spectra_per_s_median={:.0}",
            n_spectra as f64 / median
        );
    }
    if let Some(out) = args.get(4) {
        let mut buf = Vec::with_capacity(n_spectra * 16);
        for (w, p) in fwhm.iter().zip(&wl) {
            buf.extend_from_slice(&w.to_le_bytes());
            buf.extend_from_slice(&p.to_le_bytes());
        }
        std::fs::write(out, buf).expect("write results");
    }
    if std::env::var_os("SPECTRAL_THROUGHPUT_SERVE").is_some() {
        let mut pl_pass = || {
            let _ = run();
        };
        serve(n_spectra, &mut pl_pass, &mut peaks_widths);
    }
}

/// Answers pass requests on stdin (see the module doc).
fn serve(n_spectra: usize, pl_pass: &mut dyn FnMut(), pw_pass: &mut dyn FnMut() -> usize) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").expect("stdout");
    out.flush().expect("stdout");
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("stdin");
        let t = Instant::now();
        match line.trim() {
            "pl_features" => pl_pass(),
            "peaks_widths" => {
                std::hint::black_box(pw_pass());
            }
            other => panic!("unknown request {other:?}"),
        }
        let rate = n_spectra as f64 / t.elapsed().as_secs_f64();
        writeln!(out, "{rate:.0}").expect("stdout");
        out.flush().expect("stdout");
    }
}

/// Runs `pass` once to warm up, then 7 times; returns the sorted pass times (s) and the last
/// result.
fn time_passes<R>(mut pass: impl FnMut() -> R) -> (Vec<f64>, R) {
    let _ = pass(); // warm-up (page faults, CPU frequency)
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..7 {
        let t = Instant::now();
        let r = pass();
        times.push(t.elapsed().as_secs_f64());
        last = Some(r);
    }
    times.sort_by(f64::total_cmp);
    (times, last.expect("ran 7 passes"))
}
