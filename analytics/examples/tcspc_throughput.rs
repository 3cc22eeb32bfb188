//! Rust side of benches/peers/tcspc_peers.py: times the TCSPC kernels on exactly the inputs the
//! Python peers get, and prints one `name value` line per figure.
//!
//!     cargo run --release -p flowdaq-analytics --example tcspc_throughput -- FILE.ptu HISTS.txt
//!
//! FILE.ptu is read into memory once; decode + histogram is then timed from memory. HISTS.txt
//! holds one histogram per line: `bin_width_ns period_ns irf_fwhm_ns components statistic
//! counts...` (statistic `neyman` or `mle`); every line is fitted and its phasor computed.
//! With a third argument `fits-only`, only the fits are timed (the peers script alternates
//! such runs with lmfit's).

use std::time::Instant;

use flowdaq_analytics::tcspc::fit::{FitConfig, FitStatistic, Irf, LifetimeFitter};
use flowdaq_analytics::tcspc::histogram::{HistogramLayout, MicroTimeHistogram};
use flowdaq_analytics::tcspc::phasor::{Phasor, PhasorCalculator};
use flowdaq_analytics::tcspc::ptu::PtuHeader;
use flowdaq_analytics::tcspc::records::{decode_into, decode_records, DecoderState, PhotonColumns};

/// Repeats `f` until at least `min_s` seconds have passed; returns seconds per call.
fn time_per_call(min_s: f64, mut f: impl FnMut()) -> f64 {
    f(); // warm up
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed().as_secs_f64() < min_s {
        f();
        calls += 1;
    }
    start.elapsed().as_secs_f64() / calls as f64
}

/// Decode + histogram of the PTU file at `path`, from memory: fused, and through columns.
fn decode_figures(path: &str) -> Result<(), Box<dyn std::error::Error>> {
    let bytes = std::fs::read(path)?;
    let header = PtuHeader::parse(&bytes)?;
    let start = header.header_len_bytes as usize;
    let records =
        &bytes[start..start + (header.number_of_records as usize * 4).min(bytes.len() - start)];
    let n_records = records.len() / 4;
    // Histogram sized as an acquisition would be: 4 channels, one sync period of micro time.
    let layout = HistogramLayout {
        channels: 4,
        native_bins: (header.bins_per_period() + 1).min(1 << 16),
        bin_width_native: 1,
        micro_bin_ps: header.resolution_s * 1e12,
        sync_rate_hz: header
            .sync_rate_hz
            .unwrap_or(1e9 / (header.global_resolution_s * 1e9)),
    };
    let mut hist = MicroTimeHistogram::new(layout.clone())?;
    let fused = time_per_call(1.0, || {
        hist.clear();
        decode_into(
            header.record_type,
            records,
            &mut DecoderState::default(),
            &mut hist,
        )
        .expect("decode");
    });
    println!(
        "decode_histogram_fused_records_per_s {:.6e}",
        n_records as f64 / fused
    );
    let mut cols = PhotonColumns::with_capacity(n_records);
    let tb = header.time_base();
    let columns = time_per_call(1.0, || {
        cols.clear();
        hist.clear();
        decode_records(
            header.record_type,
            tb,
            records,
            &mut DecoderState::default(),
            &mut cols,
        )
        .expect("decode");
        hist.add_photons(&cols).expect("histogram");
    });
    println!(
        "decode_columns_histogram_records_per_s {:.6e}",
        n_records as f64 / columns
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if !(3..=4).contains(&args.len()) {
        return Err("usage: tcspc_throughput FILE.ptu HISTS.txt [fits-only]".into());
    }
    let fits_only = args.get(3).is_some_and(|a| a == "fits-only");
    if !fits_only {
        decode_figures(&args[1])?;
    }

    // Fits and phasors of the given histograms.
    let text = std::fs::read_to_string(&args[2])?;
    type Group = (String, Vec<(FitConfig, Irf, Vec<f64>)>);
    let mut groups: Vec<Group> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (bw, period, fwhm, k): (f64, f64, f64, usize) =
            (f[0].parse()?, f[1].parse()?, f[2].parse()?, f[3].parse()?);
        let stat = if f[4] == "neyman" {
            FitStatistic::NeymanLeastSquares
        } else {
            FitStatistic::PoissonMle
        };
        let y: Vec<f64> = f[5..].iter().map(|v| v.parse()).collect::<Result<_, _>>()?;
        let mut config = FitConfig::new(k, stat, bw);
        config.period_ns = Some(period);
        let key = format!("fit_{k}exp_{}", f[4]);
        let irf = Irf::Gaussian {
            fwhm_ns: fwhm,
            center_ns: None,
        };
        match groups.iter_mut().find(|(name, _)| *name == key) {
            Some((_, v)) => v.push((config, irf, y)),
            None => groups.push((key, vec![(config, irf, y)])),
        }
    }
    for (name, items) in &groups {
        let (config, irf, y0) = &items[0];
        let mut fitter = LifetimeFitter::new(config.clone(), irf.clone(), y0.len())?;
        let mut converged = 0;
        let mut i = 0;
        let per_fit = time_per_call(1.0, || {
            let fit = fitter.fit(&items[i % items.len()].2).expect("fit");
            converged += usize::from(fit.converged);
            i += 1;
        });
        println!("{name}_fits_per_s {:.6e}", 1.0 / per_fit);
        println!(
            "{name}_converged_fraction {:.4}",
            converged as f64 / (i + 1) as f64
        );
        let taus: Vec<String> = items
            .iter()
            .map(|(_, _, y)| {
                let f = fitter.fit(y).expect("fit");
                format!("{:.6}", f.tau_ns[0])
            })
            .collect();
        println!("{name}_tau0_ns {}", taus.join(" "));
        let evaluations: usize = items
            .iter()
            .map(|(_, _, y)| fitter.fit(y).map_or(0, |f| f.evaluations))
            .sum();
        println!(
            "{name}_evaluations_mean {:.2}",
            evaluations as f64 / items.len() as f64
        );
    }
    if fits_only {
        return Ok(());
    }
    let all: Vec<&Vec<f64>> = groups
        .iter()
        .flat_map(|(_, v)| v.iter().map(|(_, _, y)| y))
        .collect();
    let mut calc = PhasorCalculator::new(all[0].len(), 3)?;
    let mut out = [Phasor::default(); 3];
    let mut i = 0;
    let per = time_per_call(1.0, || {
        calc.phasors(all[i % all.len()], 0.0, &mut out)
            .expect("phasor");
        i += 1;
    });
    println!("phasor_histograms_per_s {:.6e}", 1.0 / per);
    Ok(())
}
