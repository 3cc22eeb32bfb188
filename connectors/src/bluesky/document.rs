//! One Bluesky 0MQ message in, its document name and body out.
//!
//! bluesky's `Publisher` sends one frame, `prefix b" " name b" " serialized document`, with
//! whatever serializer it was given. This module splits the frame, recognises the serializer
//! from the document's first bytes (a JSON object starts with `{`, a msgpack map with a map
//! marker, a pickle with `0x80` and its protocol number) and reads msgpack, including
//! msgpack-numpy's arrays and scalars, and JSON into `serde_json` values. Pickle is refused:
//! unpickling runs code chosen by whoever can reach the socket.

use serde_json::{Map, Number, Value};

use super::BlueskyError;

/// Deepest nesting accepted in a document.
const MAX_DEPTH: usize = 64;

/// A document as it arrived: the Publisher's prefix, the document name and its body.
#[derive(Debug)]
pub struct Document {
    /// The Publisher's prefix (empty if it set none).
    pub prefix: Vec<u8>,
    /// `start`, `descriptor`, `event`, `event_page`, `stop`, `resource`, `datum`, ...
    pub name: String,
    /// The document itself; always an object.
    pub body: Map<String, Value>,
}

/// Splits and reads one Bluesky frame.
///
/// # Errors
/// [`BlueskyError`] naming what is wrong with the frame: its layout, a pickled document, or a
/// body that is neither msgpack nor JSON of an object.
pub fn parse(frame: &[u8]) -> Result<Document, BlueskyError> {
    let mut parts = frame.splitn(3, |b| *b == b' ');
    let (Some(prefix), Some(name), Some(serialized)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(BlueskyError::Frame(
            "expected `prefix name document` separated by spaces".into(),
        ));
    };
    let name = std::str::from_utf8(name)
        .ok()
        .filter(|n| !n.is_empty() && n.len() <= 64 && n.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| BlueskyError::Frame("the document name is not a short ASCII word".into()))?;
    let body = match serialized.first() {
        None => return Err(BlueskyError::Frame("the document is empty".into())),
        Some(b'{') => from_json(serialized)?,
        Some(0x80) if serialized.get(1).is_some_and(|p| (2..=5).contains(p)) => {
            return Err(BlueskyError::Pickle)
        }
        Some(0x81..=0x8f | 0xde | 0xdf) => from_msgpack(serialized)?,
        Some(first) => {
            return Err(BlueskyError::Serializer(format!(
            "the document starts with byte 0x{first:02x}: neither a msgpack map nor a JSON object"
        )))
        }
    };
    Ok(Document {
        prefix: prefix.to_vec(),
        name: name.to_string(),
        body,
    })
}

fn from_json(serialized: &[u8]) -> Result<Map<String, Value>, BlueskyError> {
    // serde_json refuses nesting deeper than 128 by itself.
    match serde_json::from_slice::<Value>(serialized) {
        Ok(Value::Object(body)) => Ok(body),
        Ok(_) => Err(BlueskyError::Serializer(
            "JSON that is not an object".into(),
        )),
        Err(err) => Err(BlueskyError::Serializer(format!("bad JSON: {err}"))),
    }
}

fn from_msgpack(serialized: &[u8]) -> Result<Map<String, Value>, BlueskyError> {
    let mut reader = serialized;
    let value = rmpv::decode::read_value_with_max_depth(&mut reader, MAX_DEPTH)
        .map_err(|err| BlueskyError::Serializer(format!("bad msgpack: {err}")))?;
    if !reader.is_empty() {
        return Err(BlueskyError::Serializer(format!(
            "{} bytes after the msgpack document",
            reader.len()
        )));
    }
    match to_json(value)? {
        Value::Object(body) => Ok(body),
        _ => Err(BlueskyError::Serializer("msgpack that is not a map".into())),
    }
}

/// A msgpack value as JSON. msgpack-numpy's `{nd, type, kind, shape, data}` maps become
/// (nested) lists of numbers, its scalars numbers; a float that is not finite becomes the
/// string numpy prints for it, since JSON has no such numbers.
fn to_json(value: rmpv::Value) -> Result<Value, BlueskyError> {
    use rmpv::Value as M;
    Ok(match value {
        M::Nil => Value::Null,
        M::Boolean(b) => Value::Bool(b),
        M::Integer(i) => match (i.as_i64(), i.as_u64()) {
            (Some(i), _) => Value::from(i),
            (None, Some(u)) => Value::from(u),
            (None, None) => Value::Null,
        },
        M::F32(x) => float(f64::from(x)),
        M::F64(x) => float(x),
        M::String(s) => match s.into_str() {
            Some(s) => Value::String(s),
            None => return Err(BlueskyError::Serializer("a string is not UTF-8".into())),
        },
        M::Binary(bytes) => Value::String(format!("<{} bytes>", bytes.len())),
        M::Array(items) => Value::Array(items.into_iter().map(to_json).collect::<Result<_, _>>()?),
        M::Map(entries) => {
            if let Some(array) = numpy(&entries)? {
                return Ok(array);
            }
            let mut map = Map::with_capacity(entries.len());
            for (key, value) in entries {
                let key = match key {
                    M::String(s) => s
                        .into_str()
                        .ok_or_else(|| BlueskyError::Serializer("a key is not UTF-8".into()))?,
                    M::Binary(b) => String::from_utf8(b)
                        .map_err(|_| BlueskyError::Serializer("a key is not UTF-8".into()))?,
                    M::Integer(i) => i.to_string(),
                    other => {
                        return Err(BlueskyError::Serializer(format!(
                            "a map key is {other}: keys are strings"
                        )))
                    }
                };
                map.insert(key, to_json(value)?);
            }
            Value::Object(map)
        }
        M::Ext(kind, _) => {
            return Err(BlueskyError::Serializer(format!(
                "msgpack extension type {kind} is not read"
            )))
        }
    })
}

