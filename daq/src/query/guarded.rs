//! Functions whose output size the caller chooses, bounded before they allocate.
//!
//! `repeat('x', 2e9)`, `lpad('', 1e9)` or `array_repeat(1, 1e9)` build one enormous value in a
//! single allocation that no memory pool sees, so a one-line query could take gigabytes before
//! any limit noticed. These functions are registered over DataFusion's own under the same
//! names: each checks, from its arguments, how many bytes one call would produce and refuses
//! more than [`MAX_FUNCTION_OUTPUT_BYTES`] with an error, then lets the original run.

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::{exec_err, plan_err, Result, ScalarValue};
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature,
};

/// Bytes one call of a guarded function (one batch of rows) may produce.
pub const MAX_FUNCTION_OUTPUT_BYTES: u64 = 64 << 20;

/// How a guarded function's output size follows from its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Growth {
    /// `repeat(text, n)`: each row's text length times its `n`.
    Repeat,
    /// `lpad`/`rpad(text, n, ...)`: `n` characters per row, up to 4 bytes each.
    Pad,
    /// `array_repeat(element, n)`: each row's element size times its `n`.
    ArrayRepeat,
}

/// A DataFusion function with a bound on its output.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Guarded {
    inner: ScalarUDF,
    growth: Growth,
}

/// Registers the guarded functions over DataFusion's in `context`.
pub fn register(context: &SessionContext) -> Result<()> {
    for (name, growth) in [
        ("repeat", Growth::Repeat),
        ("lpad", Growth::Pad),
        ("rpad", Growth::Pad),
        ("array_repeat", Growth::ArrayRepeat),
    ] {
        let Some(inner) = context.state().scalar_functions().get(name).cloned() else {
            return plan_err!("function {name} is not registered: cannot guard it");
        };
        let inner = ScalarUDF::clone(&inner);
        context.register_udf(ScalarUDF::new_from_impl(Guarded { inner, growth }));
    }
    Ok(())
}

/// Per-row values of an integer argument (a scalar counts for every row); nulls count as 0.
fn counts(value: &ColumnarValue, rows: usize) -> Result<Vec<u64>> {
    let clamp = |v: Option<i64>| v.map_or(0, |v| v.max(0) as u64);
    match value {
        ColumnarValue::Scalar(scalar) => {
            let n = match scalar.cast_to(&DataType::Int64)? {
                ScalarValue::Int64(v) => clamp(v),
                _ => 0,
            };
            Ok(vec![n; rows])
        }
        ColumnarValue::Array(array) => {
            let array = datafusion::arrow::compute::cast(array, &DataType::Int64)?;
            Ok(array
                .as_primitive::<Int64Type>()
                .iter()
                .map(clamp)
                .collect())
        }
    }
}

/// Per-row byte sizes of the first argument.
fn sizes(value: &ColumnarValue, rows: usize) -> Result<Vec<u64>> {
    let array: ArrayRef = value.to_array(rows)?;
    if let Some(lengths) = text_lengths(&array)? {
        return Ok(lengths);
    }
    // Lists and other values: their share of the array's memory, at least one word each.
    let per_row = (array.get_array_memory_size() / array.len().max(1)).max(8) as u64;
    Ok(vec![per_row; array.len()])
}

fn text_lengths(array: &ArrayRef) -> Result<Option<Vec<u64>>> {
    if !matches!(
        array.data_type(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    ) {
        return Ok(None);
    }
    let lengths = datafusion::arrow::compute::kernels::length::length(array)?;
    let lengths = datafusion::arrow::compute::cast(&lengths, &DataType::Int64)?;
    Ok(Some(
        lengths
            .as_primitive::<Int64Type>()
            .iter()
            .map(|v| v.map_or(0, |v| v.max(0) as u64))
            .collect(),
    ))
}

impl Guarded {
    /// Bytes this call would produce.
    fn output_bytes(&self, args: &ScalarFunctionArgs) -> Result<u64> {
        let rows = args.number_rows;
        let Some(count) = args.args.get(1) else {
            return Ok(0);
        };
        let counts = counts(count, rows)?;
        let total = match self.growth {
            Growth::Pad => counts
                .iter()
                .fold(0u64, |sum, n| sum.saturating_add(n.saturating_mul(4))),
            Growth::Repeat | Growth::ArrayRepeat => {
                let sizes = sizes(&args.args[0], rows)?;
                sizes.iter().zip(&counts).fold(0u64, |sum, (size, n)| {
                    sum.saturating_add(size.saturating_mul(*n))
                })
            }
        };
        Ok(total)
    }
}

impl ScalarUDFImpl for Guarded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let bytes = self.output_bytes(&args)?;
        if bytes > MAX_FUNCTION_OUTPUT_BYTES {
            return exec_err!(
                "{}() would build {bytes} bytes at once; at most {MAX_FUNCTION_OUTPUT_BYTES} are allowed per call",
                self.name()
            );
        }
        self.inner.invoke_with_args(args)
    }
}
