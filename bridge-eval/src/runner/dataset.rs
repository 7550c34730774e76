//! Benchmark datasets: JSONL files in GSM8K, MATH or a generic question/answer form.
//!
//! | format | question field | gold answer |
//! |---|---|---|
//! | [`DatasetFormat::Gsm8k`] | `question` | the text after the last `####` of `answer` |
//! | [`DatasetFormat::Math`] | `problem` | `answer` when present, else the last `\boxed{…}` of `solution` |
//! | [`DatasetFormat::Generic`] | `prompt` or `question` | `answer` (a string or a number) |
//!
//! Every other field of a record is kept as its [`EvalRecord::metadata`] (e.g. `level`, `type`),
//! which the report breaks accuracies down by. Blank lines are skipped; a malformed line is a
//! [`BridgeError::Data`] naming the file, the 1-based line and the field.

use crate::verify::{ExtractMethod, ExtractOptions, extract_answer};
use bridge_core::{BridgeError, Metadata, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The layout of a dataset's records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetFormat {
    /// Detect the format from the first record (see [`DatasetFormat::detect`]).
    #[default]
    Auto,
    /// GSM8K: `question`, and `answer` — a worked solution ending in `#### N`.
    Gsm8k,
    /// MATH: `problem`, `solution` with a `\boxed{…}` answer, optional `answer`.
    Math,
    /// `prompt` or `question`, and `answer`.
    Generic,
}

impl DatasetFormat {
    /// The format a record looks like: `problem` → MATH; `question` with an `answer` string
    /// containing `####` → GSM8K; `prompt` or `question` with an `answer` → generic.
    pub fn detect(record: &serde_json::Map<String, Value>) -> Option<Self> {
        if record.contains_key("problem") {
            return Some(Self::Math);
        }
        let answer = record.get("answer")?;
        if record.contains_key("question") && answer.as_str().is_some_and(|a| a.contains("####")) {
            return Some(Self::Gsm8k);
        }
        (record.contains_key("prompt") || record.contains_key("question")).then_some(Self::Generic)
    }

    /// The lower-case name (`auto`, `gsm8k`, `math`, `generic`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Gsm8k => "gsm8k",
            Self::Math => "math",
            Self::Generic => "generic",
        }
    }
}

impl std::str::FromStr for DatasetFormat {
    type Err = BridgeError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "gsm8k" | "gsm" => Ok(Self::Gsm8k),
            "math" => Ok(Self::Math),
            "generic" => Ok(Self::Generic),
            other => Err(BridgeError::config(
                "format",
                format!("unknown dataset format `{other}` (expected auto, gsm8k, math or generic)"),
            )),
        }
    }
}

/// One benchmark problem.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// `file:line` (the file name and the 1-based line of the record).
    pub id: String,
    /// The question, before any prompt template.
    pub question: String,
    /// The gold final answer (e.g. `72`, `\frac{1}{2}`).
    pub gold: String,
    /// The full reference solution, when the format has one (GSM8K `answer`, MATH `solution`).
    pub solution: Option<String>,
    /// The record's other fields (`level`, `type`, …).
    pub metadata: Metadata,
}

impl EvalRecord {
    /// The metadata field `field` as a category label: strings as they are, numbers and
    /// booleans printed; `None` when absent, null or structured.
    pub fn category(&self, field: &str) -> Option<String> {
        match self.metadata.get(field)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

/// A loaded benchmark.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalDataset {
    /// A short name for reports (the file stem for files).
    pub name: String,
    /// The file it was read from, if any.
    pub path: Option<PathBuf>,
    /// The resolved format (never [`DatasetFormat::Auto`] once records were read).
    pub format: DatasetFormat,
    /// The records, in file order.
    pub records: Vec<EvalRecord>,
}

impl EvalDataset {
    /// A dataset from records built in code.
    pub fn from_records(name: impl Into<String>, format: DatasetFormat, records: Vec<EvalRecord>) -> Self {
        Self { name: name.into(), path: None, format, records }
    }

    /// Reads a JSONL file in `format` ([`DatasetFormat::Auto`] detects it from the first record).
    pub fn load(path: impl AsRef<Path>, format: DatasetFormat) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| BridgeError::io(path, e))?;
        let mut ds = Self::parse(path, &text, format)?;
        ds.path = Some(path.to_path_buf());
        Ok(ds)
    }

    /// Parses JSONL `text` as if read from `path` (used in ids and error messages).
    pub fn parse(path: impl AsRef<Path>, text: &str, format: DatasetFormat) -> Result<Self> {
        let path = path.as_ref();
        let file = path.file_name().map_or_else(|| path.display().to_string(), |f| f.to_string_lossy().into_owned());
        let name = path.file_stem().map_or_else(|| file.clone(), |s| s.to_string_lossy().into_owned());
        let objects = bridge_core::jsonl::parse_objects(path, text, None)?;
        let format = match (format, objects.first()) {
            (DatasetFormat::Auto, Some(first)) => DatasetFormat::detect(&first.fields).ok_or_else(|| {
                BridgeError::data(
                    path,
                    first.line,
                    None,
                    "cannot detect the format: expected `question`+`answer` (GSM8K), `problem`+`solution` \
                     (MATH) or `prompt`/`question`+`answer` (generic)",
                )
            })?,
            (f, _) => f,
        };
        let records = objects
            .into_iter()
            .map(|o| parse_record(o.fields, format, path, o.line, &file))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { name, path: None, format, records })
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there is no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// Takes `key` out of `obj` as a string; numbers are accepted (and printed) when `numbers`.
fn take_text(
    obj: &mut serde_json::Map<String, Value>,
    key: &str,
    numbers: bool,
    path: &Path,
    line: usize,
) -> Result<Option<String>> {
    match obj.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) if numbers => Ok(Some(n.to_string())),
        Some(other) => Err(BridgeError::data(
            path,
            line,
            Some(key),
            format!(
                "expected a {}, got {}",
                if numbers { "string or number" } else { "string" },
                bridge_core::jsonl::kind(&other)
            ),
        )),
    }
}