fn float(x: f64) -> Value {
    match Number::from_f64(x) {
        Some(n) => Value::Number(n),
        None if x.is_nan() => Value::String("NaN".into()),
        None if x > 0.0 => Value::String("inf".into()),
        None => Value::String("-inf".into()),
    }
}

/// The entry of a msgpack-numpy map named `key` (its keys are bytes or strings).
fn entry<'a>(entries: &'a [(rmpv::Value, rmpv::Value)], key: &str) -> Option<&'a rmpv::Value> {
    entries.iter().find_map(|(k, v)| {
        let name = match k {
            rmpv::Value::String(s) => s.as_str()?.as_bytes(),
            rmpv::Value::Binary(b) => b.as_slice(),
            _ => return None,
        };
        (name == key.as_bytes()).then_some(v)
    })
}

/// A msgpack-numpy array or scalar as JSON, or `None` if the map is not one.
fn numpy(entries: &[(rmpv::Value, rmpv::Value)]) -> Result<Option<Value>, BlueskyError> {
    let Some(rmpv::Value::Boolean(is_array)) = entry(entries, "nd") else {
        return Ok(None);
    };
    let (Some(dtype), Some(rmpv::Value::Binary(data))) =
        (entry(entries, "type"), entry(entries, "data"))
    else {
        return Ok(None);
    };
    let dtype = match dtype {
        rmpv::Value::String(s) => s.as_str().unwrap_or_default().to_string(),
        rmpv::Value::Binary(b) => String::from_utf8_lossy(b).into_owned(),
        _ => {
            return Err(BlueskyError::Serializer(
                "a numpy array of a structured dtype is not read".into(),
            ))
        }
    };
    let numbers = numbers_of(&dtype, data)?;
    if !is_array {
        return Ok(Some(numbers.into_iter().next().unwrap_or(Value::Null)));
    }
    let shape: Vec<usize> = match entry(entries, "shape") {
        Some(rmpv::Value::Array(dims)) => dims
            .iter()
            .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<_>>()
            .ok_or_else(|| BlueskyError::Serializer("a numpy shape is not integers".into()))?,
        _ => vec![numbers.len()],
    };
    let expected = shape.iter().try_fold(1usize, |n, d| n.checked_mul(*d));
    if expected != Some(numbers.len()) {
        return Err(BlueskyError::Serializer(format!(
            "a numpy array of shape {shape:?} holds {} values",
            numbers.len()
        )));
    }
    Ok(Some(nest(numbers, &shape)))
}

/// Values of a numpy buffer of `dtype` (`dtype.str`: `<f8`, `|u1`, `|b1`, ...).
fn numbers_of(dtype: &str, data: &[u8]) -> Result<Vec<Value>, BlueskyError> {
    macro_rules! read {
        ($t:ty, $to:expr) => {{
            const SIZE: usize = std::mem::size_of::<$t>();
            if !data.len().is_multiple_of(SIZE) {
                return Err(BlueskyError::Serializer(format!(
                    "a numpy {dtype} buffer of {} bytes",
                    data.len()
                )));
            }
            data.chunks_exact(SIZE)
                .map(|c| {
                    let mut bytes = [0u8; SIZE];
                    bytes.copy_from_slice(c);
                    $to(<$t>::from_le_bytes(bytes))
                })
                .collect()
        }};
    }
    let values: Vec<Value> = match dtype {
        "<f8" => read!(f64, float),
        "<f4" => read!(f32, |x: f32| float(f64::from(x))),
        "<i8" => read!(i64, Value::from),
        "<i4" => read!(i32, Value::from),
        "<i2" => read!(i16, Value::from),
        "|i1" => data.iter().map(|b| Value::from(*b as i8)).collect(),
        "<u8" => read!(u64, Value::from),
        "<u4" => read!(u32, Value::from),
        "<u2" => read!(u16, Value::from),
        "|u1" => data.iter().map(|b| Value::from(*b)).collect(),
        "|b1" => data.iter().map(|b| Value::Bool(*b != 0)).collect(),
        other => {
            return Err(BlueskyError::Serializer(format!(
                "numpy dtype {other:?} is not read: send little-endian numbers or booleans"
            )))
        }
    };
    Ok(values)
}

