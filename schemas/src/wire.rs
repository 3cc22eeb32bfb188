//! Wire protocol v1: the JSON header frame and the array descriptors that follow it.
//!
//! A message is a ZeroMQ multipart message: one JSON header frame, then one payload frame per
//! declared array (little-endian, C order), or a single Arrow IPC stream frame. The full
//! specification, written for vendors implementing a sender in any language, is
//! `docs/wire-protocol.md`; this module is its executable form and must never accept a header
//! that page does not describe.

use serde::{Deserialize, Serialize};

/// The only protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Why a header could not be accepted.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WireError {
    /// The header frame is not valid JSON or does not match the header schema.
    #[error("bad header JSON: {0}")]
    BadJson(String),
    /// The header names a protocol version this build does not speak.
    #[error("unsupported protocol version {found} (this server speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion {
        /// The version the sender declared.
        found: u32,
    },
    /// The dtype string is not one of the supported little-endian numeric types.
    #[error("unsupported dtype {0:?}: use a little-endian numeric dtype such as \"<f4\"")]
    BadDtype(String),
    /// The header is well-formed JSON but breaks a rule of the protocol.
    #[error("invalid header: {0}")]
    Invalid(String),
}

/// The kind of stream a message belongs to; decides which table its rows land in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    /// Spectrometer spectra (PL, absorbance, sample, dark, reference).
    Spectra,
    /// TCSPC photon events (already decoded: macro time, micro time, channel).
    Photons,
    /// Phase-sensor pair voltage traces.
    PhaseTraces,
    /// A TCSPC histogram from an instrument in histogram mode (counts per micro-time bin of
    /// one channel), optionally with the measured IRF to fit it with.
    TcspcHistogram,
    /// Scalar readings of named keys (motor positions, temperatures, flow rates), one value
    /// per key and event.
    Readings,
    /// A run-level document (start, descriptor, stop, external-file reference): no payload,
    /// everything in `meta`.
    Run,
}

impl StreamKind {
    /// The wire name of the stream kind.
    pub fn name(self) -> &'static str {
        match self {
            StreamKind::Spectra => "spectra",
            StreamKind::Photons => "photons",
            StreamKind::PhaseTraces => "phase_traces",
            StreamKind::TcspcHistogram => "tcspc_histogram",
            StreamKind::Readings => "readings",
            StreamKind::Run => "run",
        }
    }
}

/// How the payload frames are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadFormat {
    /// One frame per entry of `arrays`, raw little-endian numbers in C order.
    #[default]
    Arrays,
    /// A single frame holding an Arrow IPC stream whose columns are the arrays by name.
    ArrowIpc,
}

/// Deserializes a unit enum from its name only (`names[i]` is `values[i]`): serde's derive
/// would also take the `{"name": null}` object form, which the protocol does not describe.
fn variant_named<'de, D: serde::Deserializer<'de>, T: Copy>(
    deserializer: D,
    names: &'static [&'static str],
    values: &[T],
) -> Result<T, D::Error> {
    let name = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
    names
        .iter()
        .position(|n| *n == name)
        .and_then(|i| values.get(i).copied())
        .ok_or_else(|| serde::de::Error::unknown_variant(&name, names))
}

impl<'de> Deserialize<'de> for StreamKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use StreamKind::*;
        variant_named(
            deserializer,
            &[
                "spectra",
                "photons",
                "phase_traces",
                "tcspc_histogram",
                "readings",
                "run",
            ],
            &[Spectra, Photons, PhaseTraces, TcspcHistogram, Readings, Run],
        )
    }
}

impl<'de> Deserialize<'de> for PayloadFormat {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use PayloadFormat::*;
        variant_named(deserializer, &["arrays", "arrow_ipc"], &[Arrays, ArrowIpc])
    }
}

/// A little-endian numeric element type, spelled as numpy's `dtype.str` (`"<f4"`, `"|u1"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// `<f4`
    F32,
    /// `<f8`
    F64,
    /// `|u1`
    U8,
    /// `<u2`
    U16,
    /// `<u4`
    U32,
    /// `<u8`
    U64,
    /// `|i1`
    I8,
    /// `<i2`
    I16,
    /// `<i4`
    I32,
    /// `<i8`
    I64,
}

impl Dtype {
    /// Parses numpy's `dtype.str` spelling; big-endian and non-numeric types are refused.
    pub fn parse(text: &str) -> Result<Dtype, WireError> {
        Ok(match text {
            "<f4" => Dtype::F32,
            "<f8" => Dtype::F64,
            "|u1" | "<u1" => Dtype::U8,
            "<u2" => Dtype::U16,
            "<u4" => Dtype::U32,
            "<u8" => Dtype::U64,
            "|i1" | "<i1" => Dtype::I8,
            "<i2" => Dtype::I16,
            "<i4" => Dtype::I32,
            "<i8" => Dtype::I64,
            other => return Err(WireError::BadDtype(other.to_string())),
        })
    }

