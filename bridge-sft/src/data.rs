//! JSONL loaders for `D_SFT` ([`SftExample`]) and `D_RL` ([`RlPrompt`]), from the same files.
//!
//! One record per line; blank lines are skipped. Four record forms are understood:
//!
//! | [`DataFormat`] | keys | SFT completion | RL reference |
//! |---|---|---|---|
//! | `gsm8k` | `question`, `answer` | `answer` (worked solution ending in `#### N`) | the text after the last `####`, trimmed, thousands commas removed |
//! | `math` | `problem`, `solution`, optional `answer` | `solution` | `answer` when present, else the content of the last `\boxed{…}` of `solution` |
//! | `prompt_completion` | `prompt`, `completion`, optional `answer` | `completion` | `answer` (required for RL) |
//! | `messages` | `messages: [{role, content}, …]`, optional `answer` | the last message, which must come from the assistant | `answer` (required for RL) |
//!
//! The format is detected per file from the keys of its first record (checked in the order
//! `messages`, `prompt`+`completion`, `question`+`answer`, `problem`+`solution`), or forced with
//! [`DatasetConfig::format`]. Prompts are rendered by a [`PromptTemplate`]. A malformed record is a
//! [`BridgeError::Data`] naming the file, the 1-based line and the field.
//!
//! Identifiers: a record's `id` field (string or integer) when present, else `file_name:line`.

use crate::batch::TokenizedSource;
use crate::tokenize::SftTokenizer;
use bridge_core::jsonl::kind as type_name;
use bridge_core::{BridgeError, ChatMessage, InMemorySource, Metadata, Result, RlPrompt, SftExample, TextCodec};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// The form of the records of a JSONL file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataFormat {
    /// Detect the form from the keys of the file's first record.
    #[default]
    Auto,
    /// `question` / `answer`, the answer ending in `#### N` (GSM8K).
    Gsm8k,
    /// `problem` / `solution` (with `\boxed{…}`), optional `answer` (MATH).
    Math,
    /// `prompt` / `completion`, optional `answer`.
    PromptCompletion,
    /// `messages`: a conversation whose last message is the assistant's completion; optional `answer`.
    Messages,
}

impl DataFormat {
    /// The format a record with these keys is in, if any.
    pub fn detect(record: &Map<String, Value>) -> Option<DataFormat> {
        let has = |k: &str| record.contains_key(k);
        if has("messages") {
            Some(Self::Messages)
        } else if has("prompt") && has("completion") {
            Some(Self::PromptCompletion)
        } else if has("question") && has("answer") {
            Some(Self::Gsm8k)
        } else if has("problem") && has("solution") {
            Some(Self::Math)
        } else {
            None
        }
    }

    /// The config spelling (`gsm8k`, `math`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Gsm8k => "gsm8k",
            Self::Math => "math",
            Self::PromptCompletion => "prompt_completion",
            Self::Messages => "messages",
        }
    }

    /// The record field the prompt is rendered from (`question`, `problem`, `prompt`,
    /// `messages`).
    pub fn prompt_field(self) -> &'static str {
        match self {
            Self::Auto | Self::Gsm8k => "question",
            Self::Math => "problem",
            Self::PromptCompletion => "prompt",
            Self::Messages => "messages",
        }
    }

    /// The record field the SFT completion comes from (`answer`, `solution`, `completion`,
    /// `messages`).
    pub fn completion_field(self) -> &'static str {
        match self {
            Self::Auto | Self::Gsm8k => "answer",
            Self::Math => "solution",
            Self::PromptCompletion => "completion",
            Self::Messages => "messages",
        }
    }

    /// The keys this format consumes (everything else goes to an [`RlPrompt`]'s metadata).
    fn consumed_keys(self) -> &'static [&'static str] {
        match self {
            Self::Auto => &[],
            Self::Gsm8k => &["id", "question", "answer"],
            Self::Math => &["id", "problem", "solution", "answer"],
            Self::PromptCompletion => &["id", "prompt", "completion", "answer"],
            Self::Messages => &["id", "messages", "answer"],
        }
    }
}

