//! Dataset records: the one place where the workspace's JSONL forms are detected and where a
//! record's question, worked solution and final (reference) answer are read. SFT/RL loading
//! (`bridge-sft`'s `DatasetConfig`) and benchmark loading (`bridge-eval`'s `EvalDataset`) both
//! go through [`Record`].
//!
//! | [`DataFormat`] | keys | question | worked solution (SFT completion) | final answer (RL reference, evaluation gold) |
//! |---|---|---|---|---|
//! | `gsm8k` | `question`, `answer` | `question` | `answer` (ending in `#### N`) | the text after the last `####`, trimmed, thousands commas removed ([`gsm8k_final_answer`]) |
//! | `math` | `problem`, `solution` and/or `answer` | `problem` | `solution` | `answer` when present, else the content of the last `\boxed{…}` of `solution` ([`last_boxed`]) |
//! | `prompt_completion` | `prompt`, `completion`, optional `answer` | `prompt` | `completion` | `answer` |
//! | `messages` | `messages: [{role, content}, …]`, optional `answer` | the conversation before the last assistant message | that message | `answer` |
//! | `generic` | `prompt` or `question`, and `answer` | `prompt`, else `question` | `answer` | `answer` |
//!
//! [`DataFormat::detect`] resolves [`DataFormat::Auto`] from a file's first record. A malformed
//! record is a [`BridgeError::Data`] naming the file, the 1-based line and the field.

use crate::data::{Metadata, RlPrompt, SftExample};
use crate::error::{BridgeError, Result};
use crate::jsonl::kind as type_name;
use crate::policy::{ChatMessage, TextCodec};
use crate::prompt::PromptTemplate;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// The form of the records of a JSONL file. The config and command-line spellings are the
/// snake-case names (`auto`, `gsm8k`, `math`, `prompt_completion`, `messages`, `generic`);
/// `gsm` is accepted for `gsm8k`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataFormat {
    /// Detect the form from the keys of the file's first record ([`DataFormat::detect`]).
    #[default]
    Auto,
    /// GSM8K: `question`, and `answer` — a worked solution ending in `#### N`.
    #[serde(alias = "gsm")]
    Gsm8k,
    /// MATH: `problem`, `solution` (with `\boxed{…}`) and/or `answer`.
    Math,
    /// `prompt` / `completion`, optional `answer`.
    PromptCompletion,
    /// `messages`: a conversation whose last message is the assistant's completion; optional `answer`.
    Messages,
    /// `prompt` or `question`, and `answer` (a string or a number): question/answer pairs
    /// without a worked solution.
    Generic,
}

impl DataFormat {
    /// The format a record with these keys is in, checked in this order: `messages` →
    /// messages; `prompt`+`completion` → prompt/completion; `problem` → MATH; `question` with an
    /// `answer` string containing `####` → GSM8K; `prompt` or `question` with an `answer` →
    /// generic. `None` when none applies.
    pub fn detect(record: &Map<String, Value>) -> Option<DataFormat> {
        let has = |k: &str| record.contains_key(k);
        if has("messages") {
            Some(Self::Messages)
        } else if has("prompt") && has("completion") {
            Some(Self::PromptCompletion)
        } else if has("problem") {
            Some(Self::Math)
        } else if has("question") && record.get("answer").and_then(Value::as_str).is_some_and(|a| a.contains("####")) {
            Some(Self::Gsm8k)
        } else if (has("prompt") || has("question")) && has("answer") {
            Some(Self::Generic)
        } else {
            None
        }
    }

    /// The config spelling (`auto`, `gsm8k`, `math`, `prompt_completion`, `messages`, `generic`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Gsm8k => "gsm8k",
            Self::Math => "math",
            Self::PromptCompletion => "prompt_completion",
            Self::Messages => "messages",
            Self::Generic => "generic",
        }
    }

    /// Every format, in the order of the config documentation.
    pub const ALL: [DataFormat; 6] =
        [Self::Auto, Self::Gsm8k, Self::Math, Self::PromptCompletion, Self::Messages, Self::Generic];

    /// The record fields this format reads (question, solution, answer); the others are the
    /// record's metadata.
    pub fn text_keys(self) -> &'static [&'static str] {
        match self {
            Self::Auto => &[],
            Self::Gsm8k => &["question", "answer"],
            Self::Math => &["problem", "solution", "answer"],
            Self::PromptCompletion => &["prompt", "completion", "answer"],
            Self::Messages => &["messages", "answer"],
            Self::Generic => &["prompt", "question", "answer"],
        }
    }
}