    /// Size of one element in bytes.
    pub fn size_bytes(self) -> usize {
        match self {
            Dtype::U8 | Dtype::I8 => 1,
            Dtype::U16 | Dtype::I16 => 2,
            Dtype::F32 | Dtype::U32 | Dtype::I32 => 4,
            Dtype::F64 | Dtype::U64 | Dtype::I64 => 8,
        }
    }

    /// numpy's spelling of the dtype.
    pub fn as_str(self) -> &'static str {
        match self {
            Dtype::F32 => "<f4",
            Dtype::F64 => "<f8",
            Dtype::U8 => "|u1",
            Dtype::U16 => "<u2",
            Dtype::U32 => "<u4",
            Dtype::U64 => "<u8",
            Dtype::I8 => "|i1",
            Dtype::I16 => "<i2",
            Dtype::I32 => "<i4",
            Dtype::I64 => "<i8",
        }
    }
}

impl Serialize for Dtype {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Dtype {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Dtype::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Declares one payload frame: its name, element type and shape (C order).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArrayDesc {
    /// The array's name; each stream kind documents the names it expects.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape, C order. A spectra message may carry `[n_spectra, n_pixels]` intensities.
    pub shape: Vec<u64>,
}

/// [`ArrayDesc`] as serde derives it; read through a map only (not the list form serde's
/// derive would also take).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ArrayDescFields {
    name: String,
    dtype: Dtype,
    shape: Vec<u64>,
}

impl<'de> Deserialize<'de> for ArrayDesc {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = ArrayDesc;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object {\"name\", \"dtype\", \"shape\"}")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<ArrayDesc, A::Error> {
                let fields = ArrayDescFields::deserialize(
                    serde::de::value::MapAccessDeserializer::new(map),
                )?;
                Ok(ArrayDesc {
                    name: fields.name,
                    dtype: fields.dtype,
                    shape: fields.shape,
                })
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

impl ArrayDesc {
    /// Number of elements, or `None` if the product overflows.
    pub fn element_count(&self) -> Option<u64> {
        self.shape
            .iter()
            .try_fold(1u64, |acc, &dim| acc.checked_mul(dim))
    }

    /// Number of payload bytes the frame must hold, or `None` on overflow.
    pub fn byte_len(&self) -> Option<u64> {
        self.element_count()?
            .checked_mul(self.dtype.size_bytes() as u64)
    }
}

/// The JSON header frame that opens every message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Protocol version; must be [`PROTOCOL_VERSION`].
    pub protocol: u32,
    /// Stable id of the instrument stream (`"spectrometer-1"`); 1-128 printable characters.
    pub source: String,
    /// Which kind of stream the payload is.
    pub stream: StreamKind,
    /// Per-source message sequence number, +1 per message; gaps reveal lost messages.
    pub seq: u64,
    /// The sender's session: names one life of its `seq` counter, so the server tells a
    /// counter that restarted from a resend (same source, session and seq: a duplicate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Campaign or run the data belongs to; the server's default run if absent.
    #[serde(default)]
    pub run_id: Option<String>,
    /// Reaction condition the data was taken under, if the sender knows it.
    #[serde(default)]
    pub condition_id: Option<String>,
    /// The instrument's own timestamp of the (first) measurement, ns since the Unix epoch, UTC.
    #[serde(default)]
    pub instrument_time_ns: Option<i64>,
    /// Payload encoding.
    #[serde(default)]
    pub format: PayloadFormat,
    /// One descriptor per payload frame (format `arrays`); empty for `arrow_ipc`.
    #[serde(default)]
    pub arrays: Vec<ArrayDesc>,
    /// Stream-specific metadata (see the wire-protocol page for each stream kind).
    #[serde(default)]
    pub meta: serde_json::Map<String, serde_json::Value>,
    /// The source's last message of an acquisition: what the server holds open for it (the
    /// current TCSPC histogram window) is closed and written with this message.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub end_of_stream: bool,
}

/// On a header that failed to parse: the first array dtype the protocol refuses, if that is
/// why (serde reports it inside its own error, which would hide the rule that was broken).
fn refused_dtype(frame: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(frame).ok()?;
    value
        .get("arrays")?
        .as_array()?
        .iter()
        .filter_map(|array| array.get("dtype")?.as_str())
        .find(|dtype| Dtype::parse(dtype).is_err())
        .map(str::to_owned)
}

impl Header {
    /// Parses and validates a header frame.
    ///
    /// # Errors
    /// [`WireError`] naming the first rule the frame breaks.
    pub fn parse(frame: &[u8]) -> Result<Header, WireError> {
        // serde's derive would also read a struct from a JSON array of its values.
        if frame.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(WireError::BadJson(
                "the header must be a JSON object".into(),
            ));
        }
        let header: Header = serde_json::from_slice(frame).map_err(|e| {
            refused_dtype(frame)
                .map_or_else(|| WireError::BadJson(e.to_string()), WireError::BadDtype)
        })?;
        header.validate()?;
        Ok(header)
    }

