//! The spectral extractor on decoded wire messages: ground-truth peaks, key columns copied,
//! absorbance rows, PLQY pairing, flagged spectra, and agreement of the table schema with the
//! analytics kernels' own output schemas.

use super::*;
use arrow::array::{Float64Array, ListArray, UInt32Array, UInt64Array};
use arrow::datatypes::Float32Type;
use flowdaq_analytics::spectral::{pl_features, AbsorbanceFeatures, PlFeatures};
use flowdaq_connectors::decode::{decode_message, DecodeContext, DecodeLimits};
use flowdaq_connectors::message::OutboundMessage;
use flowdaq_schemas::StreamKind;

use crate::config::PlqyConfig;

const NOW_NS: i64 = 1_764_000_000_000_000_000;

fn axis() -> Vec<f64> {
    (0..1024).map(|i| 400.0 + 0.2 * i as f64).collect()
}

fn gaussian(center_nm: f64, sigma_nm: f64, height: f64, offset: f64) -> Vec<f32> {
    axis()
        .iter()
        .map(|nm| (offset + height * (-0.5 * ((nm - center_nm) / sigma_nm).powi(2)).exp()) as f32)
        .collect()
}

fn message(
    kind: &str,
    seq: u64,
    condition: &str,
    spectra: &[Vec<f32>],
) -> Vec<(Table, RecordBatch)> {
    message_on(&axis(), kind, seq, condition, spectra)
}

/// [`message`] with spectra on another wavelength axis (another calibration).
fn message_on(
    axis_nm: &[f64],
    kind: &str,
    seq: u64,
    condition: &str,
    spectra: &[Vec<f32>],
) -> Vec<(Table, RecordBatch)> {
    let pixels = axis_nm.len() as u64;
    let counts: Vec<f32> = spectra.iter().flatten().copied().collect();
    let mut msg = OutboundMessage::new("spec-1", StreamKind::Spectra)
        .meta("kind", kind)
        .meta("integration_time_ms", 20.0)
        .meta("probe_position_mm", 150.0)
        .array_f64("wavelength_nm", &[pixels], axis_nm)
        .array_f32("intensity_counts", &[spectra.len() as u64, pixels], &counts);
    msg.header.seq = seq;
    msg.header.run_id = Some("run-a".into());
    msg.header.condition_id = Some(condition.into());
    let limits = DecodeLimits::default();
    let ctx = DecodeContext {
        arrival_time_ns: NOW_NS,
        default_run_id: "default",
        limits: &limits,
    };
    match decode_message(&msg.frames(), &ctx) {
        Ok(decoded) => decoded.batches,
        Err((_, err)) => panic!("test message rejected: {err}"),
    }
}

fn f64_col<'a>(batch: &'a RecordBatch, name: &str) -> &'a Float64Array {
    batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .as_primitive::<Float64Type>()
}

fn only_batch(rows: Vec<(Table, RecordBatch)>) -> RecordBatch {
    assert_eq!(rows.len(), 1);
    let (table, batch) = rows.into_iter().next().expect("one batch");
    assert_eq!(table, Table::SpectralFeatures);
    assert_eq!(batch.schema(), Table::SpectralFeatures.unsequenced_schema());
    batch
}

#[test]
fn pl_rows_get_ground_truth_peaks_and_the_spectrum_key() {
    let mut extractor =
        SpectralFeatures::new(&SpectralFeaturesConfig::default(), None).expect("valid");
    let spectra = [
        gaussian(515.0, 8.0, 1000.0, 50.0),
        gaussian(480.3, 5.0, 400.0, 20.0),
    ];
    let batch = only_batch(
        extractor
            .extract(&message("pl", 7, "c1", &spectra))
            .expect("ok"),
    );
    assert_eq!(batch.num_rows(), 2);
    let peak = f64_col(&batch, "peak_wavelength_nm");
    let fwhm = f64_col(&batch, "fwhm_nm");
    let energy = f64_col(&batch, "peak_energy_ev");
    let fwhm_factor = 2.0 * (2.0f64 * 2.0f64.ln()).sqrt();
    for (row, (center, sigma)) in [(515.0, 8.0), (480.3, 5.0)].into_iter().enumerate() {
        assert!(
            (peak.value(row) - center).abs() < 0.02,
            "{}",
            peak.value(row)
        );
        assert!((fwhm.value(row) - fwhm_factor * sigma).abs() < 0.05);
        assert!((energy.value(row) - 1239.841984 / center).abs() < 1e-3);
    }
    let seq = batch.column_by_name("seq").expect("seq");
    assert_eq!(
        seq.as_ref(),
        &UInt64Array::from(vec![7u64, 7]) as &dyn Array
    );
    let index = batch.column_by_name("spectrum_index").expect("index");
    assert_eq!(
        index.as_ref(),
        &UInt32Array::from(vec![0u32, 1]) as &dyn Array
    );
    let conditions = batch.column_by_name("condition_id").expect("cond");
    assert_eq!(conditions.as_string::<i32>().value(1), "c1");
    assert_eq!(f64_col(&batch, "probe_position_mm").value(0), 150.0);
    assert!(f64_col(&batch, "exciton_wavelength_nm").is_null(0));
    assert!(
        f64_col(&batch, "plqy").is_null(0),
        "no PLQY reference configured"
    );
    let names = batch.column_by_name("quality_flag_names").expect("names");
    assert_eq!(names.as_string::<i32>().value(0), "");
}

