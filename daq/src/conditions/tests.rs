use arrow::array::{Array, AsArray};
use serde_json::json;

use super::*;

fn registration(condition: &str) -> Registration {
    Registration::from_json(&json!({
        "op": "register_condition",
        "run_id": "run-1",
        "condition_id": condition,
        "parameters": {"temperature": {"value": 140, "unit": "degC"}, "br_to_pb_ratio": 2.5},
        "start_time_ns": 1_000,
    }))
    .expect("valid")
}

#[test]
fn parameters_accept_bare_numbers_and_value_unit_pairs_sorted_by_name() {
    let r = registration("c-1");
    assert_eq!(r.registered_by, "client");
    assert_eq!(r.start_time_ns, Some(1_000));
    assert_eq!(
        r.parameters,
        vec![
            Parameter {
                name: "br_to_pb_ratio".into(),
                value: 2.5,
                unit: None
            },
            Parameter {
                name: "temperature".into(),
                value: 140.0,
                unit: Some("degC".into())
            },
        ]
    );
}

#[test]
fn bad_registrations_name_their_problem() {
    let cases = [
        (json!({"condition_id": "c"}), "run_id is required"),
        (
            json!({"run_id": "r", "condition_id": ""}),
            "condition_id must be 1-128",
        ),
        (
            json!({"run_id": 3, "condition_id": "c"}),
            "run_id must be a string",
        ),
        (
            json!({"run_id": "r", "condition_id": "c", "parameters": {"t": "hot"}}),
            "parameter \"t\" must be a finite number",
        ),
        (
            json!({"run_id": "r", "condition_id": "c", "parameters": {"t": {"value": 1, "units": "K"}}}),
            "unknown key \"units\"",
        ),
        (
            json!({"run_id": "r", "condition_id": "c", "start_time_ns": -5}),
            "start_time_ns must be a positive integer",
        ),
        (json!([1, 2]), "must be a JSON object"),
    ];
    for (request, expected) in cases {
        let err = Registration::from_json(&request).expect_err("refused");
        assert!(err.to_string().contains(expected), "{err} vs {expected}");
    }
}

#[test]
fn a_condition_is_registered_once_and_becomes_current_in_its_run() {
    let mut conditions = Conditions::default();
    let times = ConditionTimes {
        start_time_ns: 1,
        registered_at_ns: 2,
    };
    let first = registration("c-1");
    conditions.check(&first).expect("new");
    assert_eq!(conditions.apply("run-1", "c-1", times), None);
    assert!(matches!(
        conditions.check(&first),
        Err(ConditionError::Duplicate { .. })
    ));
    assert_eq!(conditions.apply("run-1", "c-2", times), Some("c-1".into()));
    assert_eq!(conditions.current("run-1"), Some("c-2"));
    assert_eq!(conditions.current("run-2"), None);
    assert_eq!(conditions.times("run-1", "c-1"), Some(times));
}

#[test]
fn tagging_fills_the_condition_column_of_every_table_of_a_message() {
    let mut conditions = Conditions::default();
    let batch = condition_batch(&registration("c-1"), 5, 7).expect("row");
    // Any batch with a condition_id column is tagged; use the conditions row itself.
    let mut message = vec![(Table::Conditions, batch)];
    conditions
        .tag("run-1", &mut message)
        .expect("no current: unchanged");
    assert_eq!(
        message[0]
            .1
            .column_by_name("condition_id")
            .map(|c| c.as_string::<i32>().value(0).to_string()),
        Some("c-1".to_string())
    );
    conditions.apply(
        "run-1",
        "c-9",
        ConditionTimes {
            start_time_ns: 1,
            registered_at_ns: 1,
        },
    );
    conditions.tag("run-1", &mut message).expect("tagged");
    let tagged = message[0].1.column_by_name("condition_id").expect("column");
    assert_eq!(tagged.as_string::<i32>().value(0), "c-9");
    assert_eq!(tagged.null_count(), 0);
}

#[test]
fn the_row_carries_parameters_as_list_and_json() {
    let batch = condition_batch(&registration("c-1"), 5, 7).expect("row");
    assert_eq!(batch.schema(), Table::Conditions.unsequenced_schema());
    let json_text = batch
        .column_by_name("parameters_json")
        .expect("json")
        .as_string::<i32>()
        .value(0)
        .to_string();
    let parsed: serde_json::Value = serde_json::from_str(&json_text).expect("json");
    assert_eq!(parsed["temperature"]["unit"], "degC");
    assert_eq!(parsed["br_to_pb_ratio"]["value"], 2.5);
    let list = batch
        .column_by_name("parameters")
        .expect("list")
        .as_list::<i32>();
    assert_eq!(list.value(0).len(), 2);
}
