//! The TCSPC extractor: a synthetic decay of known lifetime is fitted and phasored right, and
//! the real HydraHarp file gives the same windows whether its photons come in small or large
//! messages (so a replayed file and a live stream agree).

use super::*;
use crate::config::TcspcSourceConfig;
use crate::test_rng::Uniform;
use arrow::datatypes::Float64Type;
use flowdaq_connectors::decode::{decode_message, DecodeContext, DecodeLimits};
use flowdaq_connectors::message::OutboundMessage;
use flowdaq_connectors::replay::ptu::PtuReplayConfig;
use flowdaq_connectors::Connector;
use flowdaq_schemas::StreamKind;

fn source_config(sync_rate_hz: f64, micro_bin_ps: f64, channels: usize) -> TcspcSourceConfig {
    TcspcSourceConfig {
        channels,
        ..TcspcSourceConfig::new(sync_rate_hz, micro_bin_ps)
    }
}

fn extractor(source: &str, config: TcspcSourceConfig) -> TcspcExtractor {
    let mut all = TcspcFeaturesConfig::default();
    all.sources.insert(source.into(), config);
    TcspcExtractor::new(&all).expect("valid config")
}

fn decoded(message: &OutboundMessage) -> Vec<(Table, RecordBatch)> {
    let limits = DecodeLimits::default();
    let ctx = DecodeContext {
        arrival_time_ns: 1,
        default_run_id: "default",
        limits: &limits,
    };
    match decode_message(&message.frames(), &ctx) {
        Ok(d) => d.batches,
        Err((_, err)) => panic!("rejected: {err}"),
    }
}

#[test]
fn a_synthetic_mono_exponential_decay_is_fitted_and_phasored_to_its_lifetime() {
    // 20 MHz laser (50 ns period), 25 ps bins, IRF of 200 ps FWHM at 5 ns, tau = 3.2 ns.
    let (sync_rate_hz, bin_ps, tau_ns) = (20e6, 25.0, 3.2);
    let period_ps = 1e12 / sync_rate_hz;
    let mut uniform = Uniform(0x9e37_79b9_7f4a_7c15);
    let photons = 200_000usize;
    let syncs_per_photon = 100; // 200k photons over 1e7 syncs = 0.5 s: one whole window.
    let mut macro_ps = Vec::with_capacity(photons);
    let mut micro_ps = Vec::with_capacity(photons);
    for i in 0..photons {
        let sigma_ps = 200.0 / 2.354_820_045;
        let gauss = (-2.0 * uniform.next().ln()).sqrt()
            * (2.0 * std::f64::consts::PI * uniform.next()).cos();
        let t_ps = 5000.0 + sigma_ps * gauss - tau_ns * 1000.0 * uniform.next().ln();
        let t_ps = t_ps.rem_euclid(period_ps);
        macro_ps.push((i as u64 * syncs_per_photon) as i64 * period_ps as i64);
        micro_ps.push(((t_ps / bin_ps).floor() * bin_ps) as i32);
    }
    // One more photon past 1 s closes the first window.
    macro_ps.push(1_100_000_000_000);
    micro_ps.push(0);
    let n = macro_ps.len();
    let message = OutboundMessage::new("tcspc-1", StreamKind::Photons)
        .array_i64("macro_time_ps", &[n as u64], &macro_ps)
        .array_i32("micro_time_ps", &[n as u64], &micro_ps)
        .array_u8("channel", &[n as u64], &vec![0u8; n]);
    let mut extractor = extractor("tcspc-1", source_config(sync_rate_hz, bin_ps, 1));
    let out = extractor.extract(&decoded(&message)).expect("extract");
    let (_, histograms) = out
        .iter()
        .find(|(t, _)| *t == Table::TcspcHistograms)
        .expect("histograms");
    assert_eq!(histograms.num_rows(), 1);
    let photon_count = histograms
        .column_by_name("photon_count")
        .expect("count")
        .as_primitive::<UInt64Type>()
        .value(0);
    assert_eq!(photon_count, photons as u64);
    let (_, lifetimes) = out
        .iter()
        .find(|(t, _)| *t == Table::LifetimeFeatures)
        .expect("lifetimes");
    let value = |name: &str| {
        lifetimes
            .column_by_name(name)
            .unwrap_or_else(|| panic!("{name}"))
            .as_primitive::<Float64Type>()
            .value(0)
    };
    let fitted = value("tau_1_ns");
    assert!(
        (fitted - tau_ns).abs() < 0.01 * tau_ns,
        "fit {fitted} vs {tau_ns}"
    );
    // The phasor is uncalibrated (no IRF correction): the IRF delay rotates it, so only the
    // modulation lifetime (insensitive to a pure delay) is compared, within the IRF's width.
    let tau_mod = value("phasor_tau_modulation_ns");
    assert!(
        (tau_mod - tau_ns).abs() < 0.05 * tau_ns,
        "phasor {tau_mod} vs {tau_ns}"
    );
    let converged = lifetimes
        .column_by_name("converged")
        .expect("converged")
        .as_boolean()
        .value(0);
    assert!(converged);
}

