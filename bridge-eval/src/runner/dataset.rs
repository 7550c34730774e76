//! Benchmark datasets: JSONL files in any of [`bridge_core::dataset`]'s forms (GSM8K, MATH,
//! generic question/answer, prompt/completion with an `answer`), detected and read the same way
//! as training data: the question is the record's question, the gold answer its final answer
//! (GSM8K: the text after the last `####`, thousands commas removed; MATH: `answer`, else the last
//! `\boxed{…}` of `solution`; otherwise `answer`). Conversations (`messages`) have no single
//! question and are refused.
//!
//! Every field the format does not read is kept as the record's [`EvalRecord::metadata`] (e.g.
//! `level`, `type`, `id`), which the report breaks accuracies down by. Blank lines are skipped; a
//! malformed line is a [`BridgeError::Data`] naming the file, the 1-based line and the field.

use bridge_core::dataset::{DataFormat, Record, parse_records};
use bridge_core::{BridgeError, Metadata, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

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
    /// The resolved format (never [`DataFormat::Auto`] once records were read).
    pub format: DataFormat,
    /// The records, in file order.
    pub records: Vec<EvalRecord>,
}

impl EvalDataset {
    /// A dataset from records built in code.
    pub fn from_records(name: impl Into<String>, format: DataFormat, records: Vec<EvalRecord>) -> Self {
        Self { name: name.into(), path: None, format, records }
    }

    /// Reads a JSONL file in `format` ([`DataFormat::Auto`] detects it from the first record).
    pub fn load(path: impl AsRef<Path>, format: DataFormat) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| BridgeError::io(path, e))?;
        let mut ds = Self::parse(path, &text, format)?;
        ds.path = Some(path.to_path_buf());
        Ok(ds)
    }

    /// Parses JSONL `text` as if read from `path` (used in ids and error messages).
    pub fn parse(path: impl AsRef<Path>, text: &str, format: DataFormat) -> Result<Self> {
        let path = path.as_ref();
        let file = path.file_name().map_or_else(|| path.display().to_string(), |f| f.to_string_lossy().into_owned());
        let name = path.file_stem().map_or_else(|| file.clone(), |s| s.to_string_lossy().into_owned());
        let records = parse_records(path, text, format, None)?;
        let format = records.first().map_or(format, |r| r.format);
        let records = records.iter().map(|r| eval_record(r, &file)).collect::<Result<Vec<_>>>()?;
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

/// A benchmark problem from a dataset record, its id `file:line`.
fn eval_record(r: &Record, file: &str) -> Result<EvalRecord> {
    if r.format == DataFormat::Messages {
        return Err(r.err(
            Some("messages"),
            "conversations cannot be evaluated: give each problem a `question` (or `prompt`) and an `answer`",
        ));
    }
    let question = r.question()?.to_owned();
    let solution = r.solution()?;
    let gold = r.final_answer()?;
    Ok(EvalRecord { id: format!("{file}:{}", r.line), question, gold, solution, metadata: r.metadata(true) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_become_problems_and_conversations_are_refused() {
        let text = "{\"prompt\":\"1+1\",\"completion\":\"2\",\"answer\":2,\"level\":1}\n";
        let d = EvalDataset::parse("pc.jsonl", text, DataFormat::Auto).unwrap();
        assert_eq!(d.format, DataFormat::PromptCompletion);
        let r = &d.records[0];
        assert_eq!((r.id.as_str(), r.question.as_str(), r.gold.as_str()), ("pc.jsonl:1", "1+1", "2"));
        assert_eq!((r.solution.as_deref(), r.category("level").as_deref()), (Some("2"), Some("1")));

        let text = "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"answer\":1}\n";
        match EvalDataset::parse("m.jsonl", text, DataFormat::Auto).unwrap_err() {
            BridgeError::Data { line: 1, field: Some(f), .. } => assert_eq!(f, "messages"),
            other => panic!("{other}"),
        }
    }
}
