//! `lifetime_model_counts(...)`: the curve a lifetime fit drew, in SQL.
//!
//! A `lifetime_features` row keeps a fit's parameters, not its curve; a plot of a decay with its
//! fit and residuals needs the model's counts in every bin. This function rebuilds them with
//! the same fitter the pipeline used (IRF, period, convolution), so `flowdaq plot`, the
//! dashboard and a notebook draw the curve the server fitted, not an approximation of it:
//!
//! ```sql
//! SELECT h.counts, lifetime_model_counts(h.counts, h.irf_counts, h.bin_width_ps,
//!     h.sync_rate_hz, f.components, f.tau_1_ns, f.tau_2_ns, f.tau_3_ns,
//!     f.amplitude_1_counts, f.amplitude_2_counts, f.amplitude_3_counts,
//!     f.background_counts, f.shift_ns, f.irf_fwhm_ps) AS model_counts
//! FROM tcspc_histograms h JOIN lifetime_features f USING (source, run_id, seq, channel, window_start_ps)
//! ```
//!
//! `irf_fwhm_ps` set: a Gaussian IRF of that width; null with `irf_counts` set: the measured
//! IRF. A row whose curve cannot be drawn (no fit, no IRF, a parameter out of range) gives
//! null, not an error.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Builder, ListBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type};
use datafusion::common::{plan_err, Result};
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use flowdaq_analytics::tcspc::fit::{
    DecayParameters, FitConfig, FitStatistic, Irf, LifetimeFitter,
};

/// The function's name in SQL.
pub const NAME: &str = "lifetime_model_counts";

/// The arguments, in order.
const ARGUMENTS: [&str; 14] = [
    "counts",
    "irf_counts",
    "bin_width_ps",
    "sync_rate_hz",
    "components",
    "tau_1_ns",
    "tau_2_ns",
    "tau_3_ns",
    "amplitude_1_counts",
    "amplitude_2_counts",
    "amplitude_3_counts",
    "background_counts",
    "shift_ns",
    "irf_fwhm_ps",
];

/// Histograms longer than this are not drawn (null): the longest a TCSPC card bins.
const MAX_BINS: usize = 1 << 16;

#[derive(Debug, PartialEq, Eq, Hash)]
struct LifetimeModelCounts {
    signature: Signature,
}

/// Registers `lifetime_model_counts` in `context`.
pub fn register(context: &SessionContext) {
    context.register_udf(ScalarUDF::new_from_impl(LifetimeModelCounts {
        signature: Signature::user_defined(Volatility::Immutable),
    }));
}

fn float_list() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Float64, true)))
}

impl ScalarUDFImpl for LifetimeModelCounts {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(float_list())
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.len() != ARGUMENTS.len() {
            return plan_err!(
                "{NAME}() takes {} arguments: {}",
                ARGUMENTS.len(),
                ARGUMENTS.join(", ")
            );
        }
        arg_types
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let list = i < 2;
                match t {
                    DataType::Null => Ok(if list {
                        float_list()
                    } else {
                        DataType::Float64
                    }),
                    DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..)
                        if list =>
                    {
                        Ok(float_list())
                    }
                    t if !list && t.is_numeric() => Ok(DataType::Float64),
                    t => plan_err!(
                        "{NAME}(): argument {} ({}) must be {}, not {t}",
                        i + 1,
                        ARGUMENTS[i],
                        if list {
                            "a list of numbers"
                        } else {
                            "a number"
                        }
                    ),
                }
            })
            .collect()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let lists: Vec<_> = arrays[..2].iter().map(|a| a.as_list::<i32>()).collect();
        let numbers: Vec<_> = arrays[2..]
            .iter()
            .map(|a| a.as_primitive::<Float64Type>())
            .collect();
        let mut out = ListBuilder::new(Float64Builder::new());
        for row in 0..rows {
            let number = |i: usize| {
                let column = numbers[i - 2];
                (column.is_valid(row)).then(|| column.value(row))
            };
            let list = |i: usize| -> Option<Vec<f64>> {
                let column = lists[i];
                column.is_valid(row).then(|| {
                    let values = column.value(row);
                    let values = values.as_primitive::<Float64Type>();
                    values.iter().map(|v| v.unwrap_or(0.0)).collect()
                })
            };
            match model_row(list(0), list(1), number) {
                Some(model) => {
                    out.values().append_slice(&model);
                    out.append(true);
                }
                None => out.append(false),
            }
        }
        let array: ArrayRef = Arc::new(out.finish());
        Ok(ColumnarValue::Array(array))
    }
}