fn replay_windows(records_per_message: usize) -> (RecordBatch, RecordBatch) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../connectors/tests/data/hydraharp_t3_beads.ptu");
    let config = PtuReplayConfig {
        records_per_message,
        ..PtuReplayConfig::new(path)
    };
    let mut replay = config.build().expect("ptu");
    let tcspc = source_config(
        replay.sync_rate_hz().expect("sync rate"),
        replay.resolution_ps(),
        2,
    );
    let mut extractor = extractor(
        &config.source,
        TcspcSourceConfig {
            window_s: 2.0,
            ..tcspc
        },
    );
    let (mut histograms, mut lifetimes) = (Vec::new(), Vec::new());
    while let Some(message) = replay.next_message().expect("replay") {
        for (table, batch) in extractor.extract(&decoded(&message)).expect("extract") {
            match table {
                Table::TcspcHistograms => histograms.push(batch),
                Table::LifetimeFeatures => lifetimes.push(batch),
                _ => {}
            }
        }
    }
    let concat = |table: Table, batches: &[RecordBatch]| {
        arrow::compute::concat_batches(&table.unsequenced_schema(), batches).expect("concat")
    };
    (
        concat(Table::TcspcHistograms, &histograms),
        concat(Table::LifetimeFeatures, &lifetimes),
    )
}

#[test]
fn a_real_file_gives_the_same_windows_however_it_is_chunked() {
    let (small_h, small_l) = replay_windows(1000);
    let (large_h, large_l) = replay_windows(65_536);
    // 10.6 s of data in 2 s windows: 5 closed windows x 2 channels (the last stays open).
    assert_eq!(small_h.num_rows(), 10);
    let skip_provenance = |batch: &RecordBatch| -> Vec<ArrayRef> { batch.columns()[6..].to_vec() };
    assert_eq!(skip_provenance(&small_h), skip_provenance(&large_h));
    assert_eq!(skip_provenance(&small_l), skip_provenance(&large_l));
    // Summed over the closed windows and both channels, the histogram peaks where ptufile puts
    // the whole file's peak (bin 254 of 16 ps; each channel alone peaks elsewhere).
    let lists = small_h
        .column_by_name("counts")
        .expect("counts")
        .as_list::<i32>();
    let mut total = vec![0u64; 0];
    for row in 0..lists.len() {
        let counts = lists.value(row);
        let counts = counts
            .as_primitive::<arrow::datatypes::UInt32Type>()
            .values()
            .to_vec();
        total.resize(total.len().max(counts.len()), 0);
        for (t, c) in total.iter_mut().zip(counts) {
            *t += u64::from(c);
        }
    }
    let peak = total
        .iter()
        .enumerate()
        .max_by_key(|(_, c)| **c)
        .map(|(i, _)| i)
        .expect("bins");
    assert_eq!(peak, 254);
}

/// Photons of a `tau_ns` decay behind an IRF with a slow exponential tail (a real detector's
/// diffusion tail), in one 1 s window of a 20 MHz laser with 25 ps bins; plus that IRF as
/// measured separately, binned the same way.
fn tailed_irf_decay(tau_ns: f64) -> (OutboundMessage, Vec<f64>, usize) {
    let (sync_rate_hz, bin_ps, tail_ns) = (20e6, 25.0, 0.8);
    let period_ps = 1e12 / sync_rate_hz;
    let bins = (period_ps / bin_ps) as usize;
    let mut uniform = Uniform(0x2545_f491_4f6c_dd1d);
    let irf_delay_ps = |u: &mut Uniform| {
        let gauss = (-2.0 * u.next().ln()).sqrt() * (std::f64::consts::TAU * u.next()).cos();
        let tail = if u.next() < 0.5 {
            -tail_ns * 1000.0 * u.next().ln()
        } else {
            0.0
        };
        5000.0 + 50.0 * gauss + tail
    };
    let mut irf = vec![0.0; bins];
    for _ in 0..400_000 {
        let t = irf_delay_ps(&mut uniform).rem_euclid(period_ps);
        irf[((t / bin_ps) as usize).min(bins - 1)] += 1.0;
    }
    let photons = 200_000usize;
    let (mut macro_ps, mut micro_ps) = (Vec::new(), Vec::new());
    for i in 0..photons {
        let t = (irf_delay_ps(&mut uniform) - tau_ns * 1000.0 * uniform.next().ln())
            .rem_euclid(period_ps);
        macro_ps.push((i as u64 * 100) as i64 * period_ps as i64);
        micro_ps.push(((t / bin_ps).floor() * bin_ps) as i32);
    }
    macro_ps.push(1_100_000_000_000);
    micro_ps.push(0);
    let n = macro_ps.len() as u64;
    let message = OutboundMessage::new("tcspc-1", StreamKind::Photons)
        .array_i64("macro_time_ps", &[n], &macro_ps)
        .array_i32("micro_time_ps", &[n], &micro_ps)
        .array_u8("channel", &[n], &vec![0u8; n as usize]);
    (message, irf, bins)
}