fn required(value: Option<String>, key: &str, path: &Path, line: usize) -> Result<String> {
    match value {
        Some(s) if !s.trim().is_empty() => Ok(s),
        Some(_) => Err(BridgeError::data(path, line, Some(key), "is empty")),
        None => Err(BridgeError::data(path, line, Some(key), "is missing")),
    }
}

/// The text after the last `####` of a GSM8K solution, trimmed.
pub fn gsm8k_gold(solution: &str) -> Option<&str> {
    let (_, after) = solution.rsplit_once("####")?;
    let after = after.trim();
    (!after.is_empty()).then_some(after)
}

/// The contents of the last well-formed `\boxed{…}` (or `\fbox{…}`) of a MATH solution.
pub fn last_boxed(solution: &str) -> Option<String> {
    let opts = ExtractOptions { tail_chars: usize::MAX, ..ExtractOptions::default() };
    extract_answer(solution, &opts).filter(|e| e.method == ExtractMethod::Boxed).map(|e| e.text)
}

fn parse_record(
    mut obj: serde_json::Map<String, Value>,
    format: DatasetFormat,
    path: &Path,
    line: usize,
    file: &str,
) -> Result<EvalRecord> {
    let (question, gold, solution) = match format {
        DatasetFormat::Gsm8k => {
            let question = required(take_text(&mut obj, "question", false, path, line)?, "question", path, line)?;
            let answer = required(take_text(&mut obj, "answer", false, path, line)?, "answer", path, line)?;
            let gold = gsm8k_gold(&answer)
                .ok_or_else(|| BridgeError::data(path, line, Some("answer"), "has no `#### N` final answer"))?
                .to_owned();
            (question, gold, Some(answer))
        }
        DatasetFormat::Math => {
            let question = required(take_text(&mut obj, "problem", false, path, line)?, "problem", path, line)?;
            let solution = take_text(&mut obj, "solution", false, path, line)?;
            let answer = take_text(&mut obj, "answer", true, path, line)?.filter(|a| !a.trim().is_empty());
            let gold = match (answer, &solution) {
                (Some(a), _) => a.trim().to_owned(),
                (None, Some(s)) => last_boxed(s).ok_or_else(|| {
                    BridgeError::data(
                        path,
                        line,
                        Some("solution"),
                        "has no \\boxed{…} answer (and there is no `answer`)",
                    )
                })?,
                (None, None) => {
                    return Err(BridgeError::data(path, line, Some("solution"), "is missing (and so is `answer`)"));
                }
            };
            (question, gold, solution)
        }
        DatasetFormat::Generic | DatasetFormat::Auto => {
            let prompt = take_text(&mut obj, "prompt", false, path, line)?;
            let question = match prompt {
                Some(p) => p,
                None => required(take_text(&mut obj, "question", false, path, line)?, "question", path, line)?,
            };
            let question = required(Some(question), "prompt", path, line)?;
            let gold = required(take_text(&mut obj, "answer", true, path, line)?, "answer", path, line)?;
            (question, gold.trim().to_owned(), None)
        }
    };
    Ok(EvalRecord { id: format!("{file}:{line}"), question, gold, solution, metadata: obj })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_and_gold_helpers() {
        let obj = |s: &str| serde_json::from_str::<serde_json::Map<String, Value>>(s).unwrap();
        assert_eq!(DatasetFormat::detect(&obj(r#"{"question":"q","answer":"x #### 3"}"#)), Some(DatasetFormat::Gsm8k));
        assert_eq!(DatasetFormat::detect(&obj(r#"{"problem":"q","solution":"s"}"#)), Some(DatasetFormat::Math));
        assert_eq!(DatasetFormat::detect(&obj(r#"{"question":"q","answer":3}"#)), Some(DatasetFormat::Generic));
        assert_eq!(DatasetFormat::detect(&obj(r#"{"prompt":"q","answer":"3"}"#)), Some(DatasetFormat::Generic));
        assert_eq!(DatasetFormat::detect(&obj(r#"{"text":"q"}"#)), None);
        assert_eq!(gsm8k_gold("a #### 1 #### 1,234 "), Some("1,234"));
        assert_eq!(gsm8k_gold("no marker"), None);
        assert_eq!(last_boxed(r"\boxed{1} then \boxed{\frac{1}{2}}").as_deref(), Some(r"\frac{1}{2}"));
        assert_eq!(last_boxed("none"), None);
        assert_eq!("GSM8K".parse::<DatasetFormat>().unwrap(), DatasetFormat::Gsm8k);
        assert!("csv".parse::<DatasetFormat>().is_err());
    }
}
