//! The translator: Bluesky documents in, wire messages out.
//!
//! A run's documents depend on each other: an event names its descriptor, which names its
//! run's start, which names the run. The translator keeps that chain for every open run and
//! forgets a run at its stop. Numbering follows the documents themselves, so the pipeline's
//! resend and gap accounting applies as it does to any sender: an event's messages carry its
//! `seq_num` as `seq` and its descriptor's uid as `session`; a run's own documents are numbered
//! 1, 2, ... in the session of the run's uid. A problem with one part of a document (an
//! unreadable spectrum) is refused on its own; the document's other rows still go through.

use std::collections::HashMap;
use std::sync::Arc;

use flowdaq_schemas::StreamKind;
use serde_json::{Map, Value};

use super::{document, BlueskyConfig, BlueskyCounters, BlueskyError};
use crate::decode::EVENT_TIME_ARRAY;
use crate::message::OutboundMessage;

/// Runs kept open at once; a start beyond this forgets the longest-open run (its stop never
/// came).
const MAX_OPEN_RUNS: usize = 64;
/// Descriptors (streams) held at once over all open runs; more are refused.
const MAX_OPEN_DESCRIPTORS: usize = 1024;
/// Resources held at once over all open runs (a datum names one); more are refused.
const MAX_OPEN_RESOURCES: usize = 65_536;
/// Longest run or condition id, as the wire protocol allows.
const MAX_ID_CHARS: usize = 128;

/// What one frame became: messages for the pipeline, and refusals for `ingest_errors`.
#[derive(Debug, Default)]
pub struct Translated {
    /// Wire messages, `seq` and `session` set.
    pub messages: Vec<OutboundMessage>,
    /// Parts of the document (or the whole of it) that could not be read.
    pub refusals: Vec<BlueskyError>,
}

struct Run {
    run_id: String,
    condition_id: Option<String>,
    next_seq: u64,
    opened: u64,
}

struct Descriptor {
    run_uid: String,
    stream_name: String,
    data_keys: Map<String, Value>,
    /// Configuration values of every object, by key (where axes and exposure times live).
    configuration: Map<String, Value>,
    /// Indices of `config.spectra` whose data key this descriptor has.
    spectra: Vec<usize>,
}

/// Turns Bluesky documents into wire messages; one per socket.
pub struct Translator {
    config: BlueskyConfig,
    counters: Arc<BlueskyCounters>,
    runs: HashMap<String, Run>,
    descriptors: HashMap<String, Descriptor>,
    /// Resource uid to the uid of its run.
    resources: HashMap<String, String>,
    opened: u64,
}

fn refusal(document: &str, reason: impl Into<String>) -> BlueskyError {
    BlueskyError::Document {
        document: document.to_string(),
        reason: reason.into(),
    }
}

fn required_text<'a>(
    document: &str,
    body: &'a Map<String, Value>,
    key: &str,
) -> Result<&'a str, BlueskyError> {
    body.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| refusal(document, format!("no {key:?} string")))
}

/// A uid used as a session: it must be a wire identifier (uuid4 strings are).
fn uid_of<'a>(
    document: &str,
    body: &'a Map<String, Value>,
    key: &str,
) -> Result<&'a str, BlueskyError> {
    let uid = required_text(document, body, key)?;
    flowdaq_schemas::wire::check_identifier(key, uid)
        .map_err(|e| refusal(document, e.to_string()))?;
    Ok(uid)
}

/// Seconds since the epoch (event-model `time`) as ns.
fn time_ns(value: Option<&Value>) -> Option<i64> {
    let seconds = value?.as_f64()?;
    let ns = (seconds * 1e9).round();
    (ns.is_finite() && ns.abs() < 9.2e18).then_some(ns as i64)
}

/// A metadata value as a wire identifier: strings and integers, other characters as `_`.
fn identifier_of(value: &Value) -> Option<String> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
        _ => return None,
    };
    let id: String = text
        .chars()
        .take(MAX_ID_CHARS)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let id = id.trim_start_matches('.').to_string();
    (!id.is_empty()).then_some(id)
}

