//! flowdaq's Arrow schemas as Delta Lake schemas.
//!
//! Delta has no unsigned integers and its `timestamp` counts microseconds, while flowdaq's
//! Parquet files hold `UInt8`/`UInt32`/`UInt64` columns and nanosecond timestamps. The files
//! stay as they are; the Delta schema declares the type every reader can read them as without
//! loss: `UInt8` and `UInt32` as the next wider signed integer, `UInt64` as `decimal(20,0)`
//! (calibration ids are 64-bit hashes, above `long`'s range half the time), and a nanosecond
//! timestamp as a `long` of nanoseconds since the Unix epoch, UTC, which the column's name
//! (`arrival_time_ns`) and comment say. Declared as `timestamp`, pyarrow (and the Python
//! `deltalake` reader built on it) refuses to truncate nanoseconds to microseconds; declared as
//! `long`, it refuses a `UInt64` value above 2^63.

use arrow::datatypes::{DataType as ArrowType, Field, Fields, Schema, TimeUnit};
use deltalake_core::kernel::{ArrayType, DataType, StructField, StructType};

/// Partition columns of every flowdaq Delta table, from the Hive directories of the files
/// (`date=YYYY-MM-DD/run=<run id>`); they are not stored in the files.
pub const PARTITION_COLUMNS: [&str; 2] = ["date", "run"];

/// Why a schema has no Delta form.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// A column of a type Delta cannot hold.
    #[error("column {column}: type {data_type} has no Delta Lake type")]
    Unsupported {
        /// The column.
        column: String,
        /// Its Arrow type.
        data_type: String,
    },
    /// A column named like a partition column.
    #[error("column {0} collides with a partition column")]
    PartitionCollision(String),
    /// The kernel refused the schema.
    #[error("invalid Delta schema: {0}")]
    Invalid(String),
}

/// The Delta columns of a table with Arrow `schema`: its columns, then the partition columns.
///
/// # Errors
/// [`SchemaError`] if a column has no Delta type or takes a partition column's name.
pub fn delta_columns(schema: &Schema) -> Result<Vec<StructField>, SchemaError> {
    let mut columns = Vec::with_capacity(schema.fields().len() + PARTITION_COLUMNS.len());
    for field in schema.fields() {
        if PARTITION_COLUMNS.contains(&field.name().as_str()) {
            return Err(SchemaError::PartitionCollision(field.name().clone()));
        }
        columns.push(delta_field(field)?);
    }
    for partition in PARTITION_COLUMNS {
        columns.push(StructField::new(partition, DataType::STRING, true));
    }
    Ok(columns)
}

/// The Delta schema of a table with Arrow `schema`, partition columns included.
///
/// # Errors
/// As [`delta_columns`].
pub fn delta_schema(schema: &Schema) -> Result<StructType, SchemaError> {
    StructType::try_new(delta_columns(schema)?).map_err(|e| SchemaError::Invalid(e.to_string()))
}

fn delta_field(field: &Field) -> Result<StructField, SchemaError> {
    let data_type = delta_type(field.name(), field.data_type())?;
    let delta = StructField::new(field.name().clone(), data_type, field.is_nullable());
    Ok(match field.data_type() {
        ArrowType::Timestamp(TimeUnit::Nanosecond, _) => {
            delta.with_metadata([("comment", "nanoseconds since the Unix epoch, UTC")])
        }
        _ => delta,
    })
}

fn delta_struct(column: &str, fields: &Fields) -> Result<StructType, SchemaError> {
    let fields = fields
        .iter()
        .map(|field| delta_field(field))
        .collect::<Result<Vec<_>, _>>()?;
    StructType::try_new(fields).map_err(|e| SchemaError::Invalid(format!("{column}: {e}")))
}