/// One row's model counts, or `None` when the row cannot be drawn.
fn model_row(
    counts: Option<Vec<f64>>,
    irf_counts: Option<Vec<f64>>,
    number: impl Fn(usize) -> Option<f64>,
) -> Option<Vec<f64>> {
    let n_bins = counts?.len();
    let bin_width_ns = number(2)? * 1e-3;
    let components = number(4)?;
    if n_bins == 0 || n_bins > MAX_BINS || bin_width_ns.is_nan() || bin_width_ns <= 0.0 {
        return None;
    }
    if !(1.0..=3.0).contains(&components) || components.fract() != 0.0 {
        return None;
    }
    let components = components as usize;
    let parameters = DecayParameters {
        tau_ns: (0..components)
            .map(|i| number(5 + i))
            .collect::<Option<_>>()?,
        amplitude_counts: (0..components)
            .map(|i| number(8 + i))
            .collect::<Option<_>>()?,
        background_counts: number(11).unwrap_or(0.0),
        shift_ns: number(12).unwrap_or(0.0),
    };
    let irf = match (number(13), irf_counts) {
        (Some(fwhm_ps), _) => Irf::Gaussian {
            fwhm_ns: fwhm_ps * 1e-3,
            center_ns: None,
        },
        (None, Some(measured)) if measured.len() == n_bins => Irf::Measured(measured),
        _ => return None,
    };
    let mut config = FitConfig::new(components, FitStatistic::PoissonMle, bin_width_ns);
    config.period_ns = number(3).filter(|hz| *hz > 0.0).map(|hz| 1e9 / hz);
    let mut fitter = LifetimeFitter::new(config, irf, n_bins).ok()?;
    let model = fitter.model_counts(&parameters).ok()?;
    model.iter().all(|v| v.is_finite()).then_some(model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowdaq_analytics::tcspc::fit::fit_decay;

    /// A mono-exponential decay (tau 2 ns, 100 ps bins, 12.5 ns period) convolved with a
    /// Gaussian IRF of 150 ps, with a flat background: the fitter's own model at known
    /// parameters.
    fn truth(fwhm_ps: f64) -> (Vec<f64>, DecayParameters) {
        let parameters = DecayParameters {
            tau_ns: vec![2.0],
            amplitude_counts: vec![5_000.0],
            background_counts: 3.0,
            shift_ns: 1.5,
        };
        let mut config = FitConfig::new(1, FitStatistic::PoissonMle, 0.1);
        config.period_ns = Some(1e9 / 80e6);
        let irf = Irf::Gaussian {
            fwhm_ns: fwhm_ps * 1e-3,
            center_ns: None,
        };
        let mut fitter = LifetimeFitter::new(config, irf, 125).expect("fitter");
        let counts = fitter.model_counts(&parameters).expect("model");
        (counts, parameters)
    }

    async fn query_model(sql: &str) -> Vec<Option<Vec<f64>>> {
        let context = SessionContext::new();
        register(&context);
        let batches = context
            .sql(sql)
            .await
            .expect("plan")
            .collect()
            .await
            .expect("run");
        let mut out = Vec::new();
        for batch in batches {
            let list = batch.column(0).as_list::<i32>();
            for row in 0..list.len() {
                out.push(list.is_valid(row).then(|| {
                    list.value(row)
                        .as_primitive::<Float64Type>()
                        .values()
                        .to_vec()
                }));
            }
        }
        out
    }

    fn literal(values: &[f64]) -> String {
        let items: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
        format!("make_array({})", items.join(", "))
    }

    #[tokio::test]
    async fn sql_gives_the_curve_of_a_fit_and_null_where_none_can_be_drawn() {
        let (counts, truth) = truth(150.0);
        let fitted = fit_decay(
            &counts,
            &Irf::Gaussian {
                fwhm_ns: 0.15,
                center_ns: None,
            },
            &{
                let mut config = FitConfig::new(1, FitStatistic::PoissonMle, 0.1);
                config.period_ns = Some(1e9 / 80e6);
                config
            },
        )
        .expect("fit");
        assert!((fitted.tau_ns[0] - truth.tau_ns[0]).abs() < 1e-3);
        let call = |counts: &str, irf: &str, components: &str, fwhm: &str| {
            format!(
                "SELECT {NAME}({counts}, {irf}, 100, 80000000, {components}, {}, NULL, NULL, \
                 {}, NULL, NULL, {}, {}, {fwhm})",
                fitted.tau_ns[0],
                fitted.amplitude_counts[0],
                fitted.background_counts,
                fitted.shift_ns
            )
        };
        let list = literal(&counts);
        let rows = query_model(&call(&list, "NULL", "1", "150")).await;
        let model = rows[0].as_ref().expect("a curve");
        assert_eq!(model.len(), counts.len());
        let worst = counts
            .iter()
            .zip(model)
            .map(|(a, b)| (a - b).abs() / a.max(1.0))
            .fold(0.0, f64::max);
        assert!(worst < 1e-3, "the curve differs from the data by {worst}");
        // No fit, an impossible component count, no IRF at all: null, not an error.
        for (components, fwhm) in [("NULL", "150"), ("4", "150"), ("1", "NULL")] {
            let rows = query_model(&call(&list, "NULL", components, fwhm)).await;
            assert_eq!(rows, vec![None], "components {components}, fwhm {fwhm}");
        }
        // A measured IRF (the Gaussian itself, binned) stands in when no FWHM is given.
        let mut irf = vec![0.0; counts.len()];
        for (bin, value) in irf.iter_mut().enumerate() {
            let t = (bin as f64 + 0.5) * 0.1 - 1.5;
            let sigma = 0.15 / flowdaq_analytics::tcspc::fit::GAUSSIAN_FWHM_PER_SIGMA;
            *value = (-0.5 * (t / sigma).powi(2)).exp();
        }
        let rows = query_model(&call(&list, &literal(&irf), "1", "NULL")).await;
        let measured = rows[0].as_ref().expect("a curve from the measured IRF");
        let mut config = FitConfig::new(1, FitStatistic::PoissonMle, 0.1);
        config.period_ns = Some(1e9 / 80e6);
        let mut fitter =
            LifetimeFitter::new(config, Irf::Measured(irf), counts.len()).expect("fitter");
        let expected = fitter.model_counts(&fitted.parameters()).expect("model");
        assert_eq!(measured, &expected);
    }

    #[tokio::test]
    async fn a_wrong_argument_count_or_type_is_a_plan_error_that_names_the_arguments() {
        let context = SessionContext::new();
        register(&context);
        let err = context
            .sql(&format!("SELECT {NAME}(1, 2)"))
            .await
            .expect_err("two arguments");
        assert!(err.to_string().contains("irf_fwhm_ps"), "{err}");
        let err = context
            .sql(&format!(
                "SELECT {NAME}('x', NULL, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1)"
            ))
            .await
            .expect_err("text counts");
        assert!(err.to_string().contains("a list of numbers"), "{err}");
    }
}