#[test]
fn each_calibration_keeps_its_own_prepared_analysis() {
    // Messages alternate between two spectrometer calibrations (the second: half the pixels,
    // twice the step, shifted). Each is analysed on its own axis, one prepared analyzer per
    // calibration id, and equals pl_features computed from scratch.
    let mut extractor =
        SpectralFeatures::new(&SpectralFeaturesConfig::default(), None).expect("valid");
    let other_axis: Vec<f64> = (0..512).map(|i| 450.0 + 0.4 * i as f64).collect();
    let on_other = |center_nm: f64| -> Vec<f32> {
        other_axis
            .iter()
            .map(|nm| (30.0 + 800.0 * (-0.5 * ((nm - center_nm) / 6.0).powi(2)).exp()) as f32)
            .collect()
    };
    let cases = [
        (axis(), gaussian(515.0, 8.0, 1000.0, 50.0), 515.0),
        (other_axis.clone(), on_other(601.7), 601.7),
        (axis(), gaussian(452.5, 6.0, 700.0, 10.0), 452.5),
        (other_axis.clone(), on_other(530.2), 530.2),
    ];
    for (seq, (axis_nm, spectrum, center)) in cases.into_iter().enumerate() {
        let spectra = [spectrum];
        let batch = only_batch(
            extractor
                .extract(&message_on(&axis_nm, "pl", seq as u64, "c1", &spectra))
                .expect("ok"),
        );
        let peak = f64_col(&batch, "peak_wavelength_nm").value(0);
        assert!((peak - center).abs() < 0.02, "message {seq}: {peak}");
        let list = ListArray::from_iter_primitive::<Float32Type, _, _>(
            spectra
                .iter()
                .map(|s| Some(s.iter().map(|&v| Some(v)).collect::<Vec<_>>())),
        );
        let fresh = pl_features(&axis_nm, &list, &extractor.peak).expect("valid");
        assert_eq!(f64_col(&batch, "fwhm_nm"), &fresh.fwhm_nm, "message {seq}");
    }
    assert_eq!(extractor.pl_analyzers.len(), 2);
}

#[test]
fn flat_and_edge_spectra_get_rows_with_flags_and_nulls() {
    let mut extractor =
        SpectralFeatures::new(&SpectralFeaturesConfig::default(), None).expect("valid");
    let flat = vec![0.0f32; axis().len()];
    let edge = gaussian(399.0, 5.0, 1000.0, 0.0);
    let batch = only_batch(
        extractor
            .extract(&message("pl", 1, "c1", &[flat, edge]))
            .expect("ok"),
    );
    assert_eq!(batch.num_rows(), 2);
    let flags = batch
        .column_by_name("quality_flags")
        .expect("flags")
        .as_primitive::<arrow::datatypes::UInt32Type>();
    let names = batch
        .column_by_name("quality_flag_names")
        .expect("names")
        .as_string::<i32>();
    assert!(QualityFlags(flags.value(0)).contains(QualityFlags::FLAT_SPECTRUM));
    assert!(names.value(0).split('|').any(|n| n == "FLAT_SPECTRUM"));
    assert!(f64_col(&batch, "peak_wavelength_nm").is_null(0));
    assert!(QualityFlags(flags.value(1)).contains(QualityFlags::PEAK_AT_EDGE));
    let expected: Vec<&str> = QualityFlags(flags.value(1)).names().collect();
    assert_eq!(names.value(1), expected.join("|"));
}

#[test]
fn raw_ingredient_kinds_get_no_rows() {
    let mut extractor =
        SpectralFeatures::new(&SpectralFeaturesConfig::default(), None).expect("valid");
    for kind in ["dark", "reference", "sample"] {
        let rows = extractor
            .extract(&message(kind, 1, "c1", &[gaussian(500.0, 5.0, 10.0, 0.0)]))
            .expect("ok");
        assert!(rows.is_empty(), "{kind} produced rows");
    }
}

