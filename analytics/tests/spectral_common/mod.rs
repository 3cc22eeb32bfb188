//! Helpers shared by the spectral integration tests: reading the reference files in
//! `tests/data/` (written by `tests/data/make_reference.py`) and building Arrow batches.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::types::{Float32Type, Float64Type};
use arrow_array::{Float32Array, ListArray};
use arrow_buffer::OffsetBuffer;
use arrow_schema::{DataType, Field};

pub fn data_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("data")
        .join(name)
}

/// Lines of a CSV file split on commas.
pub fn csv(name: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(data_path(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect()
}

pub fn f(s: &str) -> f64 {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// The named row of `reference_spectra.csv` as f64 values.
pub fn reference_row(name: &str) -> Vec<f64> {
    let rows = csv("reference_spectra.csv");
    let row = rows
        .iter()
        .find(|r| r[0] == name)
        .unwrap_or_else(|| panic!("no spectrum {name}"));
    row[1..].iter().map(|s| f(s)).collect()
}

/// (wavelength_nm, counts) of the Ocean Optics OOIBase32 `.scope` export.
pub fn read_scope() -> (Vec<f64>, Vec<f64>) {
    let text = std::fs::read_to_string(data_path("ocean_optics_usb2000_tsunami.scope")).unwrap();
    let mut on = false;
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for line in text.lines() {
        if line.starts_with(">>>>>Begin") {
            on = true;
            continue;
        }
        if line.starts_with(">>>>>End") {
            break;
        }
        if on {
            let mut it = line.split_whitespace();
            x.push(f(it.next().unwrap()));
            y.push(f(it.next().unwrap()));
        }
    }
    (x, y)
}

/// (wavelength_nm, absorbance) of the JASCO V-570 text export (header, then `XYDATA`).
pub fn read_jasco() -> (Vec<f64>, Vec<f64>) {
    let text = std::fs::read_to_string(data_path("jasco_v570_pbse_qd_absorbance.txt")).unwrap();
    let mut on = false;
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for line in text.lines() {
        if line.trim() == "XYDATA" {
            on = true;
            continue;
        }
        if on && !line.trim().is_empty() {
            let mut it = line.split_whitespace();
            x.push(f(it.next().unwrap()));
            y.push(f(it.next().unwrap()));
        }
    }
    (x, y)
}

pub fn list_f32(rows: &[Vec<f32>]) -> ListArray {
    ListArray::from_iter_primitive::<Float32Type, _, _>(
        rows.iter().map(|r| Some(r.iter().map(|&v| Some(v)))),
    )
}

pub fn list_f64(rows: &[Vec<f64>]) -> ListArray {
    ListArray::from_iter_primitive::<Float64Type, _, _>(
        rows.iter().map(|r| Some(r.iter().map(|&v| Some(v)))),
    )
}

pub fn list_opt_f32(rows: &[Option<Vec<f32>>]) -> ListArray {
    ListArray::from_iter_primitive::<Float32Type, _, _>(rows.iter().map(|r| {
        r.as_ref()
            .map(|r| r.iter().map(|&v| Some(v)).collect::<Vec<_>>())
    }))
}

/// A list array of `rows` spectra of `n` pixels over one flat buffer (cheap for big batches).
pub fn list_flat_f32(values: Vec<f32>, n: usize) -> ListArray {
    let rows = values.len() / n;
    let offsets = OffsetBuffer::from_lengths(std::iter::repeat_n(n, rows));
    ListArray::new(
        Arc::new(Field::new_list_field(DataType::Float32, true)),
        offsets,
        Arc::new(Float32Array::from(values)),
        None,
    )
}