/// How a question (or a conversation) becomes the prompt text: the workspace's one template type,
/// shared with `bridge-eval` so that training and evaluation prompts are the same.
pub use bridge_core::prompt::PromptTemplate;

/// Where a dataset is and how to read it (serde; unknown keys are rejected).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    /// The JSONL file.
    pub path: PathBuf,
    /// The record form; `auto` (default) detects it from the first record.
    #[serde(default)]
    pub format: DataFormat,
    /// How prompts are rendered (default: the codec's chat template, no system prompt).
    #[serde(default)]
    pub template: PromptTemplate,
    /// Read only the first `max_examples` records.
    #[serde(default)]
    pub max_examples: Option<usize>,
}

impl DatasetConfig {
    /// A config for `path` with every other setting at its default.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), format: DataFormat::Auto, template: PromptTemplate::default(), max_examples: None }
    }

    /// Checks the values, naming the bad field (prefixed with `prefix`, e.g. `data.sft`).
    pub fn validate(&self, prefix: &str) -> Result<()> {
        self.template.validate(&format!("{prefix}.template"))?;
        if self.max_examples == Some(0) {
            return Err(BridgeError::config(format!("{prefix}.max_examples"), "must be ≥ 1"));
        }
        Ok(())
    }

    /// Loads the file as supervised examples (`D_SFT`).
    pub fn load_sft(&self, codec: &dyn TextCodec) -> Result<InMemorySource<SftExample>> {
        self.validate("data")?;
        read_jsonl(&self.path, self.format, self.max_examples)?
            .iter()
            .map(|r| r.to_sft_example(&self.template, codec))
            .collect::<Result<Vec<_>>>()
            .map(InMemorySource::new)
    }

    /// Loads the file as supervised examples and tokenises them (what [`TokenizedSource::new`]
    /// does with [`DatasetConfig::load_sft`]'s examples), every prompt and completion encoded
    /// once: one that the codec cannot encode is an error naming the file, the line and the field.
    pub fn load_sft_tokenized(&self, tokenizer: &SftTokenizer<'_>) -> Result<TokenizedSource> {
        self.validate("data")?;
        let codec = tokenizer.codec();
        let records = read_jsonl(&self.path, self.format, self.max_examples)?;
        TokenizedSource::from_outcomes(records.iter().map(|r| {
            let ex = r.to_sft_example(&self.template, codec)?;
            let prompt = r.encode(codec, r.format.prompt_field(), "prompt", &ex.prompt)?;
            let completion = r.encode(codec, r.format.completion_field(), "completion", &ex.completion)?;
            Ok((ex.id.clone(), tokenizer.tokenize_encoded(&ex.id, prompt, completion)?))
        }))
    }

    /// Loads the file as RL prompts with references (`D_RL`).
    pub fn load_rl(&self, codec: &dyn TextCodec) -> Result<InMemorySource<RlPrompt>> {
        self.validate("data")?;
        read_jsonl(&self.path, self.format, self.max_examples)?
            .iter()
            .map(|r| r.to_rl_prompt(&self.template, codec))
            .collect::<Result<Vec<_>>>()
            .map(InMemorySource::new)
    }

    /// [`DatasetConfig::load_rl`], with every rendered prompt encoded (the token ids, index-aligned
    /// with the prompts): one that the codec cannot encode is an error naming the file, the line
    /// and the field now, not at the training step that draws it.
    pub fn load_rl_encoded(&self, codec: &dyn TextCodec) -> Result<(InMemorySource<RlPrompt>, Vec<Vec<u32>>)> {
        self.validate("data")?;
        let (mut prompts, mut ids) = (Vec::new(), Vec::new());
        for r in read_jsonl(&self.path, self.format, self.max_examples)? {
            let p = r.to_rl_prompt(&self.template, codec)?;
            ids.push(r.encode(codec, r.format.prompt_field(), "prompt", &p.prompt)?);
            prompts.push(p);
        }
        Ok((InMemorySource::new(prompts), ids))
    }
}