impl std::fmt::Display for DataFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DataFormat {
    type Err = BridgeError;

    /// The config spellings, case-insensitive, plus `gsm` for `gsm8k`.
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        if s == "gsm" {
            return Ok(Self::Gsm8k);
        }
        Self::ALL.into_iter().find(|f| f.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|f| f.name()).collect();
            BridgeError::config(
                "format",
                format!("unknown dataset format `{s}` (expected one of {})", names.join(", ")),
            )
        })
    }
}

/// One record of a JSONL file, with its resolved format.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// The file it came from.
    pub path: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// The file's format (never [`DataFormat::Auto`]).
    pub format: DataFormat,
    /// The JSON object.
    pub fields: Map<String, Value>,
}

/// Reads the records of the JSONL file at `path` with [`parse_records`].
pub fn read_records(path: impl AsRef<Path>, format: DataFormat, max_records: Option<usize>) -> Result<Vec<Record>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| BridgeError::io(path, e))?;
    parse_records(path, &text, format, max_records)
}

/// The records of JSONL `text` (at most `max_records`) as if read from `path` (named in ids and
/// errors), resolving [`DataFormat::Auto`] from the first record. Blank lines are skipped; a
/// line that is not a JSON object, or a first record whose format cannot be detected, is an error
/// naming the file and line. Text without any record gives an empty list.
pub fn parse_records(
    path: impl AsRef<Path>,
    text: &str,
    format: DataFormat,
    max_records: Option<usize>,
) -> Result<Vec<Record>> {
    let path = path.as_ref();
    let objects = crate::jsonl::parse_objects(path, text, max_records)?;
    let format = match (format, objects.first()) {
        (DataFormat::Auto, Some(first)) => DataFormat::detect(&first.fields).ok_or_else(|| {
            let keys: Vec<&str> = first.fields.keys().map(String::as_str).collect();
            BridgeError::data(
                path,
                first.line,
                None,
                format!(
                    "cannot detect the data format from the keys {keys:?}: expected `messages`, \
                     `prompt`+`completion`, `question`+`answer` with `#### N` (gsm8k), `problem`+`solution` \
                     (math) or `prompt`/`question`+`answer` (generic); or set `format`"
                ),
            )
        })?,
        (f, _) => f,
    };
    Ok(objects
        .into_iter()
        .map(|o| Record { path: path.to_path_buf(), line: o.line, format, fields: o.fields })
        .collect())
}

impl Record {
    /// A data error naming this record (file and line) and `field`.
    pub fn err(&self, field: Option<&str>, message: impl Into<String>) -> BridgeError {
        BridgeError::data(&self.path, self.line, field, message)
    }

    /// `file_name:line`.
    pub fn location(&self) -> String {
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        format!("{name}:{}", self.line)
    }