/// Flat values as nested lists of `shape` (C order).
fn nest(values: Vec<Value>, shape: &[usize]) -> Value {
    match shape {
        [] => values.into_iter().next().unwrap_or(Value::Null),
        [_] => Value::Array(values),
        [_, rest @ ..] => {
            let inner: usize = rest.iter().product();
            if inner == 0 {
                return Value::Array(Vec::new());
            }
            let mut rows = Vec::with_capacity(values.len() / inner);
            let mut values = values.into_iter();
            loop {
                let row: Vec<Value> = values.by_ref().take(inner).collect();
                if row.is_empty() {
                    break;
                }
                rows.push(nest(row, rest));
            }
            Value::Array(rows)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgpack(value: &rmpv::Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, value).expect("encodes");
        out
    }

    fn framed(name: &str, document: &[u8]) -> Vec<u8> {
        let mut frame = format!(" {name} ").into_bytes();
        frame.extend_from_slice(document);
        frame
    }

    #[test]
    fn reads_json_and_msgpack_numpy_documents() {
        let json = parse(&framed("start", br#"{"uid":"abc","scan_id":3}"#)).expect("json");
        assert_eq!(json.name, "start");
        assert_eq!(json.body["scan_id"], 3);

        use rmpv::Value as M;
        let data: Vec<u8> = [1.5f32, -2.0, f32::NAN]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let array = M::Map(vec![
            (M::Binary(b"nd".to_vec()), M::Boolean(true)),
            (M::Binary(b"type".to_vec()), M::from("<f4")),
            (M::Binary(b"kind".to_vec()), M::Binary(Vec::new())),
            (
                M::Binary(b"shape".to_vec()),
                M::Array(vec![M::from(1u8), M::from(3u8)]),
            ),
            (M::Binary(b"data".to_vec()), M::Binary(data)),
        ]);
        let scalar = M::Map(vec![
            (M::Binary(b"nd".to_vec()), M::Boolean(false)),
            (M::Binary(b"type".to_vec()), M::from("<i8")),
            (
                M::Binary(b"data".to_vec()),
                M::Binary(7i64.to_le_bytes().to_vec()),
            ),
        ]);
        let doc = M::Map(vec![
            (M::from("spectrum"), array),
            (M::from("count"), scalar),
            (M::from("big"), M::from(u64::MAX)),
        ]);
        let parsed = parse(&framed("event", &msgpack(&doc))).expect("msgpack");
        assert_eq!(
            parsed.body["spectrum"],
            serde_json::json!([[1.5, -2.0, "NaN"]])
        );
        assert_eq!(parsed.body["count"], 7);
        assert_eq!(parsed.body["big"], u64::MAX);
    }

    #[test]
    fn refuses_pickle_with_the_way_out_and_garbage_with_a_reason() {
        let pickled = framed(
            "start",
            b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94.",
        );
        let err = parse(&pickled).expect_err("pickle").to_string();
        assert!(err.contains("serializer="), "{err}");
        for (frame, expected) in [
            (b"start".to_vec(), "prefix name document"),
            (framed("start", b"[1,2]"), "neither a msgpack map"),
            (framed("start", b"{not json"), "bad JSON"),
            (framed("start", b"\x82\xa1a"), "bad msgpack"),
            (framed("st\x01rt", b"{}"), "short ASCII word"),
        ] {
            let err = parse(&frame).expect_err(expected).to_string();
            assert!(err.contains(expected), "{err:?} should say {expected:?}");
        }
    }

    #[test]
    fn hostile_msgpack_is_refused_without_recursing_or_allocating_what_it_claims() {
        // 10,000 nested one-element arrays: refused at the depth limit, no stack overflow.
        let mut deep = vec![0x81, 0xa1, b'x'];
        deep.extend(std::iter::repeat_n(0x91u8, 10_000));
        deep.push(0xc0);
        let err = parse(&framed("start", &deep))
            .expect_err("deep")
            .to_string();
        assert!(err.contains("bad msgpack"), "{err}");
        // A map header claiming 4 billion entries, with none following.
        let claims = [0x81, 0xa1, b'x', 0xdf, 0xff, 0xff, 0xff, 0xff];
        let err = parse(&framed("start", &claims))
            .expect_err("claims")
            .to_string();
        assert!(err.contains("bad msgpack"), "{err}");
        // Trailing bytes after the document.
        let err = parse(&framed("start", &[0x81, 0xa1, b'x', 0xc0, 0xc0]))
            .expect_err("trailing")
            .to_string();
        assert!(err.contains("after the msgpack document"), "{err}");
    }

    #[test]
    fn a_numpy_map_that_lies_about_its_shape_is_refused() {
        use rmpv::Value as M;
        let lying = M::Map(vec![(
            M::from("x"),
            M::Map(vec![
                (M::from("nd"), M::Boolean(true)),
                (M::from("type"), M::from("<f8")),
                (M::from("shape"), M::Array(vec![M::from(1_000_000u64)])),
                (M::from("data"), M::Binary(vec![0; 16])),
            ]),
        )]);
        let err = parse(&framed("event", &msgpack(&lying)))
            .expect_err("shape")
            .to_string();
        assert!(err.contains("holds 2 values"), "{err}");
    }
}
