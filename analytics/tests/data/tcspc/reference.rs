//! Reader for the `key value value ...` reference files written by make_reference.py.
//!
//! Included by the tcspc integration tests with `#[path]`; kept beside the data it reads.
#![allow(dead_code)]

use std::path::PathBuf;

/// One `case NAME ... end` block (or a whole file without `case` lines).
#[derive(Debug, Default)]
pub struct Case {
    pub name: String,
    pub items: Vec<(String, Vec<String>)>,
}

impl Case {
    pub fn get(&self, key: &str) -> &[String] {
        self.items
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
            .unwrap_or_else(|| panic!("case {:?} has no {key:?}", self.name))
    }
    pub fn has(&self, key: &str) -> bool {
        self.items.iter().any(|(k, _)| k == key)
    }
    pub fn f64s(&self, key: &str) -> Vec<f64> {
        self.get(key)
            .iter()
            .map(|v| {
                v.parse::<f64>()
                    .unwrap_or_else(|e| panic!("{key}: {v}: {e}"))
            })
            .collect()
    }
    pub fn f64(&self, key: &str) -> f64 {
        self.f64s(key)[0]
    }
    pub fn i64s(&self, key: &str) -> Vec<i64> {
        self.get(key)
            .iter()
            .map(|v| {
                v.parse::<i64>()
                    .unwrap_or_else(|e| panic!("{key}: {v}: {e}"))
            })
            .collect()
    }
    pub fn i64(&self, key: &str) -> i64 {
        self.i64s(key)[0]
    }
    pub fn str(&self, key: &str) -> &str {
        &self.get(key)[0]
    }
}

/// Parses a reference file into its cases.
pub fn parse(text: &str) -> Vec<Case> {
    let mut cases = vec![Case::default()];
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let key = parts.next().unwrap_or_default().to_string();
        let values: Vec<String> = parts.map(str::to_string).collect();
        match key.as_str() {
            "case" => cases.push(Case {
                name: values.join(" "),
                items: Vec::new(),
            }),
            "end" => {}
            _ => cases.last_mut().expect("a case").items.push((key, values)),
        }
    }
    cases.retain(|c| !c.items.is_empty());
    cases
}

/// This folder (reference data checked into the repository).
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/tcspc")
}

/// The repository's copies of the real-instrument files (`connectors/tests/data/`, copied from
/// the shared reference data), so the checks run on a clean clone. Panics when a file is
/// missing: a real-file check that cannot find its file fails, it does not skip.
pub fn real_tcspc_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../connectors/tests/data");
    for file in ["hydraharp_t3_beads.ptu", "picoharp_t3_hazelnut_z1.ptu"] {
        assert!(
            dir.join(file).is_file(),
            "{} is missing: the real-file checks need the repository's copy",
            dir.join(file).display()
        );
    }
    dir
}
