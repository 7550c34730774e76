//! JSONL loaders for `D_SFT` ([`SftExample`]) and `D_RL` ([`RlPrompt`]), from the same files.
//!
//! One record per line; blank lines are skipped. The record forms (GSM8K, MATH,
//! prompt/completion, messages, generic question/answer), their detection from a file's first
//! record and what each gives as prompt, SFT completion and RL reference are
//! [`bridge_core::dataset`]'s, shared with evaluation (`bridge-eval`'s `EvalDataset`): see the
//! table there. The format is detected per file, or forced with [`DatasetConfig::format`].
//! Prompts are rendered by a [`PromptTemplate`]. A malformed record is a [`BridgeError::Data`]
//! naming the file, the 1-based line and the field.
//!
//! Identifiers: a record's `id` field (string or integer) when present, else `file_name:line`.

use crate::batch::TokenizedSource;
use crate::tokenize::SftTokenizer;
use bridge_core::dataset::{DataFormat, Record, read_records};
use bridge_core::{BridgeError, InMemorySource, Result, RlPrompt, SftExample, TextCodec};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

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
            let prompt = encode(r, codec, r.question_key(), "prompt", &ex.prompt)?;
            let completion = encode(r, codec, r.solution_key(), "completion", &ex.completion)?;
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
            ids.push(encode(&r, codec, r.question_key(), "prompt", &p.prompt)?);
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

/// Reads the records of a JSONL file (at most `max_records`) with
/// [`bridge_core::dataset::read_records`]; a file without any record is an error naming it.
/// `text` (`record`'s rendered `part`, from `field`) encoded with `codec`; an error names the
/// record and the field.
fn encode(record: &Record, codec: &dyn TextCodec, field: &str, part: &str, text: &str) -> Result<Vec<u32>> {
    codec.encode(text).map_err(|e| record.err(Some(field), format!("the {part} does not encode: {e}")))
}

fn read_jsonl(path: &Path, format: DataFormat, max_records: Option<usize>) -> Result<Vec<Record>> {
    let records = read_records(path, format, max_records)?;
    if records.is_empty() {
        return Err(BridgeError::data(path, 1, None, "the file holds no record"));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_serde() {
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