fn absorbance_spectrum(exciton_nm: f64, od_at_450: f64) -> Vec<f32> {
    // Rising edge towards the blue plus an excitonic bump; scaled so A(450 nm) = od_at_450.
    let shape = |nm: f64| {
        1.0 / (1.0 + ((nm - exciton_nm) / 6.0).exp())
            + 0.8 * (-0.5 * ((nm - exciton_nm) / 5.0).powi(2)).exp()
    };
    let scale = od_at_450 / shape(450.0);
    axis()
        .iter()
        .map(|&nm| (scale * shape(nm)) as f32)
        .collect()
}

#[test]
fn plqy_pairs_pl_with_the_latest_absorbance_of_its_condition() {
    let reference = PlqyConfig {
        reference_quantum_yield: 0.95,
        reference_integrated_pl_counts_nm: 20_000.0,
        reference_absorbance_at_excitation: 0.04,
        reference_refractive_index: 1.361,
        sample_refractive_index: 1.496,
    };
    let config = SpectralFeaturesConfig {
        excitation_nm: Some(450.0),
        plqy: Some(reference),
        ..SpectralFeaturesConfig::default()
    };
    let mut extractor = SpectralFeatures::new(&config, None).expect("valid");
    let pl = [gaussian(515.0, 8.0, 1000.0, 0.0)];
    // PL before any absorbance of its condition: no PLQY yet.
    let before = only_batch(extractor.extract(&message("pl", 1, "c1", &pl)).expect("ok"));
    assert!(f64_col(&before, "plqy").is_null(0));

    let absorbance = only_batch(
        extractor
            .extract(&message(
                "absorbance",
                2,
                "c1",
                &[absorbance_spectrum(505.0, 0.03)],
            ))
            .expect("ok"),
    );
    let a_exc = f64_col(&absorbance, "absorbance_at_excitation").value(0);
    assert!((a_exc - 0.03).abs() < 1e-4, "{a_exc}");
    assert!(f64_col(&absorbance, "peak_wavelength_nm").is_null(0));
    assert!(f64_col(&absorbance, "exciton_wavelength_nm").is_valid(0));

    let after = only_batch(extractor.extract(&message("pl", 3, "c1", &pl)).expect("ok"));
    let integrated = f64_col(&after, "integrated_intensity_counts_nm").value(0);
    let absorbed = |a: f64| 1.0 - 10f64.powf(-a);
    let expected = 0.95
        * (integrated / 20_000.0)
        * (absorbed(0.04) / absorbed(a_exc))
        * (1.496f64.powi(2) / 1.361f64.powi(2));
    let plqy = f64_col(&after, "plqy").value(0);
    assert!(
        (plqy - expected).abs() < 1e-9 * expected,
        "{plqy} vs {expected}"
    );

    // Another condition has no absorbance yet.
    let other = only_batch(extractor.extract(&message("pl", 4, "c2", &pl)).expect("ok"));
    assert!(f64_col(&other, "plqy").is_null(0));
}

#[test]
fn table_columns_match_the_kernels_output_schemas() {
    let table = Table::SpectralFeatures.schema();
    for field in PlFeatures::schema().fields() {
        if field.name() == "quality_flags" {
            continue;
        }
        let ours = table
            .field_with_name(field.name())
            .expect("PL column in table");
        assert_eq!(ours.data_type(), field.data_type(), "{}", field.name());
    }
    for field in AbsorbanceFeatures::schema().fields() {
        if field.name() == "quality_flags" {
            continue;
        }
        let ours = table
            .field_with_name(field.name())
            .expect("absorbance column");
        assert_eq!(ours.data_type(), field.data_type(), "{}", field.name());
    }
}

#[test]
fn refused_options_are_reported() {
    let config = SpectralFeaturesConfig {
        min_relative_prominence: 2.0,
        ..SpectralFeaturesConfig::default()
    };
    assert!(SpectralFeatures::new(&config, None).is_err());
    let config = SpectralFeaturesConfig {
        plqy: Some(PlqyConfig {
            reference_quantum_yield: 0.95,
            reference_integrated_pl_counts_nm: 1.0,
            reference_absorbance_at_excitation: 0.04,
            reference_refractive_index: 1.36,
            sample_refractive_index: 1.5,
        }),
        excitation_nm: None,
        ..SpectralFeaturesConfig::default()
    };
    let err = SpectralFeatures::new(&config, None)
        .err()
        .expect("needs excitation");
    assert!(err.to_string().contains("excitation_nm"), "{err}");
}
