//! The dense count against DataFusion's own hash aggregation, on the same rows: small and
//! wide key ranges, nulls, negative values, keys far outside the array, more distinct values
//! than the map holds, a memory pool too small for the array, and queries it must leave alone.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int32Array, Int64Array, RecordBatch, UInt8Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::datasource::MemTable;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};

use super::{DenseCount, DenseCountExec};

/// A context over `partitions` (each a list of batches), with or without the rule.
fn context(partitions: Vec<Vec<RecordBatch>>, dense: bool, memory_bytes: usize) -> SessionContext {
    // A small reservation for the final sort, so a small pool is left to the counts.
    let config = SessionConfig::new().with_target_partitions(2).set_usize(
        "datafusion.execution.sort_spill_reservation_bytes",
        64 << 10,
    );
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(memory_bytes, 1.0)
        .build_arc()
        .expect("runtime");
    let mut state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features();
    if dense {
        state = state.with_physical_optimizer_rule(Arc::new(DenseCount));
    }
    let context = SessionContext::new_with_state(state.build());
    let schema = partitions[0][0].schema();
    let table = MemTable::try_new(schema, partitions).expect("table");
    context
        .register_table("photons", Arc::new(table))
        .expect("register");
    context
}

/// Photons: micro times (nullable Int32), channels (UInt8), macro times (Int64).
fn batch(micro: Vec<Option<i32>>, macro_time: Vec<i64>) -> RecordBatch {
    let rows = micro.len();
    let schema = Arc::new(Schema::new(vec![
        Field::new("micro_time_ps", DataType::Int32, true),
        Field::new("channel", DataType::UInt8, false),
        Field::new("macro_time_ps", DataType::Int64, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from(micro)),
        Arc::new(UInt8Array::from_iter_values(
            (0..rows).map(|i| (i % 5) as u8),
        )),
        Arc::new(Int64Array::from(macro_time)),
    ];
    RecordBatch::try_new(schema, columns).expect("batch")
}

/// A deterministic stream of pseudo-random numbers.
fn lcg(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed;
    move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        state >> 11
    }
}

/// Two partitions of photons; micro times in [-300, 50_000) with some nulls and a few far
/// values; macro times all distinct and spread over the i64 range.
fn photons() -> Vec<Vec<RecordBatch>> {
    let mut next = lcg(7);
    let mut partitions = Vec::new();
    for _ in 0..2 {
        let mut batches = Vec::new();
        for _ in 0..12 {
            let micro: Vec<Option<i32>> = (0..8192)
                .map(|_| match next() % 1000 {
                    0..=9 => None,
                    10 => Some(2_000_000_000 - (next() % 100) as i32),
                    11 => Some(-2_000_000_000),
                    _ => Some((next() % 50_300) as i32 - 300),
                })
                .collect();
            let macro_time: Vec<i64> = (0..8192)
                .map(|_| next() as i64 * 1024 - (1 << 62))
                .collect();
            batches.push(batch(micro, macro_time));
        }
        partitions.push(batches);
    }
    partitions
}

async fn answer(context: &SessionContext, sql: &str) -> String {
    let batches = context
        .sql(sql)
        .await
        .expect("plan")
        .collect()
        .await
        .expect("run");
    pretty_format_batches(&batches).expect("format").to_string()
}

async fn plan(context: &SessionContext, sql: &str) -> String {
    answer(context, &format!("EXPLAIN {sql}")).await
}

/// The sum over partitions of one of the dense count's metrics, after running `sql`.
async fn metric(context: &SessionContext, sql: &str, name: &str) -> usize {
    let plan = context
        .sql(sql)
        .await
        .expect("plan")
        .create_physical_plan()
        .await
        .expect("physical plan");
    datafusion::physical_plan::collect(plan.clone(), context.task_ctx())
        .await
        .expect("run");
    let mut nodes = vec![plan];
    while let Some(node) = nodes.pop() {
        if node.downcast_ref::<DenseCountExec>().is_some() {
            let metrics = node.metrics().expect("metrics");
            return metrics.sum_by_name(name).map_or(0, |v| v.as_usize());
        }
        nodes.extend(node.children().into_iter().cloned());
    }
    panic!("no DenseCountExec in the plan of {sql}");
}

const LARGE: usize = 1 << 30;

/// Queries the dense count takes, each with a total order so answers compare as text.
const TAKEN: [&str; 8] = [
    "SELECT floor(micro_time_ps / 50) AS bin, count(*) AS n FROM photons GROUP BY bin ORDER BY bin",
    "SELECT micro_time_ps, count(*) AS n, count(micro_time_ps) AS m FROM photons GROUP BY micro_time_ps ORDER BY micro_time_ps NULLS FIRST",
    "SELECT channel, count(*) AS n FROM photons GROUP BY channel ORDER BY channel",
    "SELECT micro_time_ps % 7 AS r, count(1) AS n FROM photons GROUP BY r ORDER BY r NULLS FIRST",
    "SELECT abs(micro_time_ps) / 1000 AS k, count(micro_time_ps) AS n FROM photons GROUP BY k ORDER BY k NULLS FIRST",
    "SELECT macro_time_ps / 1024 AS k, count(*) AS n FROM photons GROUP BY k ORDER BY n DESC, k LIMIT 20",
    "SELECT CAST(micro_time_ps AS VARCHAR) AS s, count(*) AS n FROM photons GROUP BY s ORDER BY s NULLS FIRST",
    "SELECT count(*) AS groups, sum(n) AS rows FROM (SELECT macro_time_ps, count(*) AS n FROM photons GROUP BY macro_time_ps)",
];

#[tokio::test]
async fn counts_equal_hash_aggregation_and_the_rule_is_in_the_plan() {
    let plain = context(photons(), false, LARGE);
    let dense = context(photons(), true, LARGE);
    for sql in TAKEN {
        assert_eq!(
            answer(&dense, sql).await,
            answer(&plain, sql).await,
            "{sql}"
        );
        assert!(plan(&dense, sql).await.contains("DenseCountExec"), "{sql}");
    }
}

#[tokio::test]
async fn a_pool_too_small_for_the_array_gives_the_same_counts() {
    // 901 distinct micro times spread over 900,000 values: the array would take 7.2 MB.
    let spread = || {
        let mut next = lcg(11);
        (0..2)
            .map(|_| {
                (0..4)
                    .map(|_| {
                        let micro = (0..8192)
                            .map(|_| Some((next() % 901) as i32 * 1000))
                            .collect();
                        batch(micro, vec![0; 8192])
                    })
                    .collect()
            })
            .collect::<Vec<Vec<RecordBatch>>>()
    };
    let plain = context(spread(), false, LARGE);
    let dense = context(spread(), true, 5 << 20);
    for sql in &TAKEN[..2] {
        assert_eq!(
            answer(&dense, sql).await,
            answer(&plain, sql).await,
            "{sql}"
        );
        assert_eq!(metric(&dense, sql, "array_slots").await, 0, "{sql}");
        assert!(metric(&dense, sql, "map_values").await > 900, "{sql}");
    }
    let roomy = context(spread(), true, LARGE);
    assert_eq!(metric(&roomy, TAKEN[1], "array_slots").await, 2 * 900_001);
}

#[tokio::test]
async fn the_array_holds_the_bulk_and_the_rest_is_mapped_or_passed_through() {
    let dense = context(photons(), true, LARGE);
    // Micro times: the array spans the bulk (nearly all of [-300, 50,000) in each of the two
    // partitions), the far values sit in the map.
    let slots = metric(&dense, TAKEN[1], "array_slots").await;
    assert!((2 * 45_000..=2 * 50_300).contains(&slots), "{slots}");
    assert!(metric(&dense, TAKEN[1], "map_values").await >= 2);
    assert_eq!(metric(&dense, TAKEN[1], "rows_passed_through").await, 0);
    // Macro times: all distinct over the whole range. The map is full after the 9th batch of
    // 8,192 (73,728 > 65,536 values), so the last 3 batches of each partition pass through.
    let passed = metric(&dense, TAKEN[5], "rows_passed_through").await;
    assert_eq!(passed, 2 * 3 * 8192);
}

#[tokio::test]
async fn queries_it_cannot_count_are_left_to_datafusion() {
    let dense = context(photons(), true, LARGE);
    for sql in [
        "SELECT channel, sum(micro_time_ps) FROM photons GROUP BY channel",
        "SELECT channel, count(DISTINCT micro_time_ps) FROM photons GROUP BY channel",
        "SELECT channel, count(micro_time_ps) FROM photons GROUP BY channel",
        "SELECT channel, micro_time_ps, count(*) FROM photons GROUP BY channel, micro_time_ps",
        "SELECT micro_time_ps + channel, count(*) FROM photons GROUP BY 1",
        "SELECT channel, count(*) FILTER (WHERE micro_time_ps > 0) FROM photons GROUP BY channel",
        "SELECT micro_time_ps + CAST(random() * 2 AS INT), count(*) FROM photons GROUP BY 1",
    ] {
        assert!(!plan(&dense, sql).await.contains("DenseCountExec"), "{sql}");
    }
}

#[tokio::test]
async fn an_empty_or_all_null_input_gives_the_same_answer() {
    let nulls = vec![vec![batch(vec![None; 100], vec![0; 100])]];
    let empty = vec![vec![batch(Vec::new(), Vec::new())]];
    for partitions in [nulls, empty] {
        let plain = context(partitions.clone(), false, LARGE);
        let dense = context(partitions, true, LARGE);
        let sql = TAKEN[1];
        assert_eq!(answer(&dense, sql).await, answer(&plain, sql).await);
    }
}