fn lifetime_value(out: &[(Table, RecordBatch)], name: &str) -> f64 {
    let (_, lifetimes) = out
        .iter()
        .find(|(t, _)| *t == Table::LifetimeFeatures)
        .expect("lifetimes");
    lifetimes
        .column_by_name(name)
        .unwrap_or_else(|| panic!("{name}"))
        .as_primitive::<Float64Type>()
        .value(0)
}

#[test]
fn a_measured_irf_from_configuration_removes_the_bias_of_a_gaussian_one() {
    let tau_ns = 3.2;
    let (message, irf, bins) = tailed_irf_decay(tau_ns);
    // The Gaussian IRF cannot represent the tail: the fit absorbs it into the lifetime.
    let mut gaussian = extractor("tcspc-1", source_config(20e6, 25.0, 1));
    let out = gaussian.extract(&decoded(&message)).expect("extract");
    let biased = lifetime_value(&out, "tau_1_ns");
    assert!(
        (biased - tau_ns).abs() > 0.03 * tau_ns,
        "gaussian fit {biased}"
    );

    let mut config = source_config(20e6, 25.0, 1);
    config.irf_counts = Some(irf.clone());
    let mut measured = extractor("tcspc-1", config);
    let out = measured.extract(&decoded(&message)).expect("extract");
    let fitted = lifetime_value(&out, "tau_1_ns");
    assert!(
        (fitted - tau_ns).abs() < 0.01 * tau_ns,
        "measured-IRF fit {fitted}"
    );
    // Calibrated with the measured IRF where the fit put it, the phasor lies on the
    // semicircle at the lifetime.
    let tau_phase = lifetime_value(&out, "phasor_tau_phase_ns");
    assert!(
        (tau_phase - tau_ns).abs() < 0.03 * tau_ns,
        "phasor {tau_phase}"
    );

    // A measured IRF of the wrong length is refused at start-up, with the expected length.
    let mut wrong = source_config(20e6, 25.0, 1);
    wrong.irf_counts = Some(irf[..bins - 1].to_vec());
    let mut all = TcspcFeaturesConfig::default();
    all.sources.insert("tcspc-1".into(), wrong);
    let err = TcspcExtractor::new(&all)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains(&format!("{bins} finite")), "{err}");
}

/// The HydraHarp file's raw records in messages of `records_per_message`, through the
/// extractor twice: as native events (deferred decode, `extract_records`) and as the `photons`
/// rows of the eager decode (`extract`). Returns both routes' rows per table.
fn raw_record_routes(
    records_per_message: usize,
    tcspc: TcspcSourceConfig,
) -> [Vec<(Table, RecordBatch)>; 2] {
    use flowdaq_connectors::decode::RecordStreams;
    use flowdaq_connectors::decode::{decode_message_deferred, decode_message_stateful};
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../connectors/tests/data/hydraharp_t3_beads.ptu");
    let bytes = std::fs::read(path).expect("read ptu");
    let header = flowdaq_analytics::tcspc::ptu::PtuHeader::parse(&bytes).expect("header");
    let start = header.header_len_bytes as usize;
    let records = &bytes[start..start + 4 * header.number_of_records as usize];
    let limits = DecodeLimits::default();
    let ctx = DecodeContext {
        arrival_time_ns: 1,
        default_run_id: "default",
        limits: &limits,
    };
    let mut events_route = extractor("hh", tcspc.clone());
    let mut rows_route = extractor("hh", tcspc);
    let (mut deferred_streams, mut eager_streams) =
        (RecordStreams::default(), RecordStreams::default());
    let mut out = [Vec::new(), Vec::new()];
    for (seq, chunk) in records.chunks(4 * records_per_message).enumerate() {
        let mut message = OutboundMessage::new("hh", StreamKind::Photons)
            .meta("record_type", header.record_type.code())
            .meta("macro_unit_ps", header.time_base().macro_unit_ps)
            .meta("micro_bin_ps", header.time_base().micro_bin_ps)
            .raw_array(
                "records",
                flowdaq_schemas::Dtype::U32,
                &[(chunk.len() / 4) as u64],
                chunk.to_vec(),
            );
        message.header.seq = seq as u64;
        let frames = message.frames();
        let deferred =
            decode_message_deferred(&frames, &ctx, &mut deferred_streams).expect("valid");
        assert!(deferred.batches.is_empty());
        let records = deferred.records.as_ref().expect("events");
        let events = PhotonRecords {
            origin: MessageOrigin {
                arrival_time_ns: 1,
                instrument_time_ns: None,
                source: "hh",
                run_id: "default",
                condition_id: None,
                seq: seq as u64,
            },
            records,
        };
        out[0].extend(events_route.extract_records(&events).expect("events"));
        let eager = decode_message_stateful(&frames, &ctx, &mut eager_streams).expect("valid");
        out[1].extend(rows_route.extract(&eager.batches).expect("rows"));
    }
    out
}

