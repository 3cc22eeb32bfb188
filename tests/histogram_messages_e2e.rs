//! TCSPC histograms sent as histograms (an instrument in histogram mode) over a real ZeroMQ
//! socket: each message becomes a `tcspc_histograms` row and is fitted into `lifetime_features`
//! by the same fitter as windows of photons, with the IRF the message brings; bad messages are
//! refused with their reason and good ones around them are kept.
//!
//! Ground truth: decays computed exactly on a fine time grid (the IRF convolved with an
//! exponential by its recursion, periodic over the sync period), binned, scaled to 1e6 counts
//! and rounded. The converter records only the first 512 of the period's 782 bins.

use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int64Type};
use flowdaq_connectors::message::OutboundMessage;
use flowdaq_connectors::runner::PushSender;
use flowdaq_daq::ServerConfig;
use flowdaq_schemas::{Dtype, StreamKind};

const BINS: usize = 782;
const RECORDED_BINS: usize = 512;
const SYNC_RATE_HZ: f64 = 20.0e6;
const SUB_BINS: usize = 16;

fn bin_width_ps() -> f64 {
    1e12 / SYNC_RATE_HZ / BINS as f64
}

/// An IRF on the fine grid: a Gaussian of `fwhm_ps` at `center_ps`, plus (when
/// `tail_fraction` is not 0) that fraction of its photons delayed exponentially by
/// `tail_tau_ps`: a detector's diffusion tail.
fn fine_irf(center_ps: f64, fwhm_ps: f64, tail_fraction: f64, tail_tau_ps: f64) -> Vec<f64> {
    let dt = bin_width_ps() / SUB_BINS as f64;
    let sigma = fwhm_ps / 2.354_820_045;
    let gauss: Vec<f64> = (0..BINS * SUB_BINS)
        .map(|i| {
            let t = (i as f64 + 0.5) * dt - center_ps;
            (-0.5 * (t / sigma).powi(2)).exp()
        })
        .collect();
    let total: f64 = gauss.iter().sum();
    let gauss: Vec<f64> = gauss.iter().map(|g| g / total).collect();
    if tail_fraction == 0.0 {
        return gauss;
    }
    let tail = convolve_exp(&gauss, tail_tau_ps);
    let tail_total: f64 = tail.iter().sum();
    gauss
        .iter()
        .zip(&tail)
        .map(|(g, t)| (1.0 - tail_fraction) * g + tail_fraction * t / tail_total)
        .collect()
}

/// `x` convolved with `exp(-t / tau)`, periodic over the grid (earlier pulses' tails).
fn convolve_exp(x: &[f64], tau_ps: f64) -> Vec<f64> {
    let dt = bin_width_ps() / SUB_BINS as f64;
    let decay = (-dt / tau_ps).exp();
    let mut y = vec![0.0; x.len()];
    let mut state = 0.0;
    // Three periods: the first two bring the tails into a steady state.
    for _ in 0..3 {
        for (yi, xi) in y.iter_mut().zip(x) {
            state = state * decay + xi;
            *yi = state;
        }
    }
    y
}

/// Sums the fine grid into bins, scales to `counts` over the recorded bins, rounds, and
/// leaves the unrecorded bins empty.
fn binned(fine: &[f64], counts: f64) -> Vec<u32> {
    let bins: Vec<f64> = fine.chunks(SUB_BINS).map(|c| c.iter().sum()).collect();
    let recorded: f64 = bins[..RECORDED_BINS].iter().sum();
    bins.iter()
        .enumerate()
        .map(|(k, b)| {
            if k < RECORDED_BINS {
                (b / recorded * counts).round() as u32
            } else {
                0
            }
        })
        .collect()
}

/// A histogram message's header: 10 s of acquisition on channel 1.
fn histogram_header(source: &str) -> OutboundMessage {
    OutboundMessage::new(source, StreamKind::TcspcHistogram)
        .meta("bin_width_ps", bin_width_ps())
        .meta("sync_rate_hz", SYNC_RATE_HZ)
        .meta("channel", 1)
        .meta("acquisition_time_s", 10.0)
}