    fn validate(&self) -> Result<(), WireError> {
        if self.protocol != PROTOCOL_VERSION {
            return Err(WireError::UnsupportedVersion {
                found: self.protocol,
            });
        }
        check_identifier("source", &self.source)?;
        if let Some(session) = &self.session {
            check_identifier("session", session)?;
        }
        if let Some(run_id) = &self.run_id {
            check_identifier("run_id", run_id)?;
        }
        if let Some(condition_id) = &self.condition_id {
            check_identifier("condition_id", condition_id)?;
        }
        match self.format {
            PayloadFormat::Arrays if self.stream == StreamKind::Run => {
                if self.arrays.is_empty() {
                    Ok(())
                } else {
                    Err(WireError::Invalid(
                        "stream \"run\" has no payload: its document is in \"meta\"".into(),
                    ))
                }
            }
            PayloadFormat::ArrowIpc if self.stream == StreamKind::Run => Err(WireError::Invalid(
                "stream \"run\" has no payload: use format \"arrays\" with no arrays".into(),
            )),
            PayloadFormat::Arrays if self.arrays.is_empty() => Err(WireError::Invalid(
                "format \"arrays\" needs at least one entry in \"arrays\"".into(),
            )),
            PayloadFormat::ArrowIpc if !self.arrays.is_empty() => Err(WireError::Invalid(
                "format \"arrow_ipc\" takes no \"arrays\" descriptors".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Finds the descriptor and frame position of a named array.
    pub fn array(&self, name: &str) -> Option<(usize, &ArrayDesc)> {
        self.arrays.iter().enumerate().find(|(_, a)| a.name == name)
    }
}

/// Checks an identifier (source, session, run or condition id): identifiers end up in file
/// paths and SQL results, so they are short and printable.
///
/// # Errors
/// [`WireError::Invalid`] naming `what` and the rule.
pub fn check_identifier(what: &str, value: &str) -> Result<(), WireError> {
    let ok_len = !value.is_empty() && value.len() <= 128;
    let ok_chars = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if ok_len && ok_chars && !value.starts_with('.') {
        Ok(())
    } else {
        Err(WireError::Invalid(format!(
            "{what} {value:?} must be 1-128 characters of A-Z a-z 0-9 - _ . : and not start with '.'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_json(extra: &str) -> String {
        format!(
            r#"{{"protocol":1,"source":"spec-1","stream":"spectra","seq":7,
                "arrays":[{{"name":"intensity_counts","dtype":"<f4","shape":[2,2048]}}]{extra}}}"#
        )
    }

    #[test]
    fn parses_a_minimal_header() {
        let header = Header::parse(header_json("").as_bytes()).expect("valid");
        assert_eq!(header.seq, 7);
        assert_eq!(header.stream, StreamKind::Spectra);
        assert_eq!(header.arrays[0].dtype, Dtype::F32);
        assert_eq!(header.arrays[0].byte_len(), Some(2 * 2048 * 4));
    }

    #[test]
    fn a_refused_dtype_is_named_as_such() {
        let big_endian = header_json("").replace("<f4", ">f4");
        assert!(matches!(
            Header::parse(big_endian.as_bytes()),
            Err(WireError::BadDtype(dtype)) if dtype == ">f4"
        ));
    }

    #[test]
    fn refuses_what_the_protocol_does_not_describe() {
        let cases = [
            (header_json(r#","colour":"red""#), "unknown field"),
            (
                header_json("").replace("\"protocol\":1", "\"protocol\":2"),
                "unsupported protocol",
            ),
            (
                header_json("").replace("<f4", ">f4"),
                "unsupported dtype \">f4\"",
            ),
            (header_json("").replace("spec-1", "../etc"), "source"),
            (
                header_json("").replace("spectra", "video"),
                "unknown variant",
            ),
            ("{not json".to_string(), "bad header JSON"),
            (
                r#"[1,"spec-1","spectra",7]"#.to_string(),
                "must be a JSON object",
            ),
            (
                header_json("").replace(r#""stream":"spectra""#, r#""stream":{"spectra":null}"#),
                "expected a string",
            ),
            (
                header_json(r#","format":{"arrays":null}"#),
                "expected a string",
            ),
            (
                header_json("").replace(
                    r#"{"name":"intensity_counts","dtype":"<f4","shape":[2,2048]}"#,
                    r#"["intensity_counts","<f4",[2,2048]]"#,
                ),
                "expected an object {\"name\", \"dtype\", \"shape\"}",
            ),
            (header_json(r#","seq":8"#), "duplicate field"),
        ];
        for (json, expected) in cases {
            let err = Header::parse(json.as_bytes()).expect_err(&json).to_string();
            assert!(
                err.contains(expected),
                "{err:?} should mention {expected:?}"
            );
        }
    }

    #[test]
    fn shape_products_that_overflow_are_detected() {
        let desc = ArrayDesc {
            name: "x".into(),
            dtype: Dtype::F64,
            shape: vec![u64::MAX, 2],
        };
        assert_eq!(desc.byte_len(), None);
    }
}