/// A number of a reading: JSON numbers, booleans as 0/1, and the strings that stand for
/// non-finite floats.
fn number_of(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        Value::String(s) => match s.as_str() {
            "NaN" | "nan" => Some(f64::NAN),
            "inf" | "Infinity" => Some(f64::INFINITY),
            "-inf" | "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

/// A 1-D list of numbers.
fn numbers_of(value: &Value) -> Option<Vec<f64>> {
    value.as_array()?.iter().map(number_of).collect()
}

impl Translator {
    /// A translator for `config`, counting into `counters`.
    pub fn new(config: BlueskyConfig, counters: Arc<BlueskyCounters>) -> Translator {
        Translator {
            config,
            counters,
            runs: HashMap::new(),
            descriptors: HashMap::new(),
            resources: HashMap::new(),
            opened: 0,
        }
    }

    /// Translates one frame as the Publisher sent it.
    pub fn translate(&mut self, frame: &[u8]) -> Translated {
        let mut out = Translated::default();
        if frame.len() > self.config.max_document_bytes {
            out.refusals.push(BlueskyError::Frame(format!(
                "{} bytes exceed bluesky.max_document_bytes = {}",
                frame.len(),
                self.config.max_document_bytes
            )));
        } else {
            match document::parse(frame) {
                Err(err) => out.refusals.push(err),
                Ok(doc) => {
                    if !self.config.prefix.is_empty() && doc.prefix != self.config.prefix.as_bytes()
                    {
                        self.counters.other_prefix();
                        return out;
                    }
                    self.dispatch(&doc.name, &doc.body, &mut out);
                }
            }
        }
        for _ in &out.refusals {
            self.counters.refused();
        }
        self.counters.set_open_runs(self.runs.len());
        out
    }

    /// A message of `frames` frames, which no Publisher sends: refused as a whole.
    pub fn refuse_frames(&mut self, frames: usize) -> Translated {
        self.counters.refused();
        Translated {
            messages: Vec::new(),
            refusals: vec![BlueskyError::Frame(format!(
                "a Bluesky document is one frame, this message has {frames}"
            ))],
        }
    }

    fn dispatch(&mut self, name: &str, body: &Map<String, Value>, out: &mut Translated) {
        let result = match name {
            "start" => self.start(body, out),
            "descriptor" => self.descriptor(body, out),
            "event" => self.event(body, out).map(|()| 1),
            "event_page" => self.event_page(body, out),
            "stop" => self.stop(body, out),
            "resource" | "stream_resource" => self.resource(name, body, out),
            "datum" | "datum_page" | "stream_datum" => self.datum(name, body, out),
            other => Err(refusal(
                other,
                "not a document flowdaq reads (start, descriptor, event, event_page, stop, \
                 resource, datum, datum_page, stream_resource, stream_datum)",
            )),
        };
        match result {
            Ok(events) => self.counters.document(name, events),
            Err(err) => out.refusals.push(err),
        }
    }

    /// A `run` message in the session of `run_uid`, numbered after the run's previous one.
    fn run_message(
        &mut self,
        run_uid: &str,
        document: &str,
        document_uid: Option<&str>,
        body: &Map<String, Value>,
    ) -> Option<OutboundMessage> {
        let run = self.runs.get_mut(run_uid)?;
        let mut message = OutboundMessage::new(&self.config.source, StreamKind::Run)
            .meta("document", document)
            .meta("run_uid", run_uid)
            .meta("body", Value::Object(body.clone()));
        if let Some(uid) = document_uid {
            message = message.meta("document_uid", uid);
        }
        let header = &mut message.header;
        header.seq = run.next_seq;
        run.next_seq += 1;
        header.session = Some(run_uid.to_string());
        header.run_id = Some(run.run_id.clone());
        header.condition_id = run.condition_id.clone();
        header.instrument_time_ns = time_ns(body.get("time"));
        Some(message)
    }

    fn start(
        &mut self,
        body: &Map<String, Value>,
        out: &mut Translated,
    ) -> Result<u64, BlueskyError> {
        let uid = uid_of("start", body, "uid")?;
        if self.runs.contains_key(uid) {
            // The same start again (a second path from the same Publisher): nothing new.
            return Ok(1);
        }
        let run_id = match body.get(&self.config.run_id_key).and_then(identifier_of) {
            Some(id) => id,
            None => {
                if self.config.run_id_key != "uid" {
                    tracing::warn!(
                        key = %self.config.run_id_key,
                        uid,
                        "start document lacks the run id key; the run is named by its uid"
                    );
                }
                uid.to_string()
            }
        };
        let condition_id = if self.config.condition_key.is_empty() {
            None
        } else {
            body.get(&self.config.condition_key).and_then(identifier_of)
        };
        if self.runs.len() >= MAX_OPEN_RUNS {
            if let Some(oldest) = self
                .runs
                .iter()
                .min_by_key(|(_, run)| run.opened)
                .map(|(uid, _)| uid.clone())
            {
                tracing::warn!(run_uid = %oldest, "forgetting a run that never stopped");
                self.forget(&oldest);
            }
        }
        self.opened += 1;
        self.runs.insert(
            uid.to_string(),
            Run {
                run_id,
                condition_id,
                next_seq: 1,
                opened: self.opened,
            },
        );
        if let Some(mut message) = self.run_message(uid, "start", Some(uid), body) {
            if let Some(plan) = body.get("plan_name").and_then(Value::as_str) {
                message = message.meta("plan_name", plan);
            }
            if let Some(scan_id) = body.get("scan_id").and_then(Value::as_i64) {
                message = message.meta("scan_id", scan_id);
            }
            out.messages.push(message);
        }
        Ok(1)
    }

    fn forget(&mut self, run_uid: &str) {
        self.runs.remove(run_uid);
        self.descriptors.retain(|_, d| d.run_uid != run_uid);
        self.resources.retain(|_, run| run != run_uid);
    }

    /// The open run `run_uid`, or a refusal saying the start was not seen.
    fn open_run(&self, document: &str, run_uid: &str) -> Result<(), BlueskyError> {
        if self.runs.contains_key(run_uid) {
            Ok(())
        } else {
            Err(refusal(
                document,
                format!(
                    "run {run_uid:?} is not open: flowdaq did not see its start (started mid-run?) \
                     or it stopped"
                ),
            ))
        }
    }

    fn descriptor(
        &mut self,
        body: &Map<String, Value>,
        out: &mut Translated,
    ) -> Result<u64, BlueskyError> {
        let uid = uid_of("descriptor", body, "uid")?;
        let run_uid = required_text("descriptor", body, "run_start")?;
        self.open_run("descriptor", run_uid)?;
        if self.descriptors.len() >= MAX_OPEN_DESCRIPTORS && !self.descriptors.contains_key(uid) {
            return Err(refusal(
                "descriptor",
                format!("{MAX_OPEN_DESCRIPTORS} streams are open already; stop a run first"),
            ));
        }
        let data_keys = body
            .get("data_keys")
            .and_then(Value::as_object)
            .ok_or_else(|| refusal("descriptor", "no \"data_keys\" object"))?
            .clone();
        let mut configuration = Map::new();
        if let Some(objects) = body.get("configuration").and_then(Value::as_object) {
            for object in objects.values() {
                if let Some(data) = object.get("data").and_then(Value::as_object) {
                    configuration.extend(data.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
        }
        let spectra = (0..self.config.spectra.len())
            .filter(|&i| data_keys.contains_key(&self.config.spectra[i].data_key))
            .collect();
        let stream_name = body
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("primary")
            .to_string();
        self.descriptors.insert(
            uid.to_string(),
            Descriptor {
                run_uid: run_uid.to_string(),
                stream_name,
                data_keys,
                configuration,
                spectra,
            },
        );
        out.messages
            .extend(self.run_message(run_uid, "descriptor", Some(uid), body));
        Ok(1)
    }

    fn event(
        &mut self,
        body: &Map<String, Value>,
        out: &mut Translated,
    ) -> Result<(), BlueskyError> {
        let descriptor = uid_of("event", body, "descriptor")?;
        let seq_num = body
            .get("seq_num")
            .and_then(Value::as_u64)
            .ok_or_else(|| refusal("event", "no integer \"seq_num\""))?;
        let data = body
            .get("data")
            .and_then(Value::as_object)
            .ok_or_else(|| refusal("event", "no \"data\" object"))?;
        let timestamps = body.get("timestamps").and_then(Value::as_object);
        let event = Event {
            seq_num,
            time_ns: time_ns(body.get("time"))
                .ok_or_else(|| refusal("event", "no numeric \"time\""))?,
            data,
            timestamps,
        };
        self.event_messages("event", descriptor, &event, out)
    }

    fn event_page(
        &mut self,
        body: &Map<String, Value>,
        out: &mut Translated,
    ) -> Result<u64, BlueskyError> {
        let descriptor = uid_of("event_page", body, "descriptor")?;
        let list = |key: &str| {
            body.get(key)
                .and_then(Value::as_array)
                .ok_or_else(|| refusal("event_page", format!("no {key:?} list")))
        };
        let seq_nums = list("seq_num")?;
        let times = list("time")?;
        let columns = |key: &str| -> Result<Map<String, Value>, BlueskyError> {
            let Some(object) = body.get(key) else {
                return Ok(Map::new());
            };
            let object = object
                .as_object()
                .ok_or_else(|| refusal("event_page", format!("{key:?} is not an object")))?;
            for (name, column) in object {
                if column.as_array().map(Vec::len) != Some(seq_nums.len()) {
                    return Err(refusal(
                        "event_page",
                        format!("{key}.{name} is not a list of {} values", seq_nums.len()),
                    ));
                }
            }
            Ok(object.clone())
        };
        let data = columns("data")?;
        let timestamps = columns("timestamps")?;
        if times.len() != seq_nums.len() {
            return Err(refusal(
                "event_page",
                format!("{} times for {} seq_nums", times.len(), seq_nums.len()),
            ));
        }
        let row = |columns: &Map<String, Value>, i: usize| -> Map<String, Value> {
            columns
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_array()?.get(i)?.clone())))
                .collect()
        };
        for (i, seq_num) in seq_nums.iter().enumerate() {
            let seq_num = seq_num
                .as_u64()
                .ok_or_else(|| refusal("event_page", "a seq_num is not an integer"))?;
            let data = row(&data, i);
            let timestamps = row(&timestamps, i);
            let event = Event {
                seq_num,
                time_ns: time_ns(times.get(i))
                    .ok_or_else(|| refusal("event_page", "a time is not a number"))?,
                data: &data,
                timestamps: Some(&timestamps),
            };
            if let Err(err) = self.event_messages("event_page", descriptor, &event, out) {
                out.refusals.push(err);
            }
        }
        Ok(seq_nums.len() as u64)
    }

    /// The messages of one event: a `spectra` message per mapped spectrum, and a `readings`
    /// message of its scalar values.
    fn event_messages(
        &self,
        document: &str,
        descriptor_uid: &str,
        event: &Event<'_>,
        out: &mut Translated,
    ) -> Result<(), BlueskyError> {
        let descriptor = self.descriptors.get(descriptor_uid).ok_or_else(|| {
            refusal(
                document,
                format!(
                    "descriptor {descriptor_uid:?} is unknown: flowdaq did not see it \
                     (started mid-run?) or its run stopped"
                ),
            )
        })?;
        let run = self
            .runs
            .get(&descriptor.run_uid)
            .ok_or_else(|| refusal(document, "the descriptor's run is not open"))?;
        let stamp = |message: &mut OutboundMessage, time_ns: i64| {
            let header = &mut message.header;
            header.seq = event.seq_num;
            header.session = Some(descriptor_uid.to_string());
            header.run_id = Some(run.run_id.clone());
            header.condition_id = run.condition_id.clone();
            header.instrument_time_ns = Some(time_ns);
        };
        let mut mapped: Vec<&str> = Vec::new();
        for &index in &descriptor.spectra {
            let mapping = &self.config.spectra[index];
            mapped.push(&mapping.data_key);
            mapped.push(&mapping.wavelength_key);
            mapped.extend(mapping.integration_time_key.as_deref());
            let Some(intensity) = event.data.get(&mapping.data_key) else {
                continue;
            };
            match self.spectrum(document, descriptor, event, index, intensity) {
                Ok(mut message) => {
                    let at = event
                        .timestamps
                        .and_then(|t| time_ns(t.get(&mapping.data_key)))
                        .unwrap_or(event.time_ns);
                    stamp(&mut message, at);
                    out.messages.push(message);
                }
                Err(err) => out.refusals.push(err),
            }
        }
        if let Some(mut message) = self.readings(descriptor, event, &mapped) {
            stamp(&mut message, event.time_ns);
            out.messages.push(message);
        }
        Ok(())
    }

    fn spectrum(
        &self,
        document: &str,
        descriptor: &Descriptor,
        event: &Event<'_>,
        index: usize,
        intensity: &Value,
    ) -> Result<OutboundMessage, BlueskyError> {
        let mapping = &self.config.spectra[index];
        let lookup = |key: &str| {
            event
                .data
                .get(key)
                .or_else(|| descriptor.configuration.get(key))
        };
        let intensity = numbers_of(intensity).ok_or_else(|| {
            refusal(
                document,
                format!("{} is not a 1-D list of numbers", mapping.data_key),
            )
        })?;
        let axis = lookup(&mapping.wavelength_key)
            .and_then(numbers_of)
            .ok_or_else(|| {
                refusal(
                    document,
                    format!(
                        "wavelength key {:?} of {} is not a 1-D list of numbers in the event's \
                         data or the descriptor's configuration",
                        mapping.wavelength_key, mapping.data_key
                    ),
                )
            })?;
        let integration_ms = mapping
            .integration_time_key
            .as_deref()
            .and_then(lookup)
            .and_then(Value::as_f64)
            .map(|seconds| seconds * 1000.0)
            .or(mapping.integration_time_ms)
            .ok_or_else(|| {
                refusal(
                    document,
                    format!(
                        "integration time of {} not found and no integration_time_ms set",
                        mapping.data_key
                    ),
                )
            })?;
        Ok(OutboundMessage::new(mapping.source(), StreamKind::Spectra)
            .meta("kind", mapping.kind.as_str())
            .meta("integration_time_ms", integration_ms)
            .array_f64("wavelength_nm", &[axis.len() as u64], &axis)
            .array_f64("intensity_counts", &[intensity.len() as u64], &intensity))
    }

    /// The event's readings: numbers and text of every key no spectrum mapping took. Arrays
    /// no mapping takes are counted and left out.
    fn readings(
        &self,
        descriptor: &Descriptor,
        event: &Event<'_>,
        mapped: &[&str],
    ) -> Option<OutboundMessage> {
        let mut message = OutboundMessage::new(&self.config.source, StreamKind::Readings)
            .meta("stream_name", descriptor.stream_name.as_str());
        let mut text = Map::new();
        let mut units = Map::new();
        let mut times = Map::new();
        for (key, data_key) in &descriptor.data_keys {
            if mapped.contains(&key.as_str()) {
                continue;
            }
            let Some(value) = event.data.get(key) else {
                continue;
            };
            let number = number_of(value).filter(|_| {
                !matches!(value, Value::String(_)) || {
                    matches!(
                        data_key.get("dtype").and_then(Value::as_str),
                        Some("number" | "integer")
                    )
                }
            });
            match (number, value) {
                (Some(x), _) if key != EVENT_TIME_ARRAY => {
                    message = message.array_f64(key, &[1], &[x]);
                }
                (Some(_), _) | (None, Value::String(_) | Value::Null) => {
                    let as_text = match value {
                        Value::String(s) => Value::String(s.clone()),
                        Value::Null => Value::Null,
                        other => Value::String(other.to_string()),
                    };
                    text.insert(key.clone(), Value::Array(vec![as_text]));
                }
                (None, _) => {
                    self.counters.unstored_array_value();
                    continue;
                }
            }
            if let Some(at) = event.timestamps.and_then(|t| time_ns(t.get(key))) {
                times.insert(key.clone(), Value::Array(vec![Value::from(at)]));
            }
            if let Some(unit) = data_key
                .get("units")
                .and_then(Value::as_str)
                .filter(|u| !u.is_empty())
            {
                units.insert(key.clone(), Value::String(unit.to_string()));
            }
        }
        if message.header.arrays.is_empty() && text.is_empty() {
            return None;
        }
        message = message.array_i64(EVENT_TIME_ARRAY, &[1], &[event.time_ns]);
        if !text.is_empty() {
            message = message.meta("text", Value::Object(text));
        }
        if !units.is_empty() {
            message = message.meta("units", Value::Object(units));
        }
        if !times.is_empty() {
            message = message.meta("timestamps_ns", Value::Object(times));
        }
        Some(message)
    }

    fn stop(
        &mut self,
        body: &Map<String, Value>,
        out: &mut Translated,
    ) -> Result<u64, BlueskyError> {
        let run_uid = required_text("stop", body, "run_start")?.to_string();
        self.open_run("stop", &run_uid)?;
        let uid = body.get("uid").and_then(Value::as_str);
        if let Some(mut message) = self.run_message(&run_uid, "stop", uid, body) {
            if let Some(status) = body.get("exit_status").and_then(Value::as_str) {
                message = message.meta("exit_status", status);
            }
            if let Some(reason) = body.get("reason").and_then(Value::as_str) {
                message = message.meta("reason", reason);
            }
            out.messages.push(message.end_of_stream());
        }
        self.forget(&run_uid);
        Ok(1)
    }

    fn resource(
        &mut self,
        name: &str,
        body: &Map<String, Value>,
        out: &mut Translated,
    ) -> Result<u64, BlueskyError> {
        let uid = required_text(name, body, "uid")?;
        let run_uid = match body.get("run_start").and_then(Value::as_str) {
            Some(run_uid) => run_uid.to_string(),
            // Older resources do not name their run: the one open run, if there is one.
            None if self.runs.len() == 1 => self.runs.keys().next().cloned().unwrap_or_default(),
            None => {
                return Err(refusal(
                    name,
                    "no \"run_start\" and not exactly one run open",
                ))
            }
        };
        self.open_run(name, &run_uid)?;
        if self.resources.len() >= MAX_OPEN_RESOURCES && !self.resources.contains_key(uid) {
            return Err(refusal(
                name,
                format!("{MAX_OPEN_RESOURCES} resources are open already; stop a run first"),
            ));
        }
        self.resources.insert(uid.to_string(), run_uid.clone());
        out.messages
            .extend(self.run_message(&run_uid, name, Some(uid), body));
        Ok(1)
    }

    fn datum(
        &mut self,
        name: &str,
        body: &Map<String, Value>,
        out: &mut Translated,
    ) -> Result<u64, BlueskyError> {
        let resource_key = if name == "stream_datum" {
            "stream_resource"
        } else {
            "resource"
        };
        let resource = required_text(name, body, resource_key)?;
        let run_uid = self.resources.get(resource).cloned().ok_or_else(|| {
            refusal(
                name,
                format!("{resource_key} {resource:?} is unknown: flowdaq did not see it"),
            )
        })?;
        let uid = match name {
            "datum" => body.get("datum_id").and_then(Value::as_str),
            "stream_datum" => body.get("uid").and_then(Value::as_str),
            _ => None,
        };
        out.messages
            .extend(self.run_message(&run_uid, name, uid, body));
        Ok(1)
    }
}

/// One event, from an `event` document or a row of an `event_page`.
struct Event<'a> {
    seq_num: u64,
    time_ns: i64,
    data: &'a Map<String, Value>,
    timestamps: Option<&'a Map<String, Value>>,
}