fn delta_type(column: &str, data_type: &ArrowType) -> Result<DataType, SchemaError> {
    Ok(match data_type {
        ArrowType::Boolean => DataType::BOOLEAN,
        ArrowType::Int8 => DataType::BYTE,
        ArrowType::Int16 | ArrowType::UInt8 => DataType::SHORT,
        ArrowType::Int32 | ArrowType::UInt16 => DataType::INTEGER,
        ArrowType::Int64 | ArrowType::UInt32 => DataType::LONG,
        ArrowType::UInt64 => {
            DataType::decimal(20, 0).map_err(|e| SchemaError::Invalid(e.to_string()))?
        }
        ArrowType::Timestamp(TimeUnit::Nanosecond, _) => DataType::LONG,
        ArrowType::Float32 => DataType::FLOAT,
        ArrowType::Float64 => DataType::DOUBLE,
        ArrowType::Utf8 | ArrowType::LargeUtf8 | ArrowType::Utf8View => DataType::STRING,
        ArrowType::Binary | ArrowType::LargeBinary | ArrowType::BinaryView => DataType::BINARY,
        ArrowType::List(item) | ArrowType::LargeList(item) => {
            ArrayType::new(delta_type(column, item.data_type())?, item.is_nullable()).into()
        }
        ArrowType::Struct(fields) => delta_struct(column, fields)?.into(),
        other => {
            return Err(SchemaError::Unsupported {
                column: column.to_string(),
                data_type: other.to_string(),
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowdaq_schemas::tables::Table;

    #[test]
    fn every_table_has_a_delta_schema_with_its_columns_then_the_partitions() {
        for table in Table::ALL {
            let arrow = table.schema();
            let delta = delta_schema(&arrow).unwrap_or_else(|e| panic!("{}: {e}", table.name()));
            let names: Vec<&str> = delta.fields().map(|f| f.name().as_str()).collect();
            let mut expected: Vec<&str> =
                arrow.fields().iter().map(|f| f.name().as_str()).collect();
            expected.extend(PARTITION_COLUMNS);
            assert_eq!(names, expected, "{}", table.name());
        }
    }

    #[test]
    fn unsigned_and_nanosecond_columns_widen_without_loss() {
        let arrow = Schema::new(vec![
            Field::new("channel", ArrowType::UInt8, false),
            Field::new("photon_count", ArrowType::UInt32, false),
            Field::new("seq", ArrowType::UInt64, false),
            Field::new(
                "arrival_time_ns",
                ArrowType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                true,
            ),
            Field::new(
                "counts",
                ArrowType::List(std::sync::Arc::new(Field::new(
                    "item",
                    ArrowType::UInt32,
                    false,
                ))),
                true,
            ),
        ]);
        let delta = delta_schema(&arrow).expect("schema");
        let types: Vec<String> = delta
            .fields()
            .map(|f| serde_json::to_string(f.data_type()).expect("json"))
            .collect();
        assert_eq!(
            types,
            [
                "\"short\"",
                "\"long\"",
                "\"decimal(20,0)\"",
                "\"long\"",
                "{\"type\":\"array\",\"elementType\":\"long\",\"containsNull\":false}",
                "\"string\"",
                "\"string\"",
            ]
        );
        let time = delta.field("arrival_time_ns").expect("time column");
        assert!(time.is_nullable());
        assert!(serde_json::to_string(time)
            .expect("json")
            .contains("nanoseconds since the Unix epoch"));
    }

    #[test]
    fn a_partition_name_or_an_unknown_type_is_refused() {
        let colliding = Schema::new(vec![Field::new("date", ArrowType::Utf8, false)]);
        assert!(matches!(
            delta_schema(&colliding),
            Err(SchemaError::PartitionCollision(name)) if name == "date"
        ));
        let interval = Schema::new(vec![Field::new(
            "gap",
            ArrowType::Duration(TimeUnit::Second),
            false,
        )]);
        let err = delta_schema(&interval).expect_err("no Delta duration");
        assert!(err.to_string().contains("gap"), "{err}");
    }
}
