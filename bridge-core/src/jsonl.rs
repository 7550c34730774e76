//! JSON Lines: the one line reader behind every dataset format (SFT/RL data in `bridge-sft`,
//! benchmarks in `bridge-eval`). Each crate maps the objects to its own records; the file, line
//! and JSON errors are reported here, the same way for all of them.

use crate::error::{BridgeError, Result};
use serde_json::{Map, Value};
use std::path::Path;

/// One JSON object of a JSONL file.
#[derive(Clone, Debug, PartialEq)]
pub struct JsonlObject {
    /// 1-based line number.
    pub line: usize,
    /// The object.
    pub fields: Map<String, Value>,
}

/// Reads the file at `path` (UTF-8, a leading byte-order mark is ignored) and parses it with
/// [`parse_objects`].
pub fn read_objects(path: impl AsRef<Path>, max_objects: Option<usize>) -> Result<Vec<JsonlObject>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| BridgeError::io(path, e))?;
    parse_objects(path, &text, max_objects)
}

/// The JSON objects of JSONL `text` (at most `max_objects`) as if read from `path` (named in
/// errors). Blank lines are skipped; a line that is not valid JSON, or not an object, is a
/// [`BridgeError::Data`] naming the file and the line. An empty file gives an empty list: whether
/// that is an error is the caller's decision.
pub fn parse_objects(path: impl AsRef<Path>, text: &str, max_objects: Option<usize>) -> Result<Vec<JsonlObject>> {
    let path = path.as_ref();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        if max_objects.is_some_and(|m| out.len() >= m) {
            break;
        }
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let value: Value =
            serde_json::from_str(raw).map_err(|e| BridgeError::data(path, line, None, format!("invalid JSON: {e}")))?;
        match value {
            Value::Object(fields) => out.push(JsonlObject { line, fields }),
            other => {
                return Err(BridgeError::data(
                    path,
                    line,
                    None,
                    format!("expected a JSON object, got {}", kind(&other)),
                ));
            }
        }
    }
    Ok(out)
}

/// What a JSON value is, for error messages: `"a string"`, `"an array"`, `"null"`, …
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_lines_and_errors() {
        let text = "\u{feff}{\"a\":1}\n\n  \n{\"b\":\"x\"}\n";
        let objs = parse_objects("d.jsonl", text, None).unwrap();
        assert_eq!(objs.iter().map(|o| o.line).collect::<Vec<_>>(), vec![1, 4]);
        assert_eq!(objs[1].fields["b"], "x");
        assert_eq!(parse_objects("d.jsonl", text, Some(1)).unwrap().len(), 1);
        assert!(parse_objects("d.jsonl", "", None).unwrap().is_empty());

        let err = parse_objects("d.jsonl", "{\"a\":1}\n{oops\n", None).unwrap_err();
        assert!(matches!(&err, BridgeError::Data { line: 2, .. }), "{err:?}");
        assert!(err.to_string().contains("d.jsonl") && err.to_string().contains("invalid JSON"), "{err}");
        let err = parse_objects("d.jsonl", "[1, 2]\n", None).unwrap_err();
        assert!(err.to_string().contains("expected a JSON object, got an array"), "{err}");
        assert!(matches!(read_objects("/nonexistent/x.jsonl", None), Err(BridgeError::Io { .. })));
        assert_eq!(kind(&Value::Null), "null");
    }
}
