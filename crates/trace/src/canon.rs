//! Canonical JSON: the exact bytes the audit chain hashes.
//!
//! - objects: members sorted by the UTF-8 bytes of their keys, written
//!   `{"k":v,"k2":v2}`; arrays `[a,b]`; no whitespace anywhere;
//! - strings: `"` and `\` escaped as `\"` and `\\`; U+0008, U+000C, U+000A,
//!   U+000D, U+0009 as `\b`, `\f`, `\n`, `\r`, `\t`; every other character
//!   below U+0020 as `\u00xx` (lowercase hex); everything else (non-ASCII,
//!   `/`, U+007F) as its own UTF-8 bytes;
//! - numbers: integers only (the range of i64 and u64), in plain decimal;
//!   a fraction or exponent is refused;
//! - `true`, `false`, `null`.
//!
//! This is what Python's `json.dumps(v, sort_keys=True, separators=(",", ":"),
//! ensure_ascii=False)` prints for the same value, so anyone can re-verify.
//! It does not depend on serde_json's map order or features.

use std::fmt::Write as _;

use serde_json::Value;

/// Deepest nesting accepted (serde_json's own parser stops at 128).
pub const MAX_DEPTH: usize = 64;

/// Why a value has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonError {
    #[error("number {0} is not an integer (canonical JSON has integers only)")]
    NotInteger(String),
    #[error("nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// The canonical JSON text of `value` (see the module documentation).
pub fn canonical_json(value: &Value) -> Result<String, CanonError> {
    let mut out = String::with_capacity(256);
    write_value(&mut out, value, 0)?;
    Ok(out)
}

fn write_value(out: &mut String, value: &Value, depth: usize) -> Result<(), CanonError> {
    if depth > MAX_DEPTH {
        return Err(CanonError::TooDeep);
    }
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                let _ = write!(out, "{i}");
            } else if let Some(u) = n.as_u64() {
                let _ = write!(out, "{u}");
            } else {
                return Err(CanonError::NotInteger(n.to_string()));
            }
        }
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item, depth + 1)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, k);
                out.push(':');
                write_value(out, v, depth + 1)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorted_compact_and_escaped() {
        let v = json!({"b": [1, -2, true, null], "a": {"z": "x\"\\\n\t\u{1}\u{7f}é/", "y": 18446744073709551615u64}});
        assert_eq!(
            canonical_json(&v).unwrap(),
            "{\"a\":{\"y\":18446744073709551615,\"z\":\"x\\\"\\\\\\n\\t\\u0001\u{7f}é/\"},\"b\":[1,-2,true,null]}"
        );
    }

    #[test]
    fn keys_sort_by_bytes() {
        let v = json!({"é": 1, "z": 2, "Z": 3, "_": 4});
        assert_eq!(canonical_json(&v).unwrap(), "{\"Z\":3,\"_\":4,\"z\":2,\"é\":1}");
    }

    #[test]
    fn floats_and_depth_refused() {
        assert!(matches!(canonical_json(&json!({"x": 1.5})), Err(CanonError::NotInteger(_))));
        let mut deep = json!(0);
        for _ in 0..100 {
            deep = json!([deep]);
        }
        assert_eq!(canonical_json(&deep), Err(CanonError::TooDeep));
    }
}