#[test]
fn raw_records_as_native_events_give_the_windows_and_fits_of_their_photons_rows() {
    let header_sync = {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../connectors/tests/data/hydraharp_t3_beads.ptu");
        let bytes = std::fs::read(path).expect("read ptu");
        flowdaq_analytics::tcspc::ptu::PtuHeader::parse(&bytes)
            .expect("header")
            .time_base()
    };
    let base = TcspcSourceConfig {
        window_s: 2.0,
        ..source_config(
            1e12 / header_sync.macro_unit_ps,
            header_sync.micro_bin_ps,
            2,
        )
    };
    // The layout of the messages' own time base (native events go to the windower as they
    // are), and one whose sync rate is 0.1 % off (the events go through ps).
    let off = TcspcSourceConfig {
        sync_rate_hz: base.sync_rate_hz * 1.001,
        ..base.clone()
    };
    for (name, config) in [("native", base), ("converted", off)] {
        let [events, rows] = raw_record_routes(4_093, config);
        assert!(!rows.is_empty(), "{name}: windows closed");
        assert_eq!(events.len(), rows.len(), "{name}");
        for ((table_a, a), (table_b, b)) in events.iter().zip(&rows) {
            assert_eq!(table_a, table_b, "{name}");
            // Columns after the provenance (arrival, instrument time, source, run, condition,
            // seq), which these two routes fill alike anyway.
            assert_eq!(a.columns()[6..], b.columns()[6..], "{name}: {table_a:?}");
        }
    }
}

#[test]
fn finishing_writes_the_open_window_so_every_photon_is_histogrammed() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../connectors/tests/data/hydraharp_t3_beads.ptu");
    let config = PtuReplayConfig {
        records_per_message: 4_096,
        ..PtuReplayConfig::new(path)
    };
    let mut replay = config.build().expect("ptu");
    let tcspc = TcspcSourceConfig {
        window_s: 2.0,
        ..source_config(
            replay.sync_rate_hz().expect("sync rate"),
            replay.resolution_ps(),
            2,
        )
    };
    let mut extractor = extractor(&config.source, tcspc);
    let mut photons = Vec::new();
    while let Some(message) = replay.next_message().expect("replay") {
        for (table, batch) in extractor.extract(&decoded(&message)).expect("extract") {
            if table == Table::TcspcHistograms {
                photons.push(batch);
            }
        }
    }
    let closed_rows: usize = photons.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(
        closed_rows, 10,
        "5 whole 2 s windows x 2 channels, closed by later photons"
    );
    let last = extractor.finish(Some(&config.source)).expect("finish");
    let (_, last_histograms) = last
        .iter()
        .find(|(t, _)| *t == Table::TcspcHistograms)
        .expect("the open window's rows");
    assert_eq!(last_histograms.num_rows(), 2, "one row per channel");
    assert!(last.iter().any(|(t, _)| *t == Table::LifetimeFeatures));
    photons.push(last_histograms.clone());
    let total: u64 = photons
        .iter()
        .map(|b| {
            b.column_by_name("photon_count")
                .expect("count")
                .as_primitive::<UInt64Type>()
                .values()
                .iter()
                .sum::<u64>()
        })
        .sum();
    assert_eq!(total, 73_787, "ptufile's photon count");
    // It keeps the source of its messages, and a second finish has nothing left.
    let source = last_histograms
        .column_by_name("source")
        .expect("source")
        .as_string::<i32>()
        .value(0);
    assert_eq!(source, config.source);
    assert!(extractor.finish(None).expect("finish").is_empty());
}