    /// The record's identifier: its `id` field (string or integer), else [`Record::location`].
    pub fn id(&self) -> String {
        match self.fields.get("id") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => self.location(),
        }
    }

    /// The fields the format does not read (nor `id` when `with_id` is false), in file order.
    pub fn metadata(&self, with_id: bool) -> Metadata {
        let skip = self.format.text_keys();
        self.fields
            .iter()
            .filter(|(k, _)| !skip.contains(&k.as_str()) && (with_id || k.as_str() != "id"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The string field `name`; an error if it is missing or not a string.
    pub fn str_field(&self, name: &str) -> Result<&str> {
        match self.fields.get(name) {
            Some(Value::String(s)) => Ok(s),
            None => Err(self.err(Some(name), format!("missing (required by the {} format)", self.format.name()))),
            Some(v) => Err(self.err(Some(name), format!("expected a string, got {}", type_name(v)))),
        }
    }

    /// The optional answer-like field `name`: a string or a number, as written (numbers printed);
    /// `None` when missing or null.
    fn answer_text(&self, name: &str) -> Result<Option<String>> {
        match self.fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(v) => Err(self.err(Some(name), format!("expected a string or a number, got {}", type_name(v)))),
        }
    }

    /// The `answer` field trimmed, required and non-empty.
    fn required_answer(&self) -> Result<String> {
        match self.answer_text("answer")?.map(|a| a.trim().to_owned()) {
            Some(a) if !a.is_empty() => Ok(a),
            Some(_) => Err(self.err(Some("answer"), "is empty")),
            None => Err(self.err(
                Some("answer"),
                format!("missing (a record of the {} format needs a final answer)", self.format.name()),
            )),
        }
    }

    /// The field the question comes from (`question`, `problem`, `prompt`, `messages`).
    pub fn question_key(&self) -> &'static str {
        match self.format {
            DataFormat::Auto | DataFormat::Gsm8k => "question",
            DataFormat::Math => "problem",
            DataFormat::PromptCompletion => "prompt",
            DataFormat::Messages => "messages",
            DataFormat::Generic if self.fields.contains_key("prompt") => "prompt",
            DataFormat::Generic => "question",
        }
    }

    /// The field the worked solution comes from (`answer`, `solution`, `completion`, `messages`).
    pub fn solution_key(&self) -> &'static str {
        match self.format {
            DataFormat::Auto | DataFormat::Gsm8k | DataFormat::Generic => "answer",
            DataFormat::Math => "solution",
            DataFormat::PromptCompletion => "completion",
            DataFormat::Messages => "messages",
        }
    }

    /// The question, before any prompt template: a non-blank string. The messages format has
    /// none (its prompt is a conversation, [`Record::messages`]).
    pub fn question(&self) -> Result<&str> {
        if self.format == DataFormat::Messages {
            return Err(self.err(Some("messages"), "a conversation has no single question"));
        }
        let key = self.question_key();
        let q = self.str_field(key)?;
        if q.trim().is_empty() {
            return Err(self.err(Some(key), "is empty"));
        }
        Ok(q)
    }

    /// The final answer: the RL reference and the evaluation gold (see the module table).
    pub fn final_answer(&self) -> Result<String> {
        match self.format {
            DataFormat::Gsm8k => gsm8k_final_answer(self.str_field("answer")?)
                .ok_or_else(|| self.err(Some("answer"), "no final answer after `####`")),
            DataFormat::Math => match self.answer_text("answer")?.map(|a| a.trim().to_owned()) {
                Some(a) if !a.is_empty() => Ok(a),
                _ => last_boxed(self.str_field("solution")?).ok_or_else(|| {
                    self.err(Some("solution"), "no `answer` field and no complete `\\boxed{…}` in the solution")
                }),
            },
            DataFormat::PromptCompletion | DataFormat::Messages | DataFormat::Generic => self.required_answer(),
            DataFormat::Auto => Err(self.err(None, "the record's format was not resolved")),
        }
    }

    /// The worked solution, when the record has one: GSM8K `answer`, MATH `solution` (optional),
    /// `completion`, the conversation's last message when it is the assistant's; generic records
    /// have none.
    pub fn solution(&self) -> Result<Option<String>> {
        match self.format {
            DataFormat::Gsm8k | DataFormat::PromptCompletion => {
                Ok(Some(self.str_field(self.solution_key())?.to_owned()))
            }
            DataFormat::Math if self.fields.contains_key("solution") => {
                Ok(Some(self.str_field("solution")?.to_owned()))
            }
            DataFormat::Math | DataFormat::Generic => Ok(None),
            DataFormat::Messages => Ok(self.messages()?.pop().filter(|m| m.role == "assistant").map(|m| m.content)),
            DataFormat::Auto => Err(self.err(None, "the record's format was not resolved")),
        }
    }

    /// The `messages` field as a conversation: a non-empty array of `{role, content}` objects.
    pub fn messages(&self) -> Result<Vec<ChatMessage>> {
        let list = match self.fields.get("messages") {
            Some(Value::Array(list)) => list,
            None => return Err(self.err(Some("messages"), "missing (required by the messages format)")),
            Some(v) => return Err(self.err(Some("messages"), format!("expected an array, got {}", type_name(v)))),
        };
        if list.is_empty() {
            return Err(self.err(Some("messages"), "the conversation is empty"));
        }
        list.iter()
            .enumerate()
            .map(|(i, m)| {
                let Value::Object(obj) = m else {
                    return Err(
                        self.err(Some(&format!("messages[{i}]")), format!("expected an object, got {}", type_name(m)))
                    );
                };
                let get = |key: &str| -> Result<String> {
                    let field = format!("messages[{i}].{key}");
                    match obj.get(key) {
                        Some(Value::String(s)) => Ok(s.clone()),
                        None => Err(self.err(Some(&field), "missing")),
                        Some(v) => Err(self.err(Some(&field), format!("expected a string, got {}", type_name(v)))),
                    }
                };
                Ok(ChatMessage { role: get("role")?, content: get("content")? })
            })
            .collect()
    }

    /// The rendered prompt and the completion of a supervised record (the completion is the
    /// worked solution; a generic record's is its `answer`, as written).
    fn prompt_and_completion(&self, template: &PromptTemplate, codec: &dyn TextCodec) -> Result<(String, String)> {
        let question = |r: &Self| -> Result<String> { template.render_question(r.question()?, codec) };
        let (prompt, completion) = match self.format {
            DataFormat::Gsm8k | DataFormat::Math | DataFormat::PromptCompletion => {
                (question(self)?, self.str_field(self.solution_key())?.to_owned())
            }
            DataFormat::Generic => (
                question(self)?,
                self.answer_text("answer")?
                    .ok_or_else(|| self.err(Some("answer"), "missing (required by the generic format)"))?,
            ),
            DataFormat::Messages => {
                let mut messages = self.messages()?;
                let last = messages.pop().ok_or_else(|| self.err(Some("messages"), "the conversation is empty"))?;
                if last.role != "assistant" {
                    return Err(self.err(
                        Some("messages"),
                        format!("the last message must come from the assistant, not `{}`", last.role),
                    ));
                }
                (template.render_conversation(&messages, codec)?, last.content)
            }
            DataFormat::Auto => return Err(self.err(None, "the record's format was not resolved")),
        };
        Ok((prompt, completion))
    }

    /// The record as a supervised example (`D_SFT`): rendered prompt, completion (reasoning and
    /// answer).
    pub fn to_sft_example(&self, template: &PromptTemplate, codec: &dyn TextCodec) -> Result<SftExample> {
        let (prompt, completion) = self.prompt_and_completion(template, codec)?;
        Ok(SftExample { id: self.id(), prompt, completion })
    }

    /// The record as an RL prompt (`D_RL`): the same rendered prompt, the final answer as
    /// reference, and the worked solution as demonstration when the record has one. Keys the
    /// format does not read go to the metadata, plus `format` and `source` (`file_name:line`)
    /// unless the record has keys of those names.
    pub fn to_rl_prompt(&self, template: &PromptTemplate, codec: &dyn TextCodec) -> Result<RlPrompt> {
        let prompt = match self.format {
            DataFormat::Messages => {
                let mut messages = self.messages()?;
                if messages.last().is_some_and(|m| m.role == "assistant") {
                    messages.pop();
                }
                template.render_conversation(&messages, codec)?
            }
            _ => template.render_question(self.question()?, codec)?,
        };
        let demonstration = self.solution()?;
        let reference = self.final_answer()?;
        let mut metadata = self.metadata(false);
        metadata.entry("format").or_insert_with(|| Value::String(self.format.name().into()));
        metadata.entry("source").or_insert_with(|| Value::String(self.location()));
        Ok(RlPrompt { id: self.id(), prompt, reference, metadata, demonstration })
    }
}