fn histogram_message(source: &str, counts: &[u32], irf: Option<&[f64]>) -> OutboundMessage {
    let bytes: Vec<u8> = counts.iter().flat_map(|c| c.to_le_bytes()).collect();
    let message =
        histogram_header(source).raw_array("counts", Dtype::U32, &[counts.len() as u64], bytes);
    match irf {
        Some(irf) => message.array_f64("irf_counts", &[irf.len() as u64], irf),
        None => message,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histogram_messages_are_stored_and_fitted_with_the_irf_they_bring() {
    let tau_ps = 4000.0;
    // A detector whose IRF has a diffusion tail carrying 30 % of its photons.
    let irf = fine_irf(3000.0, 200.0, 0.3, 500.0);
    let irf_bins: Vec<f64> = irf
        .chunks(SUB_BINS)
        .map(|c| c.iter().sum::<f64>() * 1e5)
        .collect();
    let decay_with_tail = binned(&convolve_exp(&irf, tau_ps), 1e6);
    let decay_gaussian = binned(
        &convolve_exp(&fine_irf(3000.0, 200.0, 0.0, 1.0), tau_ps),
        1e6,
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let server = flowdaq_daq::start(ServerConfig::embedded_pull_only(dir.path()))
        .await
        .expect("start");
    let pull = server.endpoints.pull.clone().expect("pull");
    let mut sender = PushSender::connect(&pull).await.expect("connect");
    // No [features.tcspc] entry: the messages' own timing and the default options (one
    // component, Gaussian IRF of 200 ps) apply.
    sender
        .send(histogram_message("gauss", &decay_gaussian, None))
        .await
        .expect("send");
    sender
        .send(histogram_message("tail", &decay_with_tail, Some(&irf_bins)))
        .await
        .expect("send");
    sender
        .send(histogram_message("tail-no-irf", &decay_with_tail, None))
        .await
        .expect("send");
    // Refused, with reasons: an IRF of the wrong length, a fractional count, no bin width.
    sender
        .send(histogram_message(
            "bad",
            &decay_gaussian,
            Some(&irf_bins[..100]),
        ))
        .await
        .expect("send");
    let fractional = histogram_header("bad").array_f64("counts", &[3], &[1.0, 2.5, 3.0]);
    sender.send(fractional).await.expect("send");
    let no_width = OutboundMessage::new("bad", StreamKind::TcspcHistogram)
        .meta("sync_rate_hz", SYNC_RATE_HZ)
        .array_f64("counts", &[3], &[1.0, 2.0, 3.0]);
    sender.send(no_width).await.expect("send");
    // And a good one after them.
    sender
        .send(histogram_message("after", &decay_gaussian, None))
        .await
        .expect("send");
    assert!(
        server
            .metrics
            .wait_processed(7, Duration::from_secs(60))
            .await
    );
    assert_eq!(server.metrics.snapshot().messages_rejected, 3);

    let result = server
        .query
        .execute(
            "SELECT l.source, l.tau_1_ns, l.fit_flags, l.fit_range_end_ns, h.photon_count, \
             h.count_rate_hz, h.channel FROM lifetime_features l JOIN tcspc_histograms h \
             USING (source, seq) ORDER BY l.source",
        )
        .await
        .expect("sql");
    let batch = arrow::compute::concat_batches(&result.schema, &result.batches).expect("concat");
    assert_eq!(batch.num_rows(), 4, "one row per good message");
    let sources: Vec<&str> = (0..4)
        .map(|i| batch.column(0).as_string::<i32>().value(i))
        .collect();
    assert_eq!(sources, ["after", "gauss", "tail", "tail-no-irf"]);
    let tau = batch.column(1).as_primitive::<Float64Type>();
    let flags = batch
        .column(2)
        .as_primitive::<arrow::datatypes::UInt32Type>();
    let range_end_ns = batch.column(3).as_primitive::<Float64Type>();
    for (row, name) in [(1, "gauss"), (2, "tail")] {
        let error = tau.value(row) / 4.0 - 1.0;
        assert!(error.abs() < 0.01, "{name}: tau {} ns", tau.value(row));
        assert_eq!(flags.value(row), 0, "{name}");
        // The fit stopped where the converter did.
        let recorded_ns = RECORDED_BINS as f64 * bin_width_ps() * 1e-3;
        assert!(
            (range_end_ns.value(row) - recorded_ns).abs() < 1e-6,
            "{name}"
        );
    }
    // The same tailed decay fitted with a Gaussian IRF is off, and says so.
    let biased = tau.value(3) / 4.0 - 1.0;
    assert!(
        biased.abs() > 0.03 || flags.value(3) != 0,
        "tau {}",
        tau.value(3)
    );
    let photons = batch
        .column(4)
        .as_primitive::<arrow::datatypes::UInt64Type>();
    let expected: u64 = decay_gaussian.iter().map(|&c| u64::from(c)).sum();
    assert_eq!(photons.value(1), expected);
    let rate = batch.column(5).as_primitive::<Float64Type>();
    assert!((rate.value(1) - expected as f64 / 10.0).abs() < 1e-6);
    // Each fit records the Gaussian IRF it used; one with the measured IRF records none.
    let irf_used = server
        .query
        .execute("SELECT source, irf_fwhm_ps FROM lifetime_features ORDER BY source")
        .await
        .expect("sql");
    let irf_used =
        arrow::compute::concat_batches(&irf_used.schema, &irf_used.batches).expect("concat");
    let fwhm = irf_used.column(1).as_primitive::<Float64Type>();
    let recorded: Vec<Option<f64>> = (0..4)
        .map(|i| (!fwhm.is_null(i)).then(|| fwhm.value(i)))
        .collect();
    assert_eq!(recorded, [Some(200.0), Some(200.0), None, Some(200.0)]);
    let irf_stored = server
        .query
        .execute("SELECT count(*) FROM tcspc_histograms WHERE irf_counts IS NOT NULL")
        .await
        .expect("sql");
    assert_eq!(
        irf_stored.batches[0]
            .column(0)
            .as_primitive::<Int64Type>()
            .value(0),
        1
    );
    server.shutdown().await.expect("shutdown");
}
