//! Hostile spectra and odd Arrow layouts: flags or errors, never a panic, never a wrong row.
//!
//! All NaN, infinities, null pixels, all zero, one pixel, a million pixels (noise and the
//! nested-peak pattern that makes naive prominence walks quadratic), unsorted and mismatched
//! axes, wrong types, sliced / LargeList / FixedSizeList inputs, null and all-null batches.

mod spectral_common;

use std::sync::Arc;

use arrow_array::types::{Float32Type, Int32Type};
use arrow_array::{Array, FixedSizeListArray, Float32Array, LargeListArray, ListArray};
use arrow_schema::{DataType, Field};
use flowdaq_analytics::spectral::baseline::{AslsParams, Baseline};
use flowdaq_analytics::spectral::{
    absorbance, absorbance_features, dark_subtract, pl_features, preprocess, AbsorbanceOptions,
    PeakOptions, PlFeatures, Preprocessing, QualityFlags, SpectralError,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use spectral_common::*;

fn axis(n: usize) -> Vec<f64> {
    (0..n).map(|i| 400.0 + 0.3 * i as f64).collect()
}

fn gauss(n: usize, c: f64, s: f64) -> Vec<f32> {
    (0..n)
        .map(|i| (50.0 + 1000.0 * (-0.5 * ((i as f64 - c) / s).powi(2)).exp()) as f32)
        .collect()
}

fn flags(f: &PlFeatures, row: usize) -> QualityFlags {
    QualityFlags(f.quality_flags.value(row))
}

#[test]
fn non_finite_pixels_are_flagged_with_null_features() {
    let n = 256;
    let mut one_nan = gauss(n, 100.0, 5.0);
    one_nan[17] = f32::NAN;
    let mut inf = gauss(n, 100.0, 5.0);
    inf[200] = f32::INFINITY;
    let mut neg_inf = gauss(n, 100.0, 5.0);
    neg_inf[0] = f32::NEG_INFINITY;
    let rows = vec![
        vec![f32::NAN; n],
        one_nan,
        inf,
        neg_inf,
        gauss(n, 100.0, 5.0),
    ];
    for pre in [
        Preprocessing::default(),
        Preprocessing {
            savgol: Some((7, 2)),
            baseline: Baseline::LinearEdge { edge_pixels: 5 },
        },
    ] {
        let opts = PeakOptions {
            preprocessing: pre,
            ..Default::default()
        };
        let f = pl_features(&axis(n), &list_f32(&rows), &opts).unwrap();
        for r in 0..4 {
            assert_eq!(flags(&f, r), QualityFlags::NON_FINITE_PIXELS, "row {r}");
            assert!(
                f.peak_wavelength_nm.is_null(r)
                    && f.fwhm_ev.is_null(r)
                    && f.integrated_intensity_counts_nm.is_null(r)
            );
            assert!(f.peak_count.is_null(r));
        }
        assert_eq!(flags(&f, 4), QualityFlags::OK);
        assert!((f.peak_wavelength_nm.value(4) - (400.0 + 0.3 * 100.0)).abs() < 0.01);
    }
}

#[test]
fn null_pixels_inside_a_valid_spectrum_are_non_finite() {
    let n = 64;
    let mut vals: Vec<Option<f32>> = gauss(n, 30.0, 4.0).into_iter().map(Some).collect();
    vals[5] = None;
    let list = ListArray::from_iter_primitive::<Float32Type, _, _>(vec![
        Some(vals),
        Some(gauss(n, 30.0, 4.0).into_iter().map(Some).collect()),
    ]);
    let f = pl_features(&axis(n), &list, &PeakOptions::default()).unwrap();
    assert_eq!(flags(&f, 0), QualityFlags::NON_FINITE_PIXELS);
    assert_eq!(flags(&f, 1), QualityFlags::OK);
    // Preprocessing kernels turn a null pixel into NaN rather than inventing a value.
    let d = dark_subtract(&list, &vec![0.0; n]).unwrap();
    assert!(d
        .value(0)
        .as_any()
        .downcast_ref::<Float32Array>()
        .unwrap()
        .value(5)
        .is_nan());
}

#[test]
fn flat_tiny_and_degenerate_spectra() {
    // all zero, constant, one pixel, two pixels, three pixels with a peak
    let f = pl_features(
        &axis(100),
        &list_f32(&[vec![0.0; 100], vec![7.5; 100]]),
        &PeakOptions::default(),
    )
    .unwrap();
    for r in 0..2 {
        assert!(flags(&f, r).contains(QualityFlags::FLAT_SPECTRUM | QualityFlags::NO_PEAK));
        assert!(f.peak_wavelength_nm.is_null(r) && f.fwhm_nm.is_null(r));
        assert_eq!(f.peak_count.value(r), 0);
    }
    assert_eq!(f.integrated_intensity_counts_nm.value(0), 0.0);
    assert!(f.iqr_nm.is_null(0), "no positive emission, no quartiles");
    assert!((f.integrated_intensity_counts_nm.value(1) - 7.5 * 0.3 * 99.0).abs() < 1e-6 * 222.75);

    let one = pl_features(&[500.0], &list_f32(&[vec![3.0]]), &PeakOptions::default()).unwrap();
    assert!(flags(&one, 0).contains(QualityFlags::NO_PEAK));
    assert!(one.integrated_intensity_counts_nm.is_null(0) && one.iqr_nm.is_null(0));
    let two = pl_features(
        &[500.0, 501.0],
        &list_f32(&[vec![1.0, 3.0]]),
        &PeakOptions::default(),
    )
    .unwrap();
    assert!(flags(&two, 0).contains(QualityFlags::NO_PEAK));
    assert_eq!(two.integrated_intensity_counts_nm.value(0), 2.0);
    let three = pl_features(
        &[500.0, 501.0, 502.0],
        &list_f32(&[vec![1.0, 3.0, 1.0]]),
        &PeakOptions::default(),
    )
    .unwrap();
    assert_eq!(three.peak_wavelength_nm.value(0), 501.0);
    assert!(
        flags(&three, 0).contains(QualityFlags::PEAK_AT_EDGE),
        "index 1 of 3 is inside the 2-pixel margin"
    );

    // Absorbance kernels on the same degenerate inputs.
    let a = absorbance_features(
        &[500.0],
        &list_f32(&[vec![0.1]]),
        &AbsorbanceOptions::default(),
    )
    .unwrap();
    assert!(QualityFlags(a.quality_flags.value(0)).contains(QualityFlags::NO_PEAK));
    assert!(a.exciton_wavelength_nm.is_null(0));
}

#[test]
fn pure_noise_and_extreme_values_do_not_panic() {
    let mut rng = StdRng::seed_from_u64(3);
    let n = 2048;
    let rows: Vec<Vec<f32>> = vec![
        (0..n).map(|_| rng.random_range(-1.0..1.0)).collect(),
        (0..n)
            .map(|i| if i % 2 == 0 { f32::MAX } else { -f32::MAX })
            .collect(),
        (0..n)
            .map(|i| if i == 1000 { f32::MAX } else { 0.0 })
            .collect(),
        (0..n).map(|i| (i as f32) * 1e-38).collect(),
        (0..n).map(|_| -rng.random_range(0.0..1e6f32)).collect(),
    ];
    let f = pl_features(&axis(n), &list_f32(&rows), &PeakOptions::default()).unwrap();
    assert_eq!(f.len(), rows.len());
    // A single huge pixel: one peak, at that pixel, zero width crossing interpolated inside.
    assert!((f.peak_wavelength_nm.value(2) - (400.0 + 0.3 * 1000.0)).abs() < 0.2);
    assert!(f.fwhm_nm.value(2) > 0.0 && f.fwhm_nm.value(2) < 0.6);
    // +-f32::MAX alternation: the f64 integral does not overflow.
    assert!(f.integrated_intensity_counts_nm.value(1).is_finite());
    for r in 0..rows.len() {
        assert!(f.quality_flags.is_valid(r));
    }
    let a = absorbance_features(&axis(n), &list_f32(&rows), &AbsorbanceOptions::default()).unwrap();
    assert!(QualityFlags(a.quality_flags.value(4)).contains(QualityFlags::NEGATIVE_ABSORBANCE));
}

#[test]
fn a_million_pixels_noise_and_nested_peaks() {
    let n = 1_000_000;
    let ax = axis(n);
    let mut rng = StdRng::seed_from_u64(9);
    let noise: Vec<f32> = (0..n)
        .map(|i| {
            (1000.0 * (-0.5 * ((i as f64 - 654_321.0) / 3000.0).powi(2)).exp()) as f32
                + rng.random_range(0.0..5.0)
        })
        .collect();
    // Peaks of decreasing height toward both ends: the naive prominence walk is O(n^2) here.
    let nested: Vec<f32> = (0..n)
        .map(|i| {
            if i % 2 == 0 {
                2_000_000.0 - (i as f32 - 500_000.0).abs()
            } else {
                0.0
            }
        })
        .collect();
    let opts = PeakOptions {
        min_prominence: 1.0,
        min_relative_prominence: 0.0,
        ..Default::default()
    };
    let f = pl_features(&ax, &list_f32(&[noise, nested]), &opts).unwrap();
    assert!((f.peak_wavelength_nm.value(0) - (400.0 + 0.3 * 654_321.0)).abs() < 60.0 * 0.3);
    assert!(
        f.peak_count.value(1) > 400_000,
        "every spike is a prominent peak: {}",
        f.peak_count.value(1)
    );
    assert_eq!(f.secondary_peaks.value(1).len(), 4);
    // AsLS on a million pixels is linear too.
    let pre = Preprocessing {
        savgol: None,
        baseline: Baseline::Asls(AslsParams {
            max_iter: 3,
            ..Default::default()
        }),
    };
    let p = preprocess(&ax, &list_f32(&[gauss(n, 500_000.0, 2000.0)]), &pre).unwrap();
    assert_eq!(p.value_length(0) as usize, n);
}

#[test]
fn axis_and_length_errors() {
    let y = list_f32(&[gauss(5, 2.0, 1.0)]);
    let opts = PeakOptions::default();
    let unsorted = [400.0, 402.0, 401.0, 403.0, 404.0];
    assert!(matches!(
        pl_features(&unsorted, &y, &opts),
        Err(SpectralError::AxisNotMonotonic { index: 2 })
    ));
    assert!(matches!(
        pl_features(&[400.0, 400.0, 401.0, 402.0, 403.0], &y, &opts),
        Err(SpectralError::AxisNotMonotonic { .. })
    ));
    assert!(matches!(
        pl_features(&[], &y, &opts),
        Err(SpectralError::EmptyAxis)
    ));
    let nan_axis = [400.0, f64::NAN, 402.0, 403.0, 404.0];
    assert!(matches!(
        pl_features(&nan_axis, &y, &opts),
        Err(SpectralError::InvalidAxisValue { index: 1, .. })
    ));
    assert!(matches!(
        pl_features(&axis(6), &y, &opts),
        Err(SpectralError::LengthMismatch {
            row: 0,
            expected: 6,
            actual: 5
        })
    ));
    // A mismatch in any non-null row fails the batch; a null row does not count.
    let mixed = list_opt_f32(&[Some(gauss(5, 2.0, 1.0)), None, Some(gauss(4, 2.0, 1.0))]);
    assert!(matches!(
        pl_features(&axis(5), &mixed, &opts),
        Err(SpectralError::LengthMismatch { row: 2, .. })
    ));
    let ok = list_opt_f32(&[Some(gauss(5, 2.0, 1.0)), None]);
    assert!(pl_features(&axis(5), &ok, &opts).is_ok());
    assert!(matches!(
        absorbance_features(&axis(6), &y, &AbsorbanceOptions::default()),
        Err(SpectralError::LengthMismatch { .. })
    ));
    assert!(matches!(
        dark_subtract(&y, &[0.0; 3]),
        Err(SpectralError::LengthMismatch { .. })
    ));
    assert!(matches!(
        absorbance(&y, &[0.0; 5], &[1.0; 4]),
        Err(SpectralError::InputLength { .. })
    ));
}

#[test]
fn option_and_type_errors() {
    let n = 50;
    let y = list_f32(&[gauss(n, 25.0, 3.0)]);
    let ax = axis(n);
    let bad = [
        PeakOptions {
            min_prominence: 0.0,
            min_relative_prominence: 0.0,
            ..Default::default()
        },
        PeakOptions {
            min_prominence: f64::NAN,
            ..Default::default()
        },
        PeakOptions {
            min_relative_prominence: 1.5,
            ..Default::default()
        },
        PeakOptions {
            window_nm: Some((100.0, 200.0)),
            ..Default::default()
        },
        PeakOptions {
            preprocessing: Preprocessing {
                savgol: Some((4, 2)),
                ..Default::default()
            },
            ..Default::default()
        },
        PeakOptions {
            preprocessing: Preprocessing {
                savgol: Some((51, 2)),
                ..Default::default()
            },
            ..Default::default()
        },
        PeakOptions {
            preprocessing: Preprocessing {
                baseline: Baseline::Asls(AslsParams {
                    p: 0.0,
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        },
    ];
    for (k, o) in bad.iter().enumerate() {
        assert!(
            matches!(
                pl_features(&ax, &y, o),
                Err(SpectralError::InvalidOption { .. })
            ),
            "case {k}"
        );
    }
    let ints = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![Some(vec![Some(1); n])]);
    assert!(matches!(
        pl_features(&ax, &ints, &PeakOptions::default()),
        Err(SpectralError::UnsupportedType(_))
    ));
    let flat = Float32Array::from(vec![1.0f32; n]);
    assert!(matches!(
        pl_features(&ax, &flat, &PeakOptions::default()),
        Err(SpectralError::UnsupportedType(_))
    ));
    let outside = AbsorbanceOptions {
        excitation_nm: Some(300.0),
        ..Default::default()
    };
    assert!(matches!(
        absorbance_features(&ax, &y, &outside),
        Err(SpectralError::OutsideAxis { .. })
    ));
}

#[test]
fn sliced_large_and_fixed_size_lists_agree() {
    let n = 300;
    let rows: Vec<Option<Vec<f32>>> = (0..7)
        .map(|k| {
            if k == 3 {
                None
            } else {
                Some(gauss(n, 40.0 + 30.0 * k as f64, 4.0 + k as f64))
            }
        })
        .collect();
    let ax = axis(n);
    let opts = PeakOptions::default();
    let full = pl_features(&ax, &list_opt_f32(&rows), &opts)
        .unwrap()
        .into_record_batch()
        .unwrap();

    // Slicing the list walks the original offsets over the shared child buffer.
    let list = list_opt_f32(&rows);
    let sliced = list.slice(2, 4);
    let fs = pl_features(&ax, &sliced, &opts)
        .unwrap()
        .into_record_batch()
        .unwrap();
    assert_eq!(fs, full.slice(2, 4));

    // LargeList and FixedSizeList of the same data.
    let large = LargeListArray::from_iter_primitive::<Float32Type, _, _>(rows.iter().map(|r| {
        r.as_ref()
            .map(|r| r.iter().map(|&v| Some(v)).collect::<Vec<_>>())
    }));
    assert_eq!(
        pl_features(&ax, &large, &opts)
            .unwrap()
            .into_record_batch()
            .unwrap(),
        full
    );
    let flat: Vec<f32> = rows
        .iter()
        .flat_map(|r| r.clone().unwrap_or_else(|| vec![0.0; n]))
        .collect();
    let nulls =
        arrow_buffer::NullBuffer::from(rows.iter().map(Option::is_some).collect::<Vec<_>>());
    let fixed = FixedSizeListArray::new(
        Arc::new(Field::new_list_field(DataType::Float32, true)),
        n as i32,
        Arc::new(Float32Array::from(flat)),
        Some(nulls),
    );
    assert_eq!(
        pl_features(&ax, &fixed, &opts)
            .unwrap()
            .into_record_batch()
            .unwrap(),
        full
    );
    assert_eq!(
        pl_features(&ax, &fixed.slice(1, 5), &opts)
            .unwrap()
            .into_record_batch()
            .unwrap(),
        full.slice(1, 5)
    );

    // Row 3 is null everywhere, including flags and the secondary peak list.
    let f = pl_features(&ax, &list, &opts).unwrap();
    assert!(f.quality_flags.is_null(3) && f.secondary_peaks.is_null(3) && f.iqr_nm.is_null(3));
    assert!(f.quality_flags.is_valid(2));
}

#[test]
fn empty_and_all_null_batches() {
    let ax = axis(10);
    let empty = list_f32(&[]);
    let f = pl_features(&ax, &empty, &PeakOptions::default()).unwrap();
    assert_eq!(f.len(), 0);
    assert_eq!(f.into_record_batch().unwrap().num_rows(), 0);
    let all_null = list_opt_f32(&[None, None, None]);
    let f = pl_features(&ax, &all_null, &PeakOptions::default()).unwrap();
    assert_eq!(f.quality_flags.null_count(), 3);
    assert_eq!(f.peak_wavelength_nm.null_count(), 3);
    let a = absorbance_features(&ax, &all_null, &AbsorbanceOptions::default()).unwrap();
    assert_eq!(a.quality_flags.null_count(), 3);
    let rb = a.into_record_batch().unwrap();
    assert_eq!(rb.num_rows(), 3);
}

#[test]
fn absorbance_without_light_is_nan_and_flagged() {
    let n = 100;
    let ax = axis(n);
    // The reference lamp gives no light below pixel 20; the sample is fully absorbing at 90..
    let dark = vec![100.0; n];
    let reference: Vec<f64> = (0..n)
        .map(|i| if i < 20 { 100.0 } else { 10_100.0 })
        .collect();
    let sample: Vec<f32> = (0..n).map(|i| if i >= 90 { 90.0 } else { 100.0 + 10_000.0 * 0.5 } as f32).collect();
    let a = absorbance(&list_f32(&[sample]), &dark, &reference).unwrap();
    let v = a.value(0);
    let v = v.as_any().downcast_ref::<Float32Array>().unwrap();
    assert!(v.value(0).is_nan() && v.value(95).is_nan());
    assert!((v.value(50) as f64 - std::f64::consts::LOG10_2).abs() < 1e-5);
    let f = absorbance_features(&ax, &a, &AbsorbanceOptions::default()).unwrap();
    assert_eq!(
        QualityFlags(f.quality_flags.value(0)),
        QualityFlags::NON_FINITE_PIXELS
    );
    // Restricting the window to where light was measured gives a usable row.
    let opts = AbsorbanceOptions {
        window_nm: Some((ax[25], ax[85])),
        ..Default::default()
    };
    let f = absorbance_features(&ax, &a, &opts).unwrap();
    let fl = QualityFlags(f.quality_flags.value(0));
    assert!(
        fl.contains(QualityFlags::INNER_FILTER) && fl.contains(QualityFlags::FLAT_SPECTRUM),
        "{fl}"
    );
    assert!((f.max_absorbance.value(0) - std::f64::consts::LOG10_2).abs() < 1e-5);
}