/// The final answer of a GSM8K solution: the text after its last `####`, trimmed, with thousands
/// separators removed (`"#### 1,234"` → `"1234"`); `None` when there is no `####` or nothing after it.
pub fn gsm8k_final_answer(answer: &str) -> Option<String> {
    let (_, tail) = answer.rsplit_once("####")?;
    let tail = strip_thousands_commas(tail.trim());
    (!tail.is_empty()).then_some(tail)
}

/// Removes every comma that sits between a digit and exactly three digits (`12,345.6` → `12345.6`),
/// leaving other commas (`(1, 2)`) alone.
pub fn strip_thousands_commas(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    for (i, &c) in chars.iter().enumerate() {
        if c == ',' && i > 0 && chars[i - 1].is_ascii_digit() {
            let next3 = chars.get(i + 1..i + 4).is_some_and(|s| s.iter().all(char::is_ascii_digit));
            let then_not_digit = chars.get(i + 4).is_none_or(|d| !d.is_ascii_digit());
            if next3 && then_not_digit {
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// The content of the last complete `\boxed{…}` (or `\fbox{…}`) of `text`, with nested braces
/// matched (escaped `\{` and `\}` do not count), trimmed; a box whose brace is never closed is
/// skipped for an earlier one. `None` if there is none.
pub fn last_boxed(text: &str) -> Option<String> {
    let mut starts: Vec<usize> =
        ["\\boxed{", "\\fbox{"].iter().flat_map(|pat| text.match_indices(pat).map(|(i, _)| i + pat.len())).collect();
    starts.sort_unstable();
    starts.into_iter().rev().find_map(|start| {
        let mut depth = 1usize;
        let mut escaped = false;
        for (offset, c) in text[start..].char_indices() {
            if escaped {
                escaped = false;
                continue;
            }
            match c {
                '\\' => escaped = true,
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        let inner = text[start..start + offset].trim();
                        return (!inner.is_empty()).then(|| inner.to_owned());
                    }
                }
                _ => {}
            }
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::CharCodec;

    fn obj(s: &str) -> Map<String, Value> {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn gsm8k_answers_are_extracted() {
        assert_eq!(gsm8k_final_answer("a\nb\n#### 72").as_deref(), Some("72"));
        assert_eq!(gsm8k_final_answer("x #### 1,234,567 ").as_deref(), Some("1234567"));
        assert_eq!(gsm8k_final_answer("a #### 1 #### 1,234 ").as_deref(), Some("1234"));
        assert_eq!(gsm8k_final_answer("#### -3.5").as_deref(), Some("-3.5"));
        assert_eq!(gsm8k_final_answer("no marker"), None);
        assert_eq!(gsm8k_final_answer("#### "), None);
        assert_eq!(strip_thousands_commas("(1, 2) and 1,2345 and 12,345.5"), "(1, 2) and 1,2345 and 12345.5");
    }

    #[test]
    fn last_boxed_matches_braces() {
        assert_eq!(last_boxed("so \\boxed{1} then \\boxed{\\frac{1}{2}}.").as_deref(), Some("\\frac{1}{2}"));
        assert_eq!(last_boxed("\\fbox{ 7 }").as_deref(), Some("7"));
        assert_eq!(last_boxed("\\boxed{\\{1,2\\}}").as_deref(), Some("\\{1,2\\}"));
        assert_eq!(last_boxed("\\boxed{unclosed {x}"), None);
        assert_eq!(last_boxed("\\boxed{3} and \\boxed{unclosed").as_deref(), Some("3"), "an unclosed box is skipped");
        assert_eq!(last_boxed("\\fbox{1} \\boxed{2}").as_deref(), Some("2"));
        assert_eq!(last_boxed("\\boxed{ }"), None);
        assert_eq!(last_boxed("nothing"), None);
    }

    #[test]
    fn detection_spellings_and_serde() {
        assert_eq!(DataFormat::detect(&obj(r#"{"question":"q","answer":"a #### 3"}"#)), Some(DataFormat::Gsm8k));
        assert_eq!(DataFormat::detect(&obj(r#"{"question":"q","answer":"3"}"#)), Some(DataFormat::Generic));
        assert_eq!(DataFormat::detect(&obj(r#"{"question":"q","answer":3}"#)), Some(DataFormat::Generic));
        assert_eq!(DataFormat::detect(&obj(r#"{"prompt":"q","answer":"3"}"#)), Some(DataFormat::Generic));
        assert_eq!(DataFormat::detect(&obj(r#"{"problem":"q","solution":"a"}"#)), Some(DataFormat::Math));
        assert_eq!(DataFormat::detect(&obj(r#"{"problem":"q","answer":1}"#)), Some(DataFormat::Math));
        assert_eq!(DataFormat::detect(&obj(r#"{"prompt":"q","completion":"a"}"#)), Some(DataFormat::PromptCompletion));
        assert_eq!(DataFormat::detect(&obj(r#"{"messages":[]}"#)), Some(DataFormat::Messages));
        assert_eq!(DataFormat::detect(&obj(r#"{"text":"q"}"#)), None);
        assert_eq!(DataFormat::detect(&obj(r#"{"question":"q"}"#)), None);

        for f in DataFormat::ALL {
            assert_eq!(f.name().parse::<DataFormat>().unwrap(), f);
            assert_eq!(serde_json::to_string(&f).unwrap(), format!("\"{f}\""));
            assert_eq!(serde_json::from_str::<DataFormat>(&format!("\"{f}\"")).unwrap(), f);
        }
        assert_eq!("GSM".parse::<DataFormat>().unwrap(), DataFormat::Gsm8k);
        assert_eq!(serde_json::from_str::<DataFormat>("\"gsm\"").unwrap(), DataFormat::Gsm8k);
        let e = "csv".parse::<DataFormat>().unwrap_err().to_string();
        assert!(e.contains("csv") && e.contains("prompt_completion"), "{e}");
    }

    #[test]
    fn records_give_question_solution_and_final_answer() {
        let text = "{\"question\":\"Q?\",\"answer\":\"so\\n#### 1,000\",\"level\":2,\"id\":9}\n";
        let r = &parse_records("d/g.jsonl", text, DataFormat::Auto, None).unwrap()[0];
        assert_eq!((r.format, r.id(), r.location()), (DataFormat::Gsm8k, "9".to_owned(), "g.jsonl:1".to_owned()));
        assert_eq!(r.question().unwrap(), "Q?");
        assert_eq!(r.solution().unwrap().as_deref(), Some("so\n#### 1,000"));
        assert_eq!(r.final_answer().unwrap(), "1000");
        assert_eq!(r.metadata(true), obj(r#"{"level":2,"id":9}"#));
        assert_eq!(r.metadata(false), obj(r#"{"level":2}"#));

        let text = "{\"problem\":\"P\",\"solution\":\"\\\\boxed{5}\"}\n{\"problem\":\"P\",\"answer\":7}\n";
        let rs = parse_records("m.jsonl", text, DataFormat::Auto, None).unwrap();
        assert_eq!((rs[0].final_answer().unwrap(), rs[0].solution().unwrap()), ("5".into(), Some("\\boxed{5}".into())));
        assert_eq!((rs[1].final_answer().unwrap(), rs[1].solution().unwrap()), ("7".into(), None));

        let text = "{\"prompt\":\"1+1\",\"question\":\"ignored\",\"answer\":\" 2 \"}\n";
        let r = &parse_records("x.jsonl", text, DataFormat::Auto, None).unwrap()[0];
        assert_eq!((r.question().unwrap(), r.final_answer().unwrap()), ("1+1", "2".to_owned()));
        assert_eq!(r.solution().unwrap(), None);

        let codec = CharCodec::new("ab");
        let text = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":\"yo\"}],\"answer\":1}\n";
        let r = &parse_records("c.jsonl", text, DataFormat::Auto, None).unwrap()[0];
        assert!(r.question().is_err());
        let p = r.to_rl_prompt(&PromptTemplate::plain("[{question}]"), &codec).unwrap();
        assert_eq!((p.prompt.as_str(), p.reference.as_str(), p.demonstration.as_deref()), ("[hi]", "1", Some("yo")));
        assert_eq!(
            (p.metadata["format"].as_str(), p.metadata["source"].as_str()),
            (Some("messages"), Some("c.jsonl:1"))
        );
    }

    #[test]
    fn bad_records_name_line_and_field() {
        let field_of = |text: &str, format: DataFormat| -> (usize, Option<String>) {
            let e = parse_records("b.jsonl", text, format, None)
                .and_then(|rs| rs.iter().try_for_each(|r| r.final_answer().and(r.question().map(drop))))
                .unwrap_err();
            match e {
                BridgeError::Data { line, field, .. } => (line, field),
                other => panic!("{other}"),
            }
        };
        assert_eq!(field_of("{\"text\":1}\n", DataFormat::Auto), (1, None));
        assert_eq!(
            field_of(
                "{\"question\":\"q\",\"answer\":\"#### 1\"}\n{\"question\":\"q\",\"answer\":\"x\"}\n",
                DataFormat::Auto
            ),
            (2, Some("answer".into()))
        );
        assert_eq!(
            field_of("{\"question\":\" \",\"answer\":\"#### 1\"}\n", DataFormat::Auto),
            (1, Some("question".into()))
        );
        assert_eq!(field_of("{\"problem\":\"p\"}\n", DataFormat::Math), (1, Some("solution".into())));
        assert_eq!(field_of("{\"problem\":\"p\",\"answer\":[1]}\n", DataFormat::Math), (1, Some("answer".into())));
        assert_eq!(field_of("{\"prompt\":\"p\",\"completion\":\"c\"}\n", DataFormat::Auto), (1, Some("answer".into())));
        assert!(parse_records("e.jsonl", "\n\n", DataFormat::Auto, None).unwrap().is_empty());
    }
}