/// Loads every record of `path` as an [`SftExample`].
pub fn load_sft_examples(
    path: impl AsRef<Path>,
    format: DataFormat,
    template: &PromptTemplate,
    codec: &dyn TextCodec,
) -> Result<InMemorySource<SftExample>> {
    DatasetConfig { path: path.as_ref().to_path_buf(), format, template: template.clone(), max_examples: None }
        .load_sft(codec)
}

/// Loads every record of `path` as an [`RlPrompt`].
pub fn load_rl_prompts(
    path: impl AsRef<Path>,
    format: DataFormat,
    template: &PromptTemplate,
    codec: &dyn TextCodec,
) -> Result<InMemorySource<RlPrompt>> {
    DatasetConfig { path: path.as_ref().to_path_buf(), format, template: template.clone(), max_examples: None }
        .load_rl(codec)
}

/// One parsed line of a JSONL file, with its resolved format.
#[derive(Clone, Debug, PartialEq)]
pub struct JsonlRecord {
    /// The file it came from.
    pub path: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// The file's format (never [`DataFormat::Auto`]).
    pub format: DataFormat,
    /// The JSON object.
    pub fields: Map<String, Value>,
}

/// Reads the records of a JSONL file (at most `max_records`), resolving [`DataFormat::Auto`]
/// from the first record. Blank lines are skipped; a line that is not a JSON object is an error
/// naming the file and line, and so is a file without any record.
pub fn read_jsonl(path: impl AsRef<Path>, format: DataFormat, max_records: Option<usize>) -> Result<Vec<JsonlRecord>> {
    let path = path.as_ref();
    let objects = bridge_core::jsonl::read_objects(path, max_records)?;
    let first = objects.first().ok_or_else(|| BridgeError::data(path, 1, None, "the file holds no record"))?;
    let format = match format {
        DataFormat::Auto => DataFormat::detect(&first.fields).ok_or_else(|| {
            let keys: Vec<&str> = first.fields.keys().map(String::as_str).collect();
            BridgeError::data(
                path,
                first.line,
                None,
                format!(
                    "cannot detect the data format from the keys {keys:?}: expected `messages`, \
                     `prompt`+`completion`, `question`+`answer` (gsm8k) or `problem`+`solution` (math); \
                     or set `format`"
                ),
            )
        })?,
        f => f,
    };
    Ok(objects
        .into_iter()
        .map(|o| JsonlRecord { path: path.to_path_buf(), line: o.line, format, fields: o.fields })
        .collect())
}

impl JsonlRecord {
    fn err(&self, field: Option<&str>, message: impl Into<String>) -> BridgeError {
        BridgeError::data(&self.path, self.line, field, message)
    }

    /// `text` (this record's rendered `part`, from `field`) encoded with `codec`; an error names
    /// the record and the field.
    fn encode(&self, codec: &dyn TextCodec, field: &str, part: &str, text: &str) -> Result<Vec<u32>> {
        codec.encode(text).map_err(|e| self.err(Some(field), format!("the {part} does not encode: {e}")))
    }

    /// The record's identifier: its `id` field (string or integer), else `file_name:line`.
    pub fn id(&self) -> String {
        match self.fields.get("id") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                format!("{name}:{}", self.line)
            }
        }
    }

    /// The string field `name`; an error if it is missing or not a string.
    fn str_field(&self, name: &str) -> Result<&str> {
        match self.fields.get(name) {
            Some(Value::String(s)) => Ok(s),
            None => Err(self.err(Some(name), format!("missing (required by the {} format)", self.format.name()))),
            Some(v) => Err(self.err(Some(name), format!("expected a string, got {}", type_name(v)))),
        }
    }

    /// The optional answer-like field `name`: a string or a number, absent when missing or null.
    fn answer_field(&self, name: &str) -> Result<Option<String>> {
        match self.fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(v) => Err(self.err(Some(name), format!("expected a string or a number, got {}", type_name(v)))),
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

    /// The rendered prompt and the completion of a supervised record.
    fn prompt_and_completion(&self, template: &PromptTemplate, codec: &dyn TextCodec) -> Result<(String, String)> {
        let question = |q: &str, c: &str| -> Result<(String, String)> {
            let q = self.str_field(q)?;
            let c = self.str_field(c)?;
            Ok((template.render_question(q, codec)?, c.to_owned()))
        };
        match self.format {
            DataFormat::Gsm8k => question("question", "answer"),
            DataFormat::Math => question("problem", "solution"),
            DataFormat::PromptCompletion => question("prompt", "completion"),
            DataFormat::Messages => {
                let mut messages = self.messages()?;
                let last = messages.pop().ok_or_else(|| self.err(Some("messages"), "the conversation is empty"))?;
                if last.role != "assistant" {
                    return Err(self.err(
                        Some("messages"),
                        format!("the last message must come from the assistant, not `{}`", last.role),
                    ));
                }
                Ok((template.render_conversation(&messages, codec)?, last.content))
            }
            DataFormat::Auto => Err(self.err(None, "the record's format was not resolved")),
        }
    }

    /// The record as a supervised example: rendered prompt, completion (reasoning and answer).
    pub fn to_sft_example(&self, template: &PromptTemplate, codec: &dyn TextCodec) -> Result<SftExample> {
        let (prompt, completion) = self.prompt_and_completion(template, codec)?;
        Ok(SftExample { id: self.id(), prompt, completion })
    }

    /// The record as an RL prompt: the same rendered prompt, the final answer as reference, and
    /// the record's worked solution (the SFT completion) as demonstration when it has one. Keys the format does not consume go to the metadata, plus `format` and `source`
    /// (`file_name:line`) unless the record has keys of those names.
    pub fn to_rl_prompt(&self, template: &PromptTemplate, codec: &dyn TextCodec) -> Result<RlPrompt> {
        // The record's worked solution, when it has one, becomes the prompt's demonstration.
        let (prompt, reference, demonstration) = match self.format {
            DataFormat::Gsm8k => {
                let question = self.str_field("question")?;
                let answer = self.str_field("answer")?;
                let reference = gsm8k_final_answer(answer)
                    .ok_or_else(|| self.err(Some("answer"), "no final answer after `####`"))?;
                (template.render_question(question, codec)?, reference, Some(answer.to_owned()))
            }
            DataFormat::Math => {
                let problem = self.str_field("problem")?;
                let solution =
                    if self.fields.contains_key("solution") { Some(self.str_field("solution")?) } else { None };
                let reference = match self.answer_field("answer")? {
                    Some(a) if !a.is_empty() => a,
                    _ => last_boxed(self.str_field("solution")?).ok_or_else(|| {
                        self.err(Some("solution"), "no `answer` field and no complete `\\boxed{…}` in the solution")
                    })?,
                };
                (template.render_question(problem, codec)?, reference, solution.map(str::to_owned))
            }
            DataFormat::PromptCompletion => {
                let prompt = self.str_field("prompt")?;
                let completion = self.str_field("completion")?.to_owned();
                (template.render_question(prompt, codec)?, self.required_answer()?, Some(completion))
            }
            DataFormat::Messages => {
                let mut messages = self.messages()?;
                let demonstration = if messages.last().is_some_and(|m| m.role == "assistant") {
                    messages.pop().map(|m| m.content)
                } else {
                    None
                };
                (template.render_conversation(&messages, codec)?, self.required_answer()?, demonstration)
            }
            DataFormat::Auto => return Err(self.err(None, "the record's format was not resolved")),
        };
        let mut metadata = Metadata::new();
        for (k, v) in &self.fields {
            if !self.format.consumed_keys().contains(&k.as_str()) {
                metadata.insert(k.clone(), v.clone());
            }
        }
        metadata.entry("format").or_insert_with(|| Value::String(self.format.name().into()));
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        metadata.entry("source").or_insert_with(|| Value::String(format!("{name}:{}", self.line)));
        Ok(RlPrompt { id: self.id(), prompt, reference, metadata, demonstration })
    }

    fn required_answer(&self) -> Result<String> {
        match self.answer_field("answer")? {
            Some(a) if !a.is_empty() => Ok(a),
            Some(_) => Err(self.err(Some("answer"), "is empty")),
            None => Err(self.err(
                Some("answer"),
                format!("missing (an RL prompt of the {} format needs a reference answer)", self.format.name()),
            )),
        }
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

/// The content of the last `\boxed{…}` (or `\fbox{…}`) of `text`, with nested braces matched
/// (escaped `\{` and `\}` do not count), trimmed; `None` if there is none or it is unclosed.
pub fn last_boxed(text: &str) -> Option<String> {
    let start = ["\\boxed{", "\\fbox{"].iter().filter_map(|pat| text.rfind(pat).map(|i| i + pat.len())).max()?;
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
                    return Some(text[start..start + offset].trim().to_owned());
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gsm8k_answers_are_extracted() {
        assert_eq!(gsm8k_final_answer("a\nb\n#### 72").as_deref(), Some("72"));
        assert_eq!(gsm8k_final_answer("x #### 1,234,567 ").as_deref(), Some("1234567"));
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
        assert_eq!(last_boxed("nothing"), None);
    }

    #[test]
    fn format_detection_and_config_serde() {
        let obj = |s: &str| serde_json::from_str::<Map<String, Value>>(s).unwrap();
        assert_eq!(DataFormat::detect(&obj(r#"{"question":"q","answer":"a"}"#)), Some(DataFormat::Gsm8k));
        assert_eq!(DataFormat::detect(&obj(r#"{"problem":"q","solution":"a"}"#)), Some(DataFormat::Math));
        assert_eq!(DataFormat::detect(&obj(r#"{"prompt":"q","completion":"a"}"#)), Some(DataFormat::PromptCompletion));
        assert_eq!(DataFormat::detect(&obj(r#"{"messages":[]}"#)), Some(DataFormat::Messages));
        assert_eq!(DataFormat::detect(&obj(r#"{"text":"q"}"#)), None);

        let c: DatasetConfig = serde_json::from_str(
            r#"{"path":"x.jsonl","format":"gsm8k","template":{"kind":"plain","template":"Q: {question}\nA: "}}"#,
        )
        .unwrap();
        assert_eq!(c.format, DataFormat::Gsm8k);
        assert_eq!(c.template, PromptTemplate::plain("Q: {question}\nA: "));
        let c: DatasetConfig = serde_json::from_str(r#"{"path":"x.jsonl"}"#).unwrap();
        assert_eq!(
            (c.format, c.template),
            (DataFormat::Auto, PromptTemplate::Chat { system_prompt: None, instruction: None })
        );
        assert!(serde_json::from_str::<DatasetConfig>(r#"{"path":"x","formatt":"math"}"#).is_err());
        assert!(
            serde_json::from_str::<PromptTemplate>(r#"{"kind":"chat","system_promt":"x"}"#)
                .unwrap_err()
                .to_string()
                .contains("system_promt")
        );
        let bad = DatasetConfig { template: PromptTemplate::plain("no placeholder"), ..DatasetConfig::new("x") };
        assert!(bad.validate("data.sft").unwrap_err().to_string().contains("data.sft.template.template"));
    }
}
