//! The tokenizer of a GGUF file, rebuilt from its `tokenizer.ggml.*` metadata.
//!
//! Only byte-level BPE (`tokenizer.ggml.model = "gpt2"`, the Llama-3/SmolLM/Qwen family) is
//! supported. The result is the `tokenizer.json` that transformers' GGUF conversion
//! (`GGUFGPTConverter`, `GGUFQwen2Converter`) and llama.cpp's `llm_tokenizer_bpe` describe:
//!
//! * model: BPE over the `tokens` (id = position) with the `merges` (`"a b"` pairs);
//! * pre-tokenizer from `tokenizer.ggml.pre`: `smollm` splits digits individually then applies
//!   the GPT-2 regex; `qwen2` and `llama-bpe` split with their own regexes; anything else uses
//!   GPT-2's byte-level regex (what transformers does for every gpt2-type file);
//! * `qwen2` also NFC-normalises, like transformers' `Qwen2Converter`;
//! * added tokens: token type 3 (control) as special tokens, type 4 (user-defined) as
//!   non-special added tokens, both matched before pre-tokenisation;
//! * byte-level decoder; no post-processor (the codec never adds special tokens itself).

use super::file::{GgufFile, MetaValue};
use bridge_core::Result;
use serde_json::{Map, Value, json};
use tokenizers::Tokenizer;

/// `tokenizer.ggml.token_type` of a control token (`<|im_start|>`).
const TOKEN_TYPE_CONTROL: i64 = 3;
/// `tokenizer.ggml.token_type` of a user-defined token (Qwen's `<tool_call>`).
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// Qwen2's pre-tokenizer regex (transformers' `Qwen2Converter`, llama.cpp's `qwen2`).
const QWEN2_PATTERN: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama 3's pre-tokenizer regex (llama.cpp's `llama-bpe`).
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn byte_level(use_regex: bool) -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": use_regex})
}

fn split(pattern: &str) -> Value {
    json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false})
}

impl GgufFile {
    /// `tokenizer.chat_template`, if the file carries one.
    pub fn chat_template(&self) -> Option<&str> {
        self.get("tokenizer.chat_template").and_then(MetaValue::as_str)
    }

    /// The `tokenizer.ggml.*` id `key` (`eos_token_id`, `bos_token_id`, `padding_token_id`, …).
    pub fn token_id(&self, key: &str) -> Option<u32> {
        self.get(&format!("tokenizer.ggml.{key}")).and_then(MetaValue::as_u64).and_then(|v| u32::try_from(v).ok())
    }

    /// The tokenizer described by the metadata, or `None` when the file has no
    /// `tokenizer.ggml.model`. Errors for unsupported tokenizer models and malformed vocabularies.
    pub fn tokenizer(&self) -> Result<Option<Tokenizer>> {
        let Some(model) = self.get("tokenizer.ggml.model") else { return Ok(None) };
        let model = model.as_str().ok_or_else(|| self.error("metadata `tokenizer.ggml.model` is not a string"))?;
        if model != "gpt2" {
            return Err(self.error(format!(
                "tokenizer model `{model}` is not supported (only byte-level BPE, `gpt2`); pass a tokenizer.json"
            )));
        }
        let json = self.tokenizer_json()?;
        let text = serde_json::to_string(&json).map_err(|e| self.error(format!("tokenizer: {e}")))?;
        let tok: Tokenizer =
            text.parse().map_err(|e| self.error(format!("tokenizer built from the metadata is invalid: {e}")))?;
        Ok(Some(tok))
    }

    fn string_array(&self, key: &str) -> Result<Vec<&str>> {
        let arr = self
            .get(key)
            .and_then(MetaValue::as_array)
            .ok_or_else(|| self.error(format!("metadata `{key}` is missing or not an array")))?;
        arr.iter()
            .enumerate()
            .map(|(i, v)| v.as_str().ok_or_else(|| self.error(format!("metadata `{key}`[{i}] is not a string"))))
            .collect()
    }

    /// The `tokenizer.json` document for a `gpt2`-type vocabulary.
    fn tokenizer_json(&self) -> Result<Value> {
        let tokens = self.string_array("tokenizer.ggml.tokens")?;
        let merges = self.string_array("tokenizer.ggml.merges")?;
        let types: Vec<i64> = match self.get("tokenizer.ggml.token_type").and_then(MetaValue::as_array) {
            Some(a) if a.len() == tokens.len() => a.iter().map(|v| v.as_i64().unwrap_or(1)).collect(),
            Some(a) => {
                return Err(self.error(format!(
                    "metadata `tokenizer.ggml.token_type` has {} entries for {} tokens",
                    a.len(),
                    tokens.len()
                )));
            }
            None => vec![1; tokens.len()],
        };

        // Tokens are stored in the byte-level alphabet; one that is not (a raw special token with
        // spaces or other characters) is respelled byte by byte, as transformers does. Later
        // duplicates win, as in its `{token: index for index, token in enumerate(tokens)}`.
        let alphabet = byte_alphabet();
        let in_alphabet = |t: &str| t.chars().all(|c| alphabet.contains(&c));
        let mut vocab = Map::new();
        for (id, tok) in tokens.iter().enumerate() {
            let spelled = if in_alphabet(tok) {
                (*tok).to_owned()
            } else {
                tok.bytes().map(|b| alphabet[usize::from(b)]).collect()
            };
            vocab.insert(spelled, json!(id));
        }
        let merges = merges
            .iter()
            .enumerate()
            .map(|(i, m)| {
                m.split_once(' ')
                    .filter(|(a, b)| !a.is_empty() && !b.is_empty() && !b.contains(' '))
                    .map(|(a, b)| json!([a, b]))
                    .ok_or_else(|| self.error(format!("metadata `tokenizer.ggml.merges`[{i}] = {m:?} is not \"a b\"")))
            })
            .collect::<Result<Vec<_>>>()?;
        let added: Vec<Value> = tokens
            .iter()
            .zip(&types)
            .enumerate()
            // A respelled token cannot be matched whole (transformers skips those too).
            .filter(|(_, (tok, t))| matches!(**t, TOKEN_TYPE_CONTROL | TOKEN_TYPE_USER_DEFINED) && in_alphabet(tok))
            .map(|(id, (tok, t))| {
                json!({"id": id, "content": tok, "single_word": false, "lstrip": false, "rstrip": false,
                       "normalized": false, "special": *t == TOKEN_TYPE_CONTROL})
            })
            .collect();

        let pre = self.get("tokenizer.ggml.pre").and_then(MetaValue::as_str).unwrap_or("default");
        // llama.cpp looks a whole pre-token up in the vocabulary before merging for Llama 3.
        let ignore_merges = matches!(pre, "llama-bpe" | "llama3");
        let (normalizer, pre_tokenizer) = match pre {
            "smollm" => (
                Value::Null,
                json!({"type": "Sequence", "pretokenizers": [
                    {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
            ),
            "qwen2" => (
                json!({"type": "NFC"}),
                json!({"type": "Sequence", "pretokenizers": [split(QWEN2_PATTERN), byte_level(false)]}),
            ),
            "llama-bpe" | "llama3" => {
                (Value::Null, json!({"type": "Sequence", "pretokenizers": [split(LLAMA3_PATTERN), byte_level(false)]}))
            }
            _ => (Value::Null, byte_level(true)),
        };

        Ok(json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": normalizer,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {
                "type": "BPE",
                "dropout": null,
                "unk_token": null,
                "continuing_subword_prefix": null,
                "end_of_word_suffix": null,
                "fuse_unk": false,
                "byte_fallback": false,
                "ignore_merges": ignore_merges,
                "vocab": vocab,
                "merges": merges,
            },
        }))
    }
}

/// GPT-2's `bytes_to_unicode`: the character that stands for each byte in a byte-level vocabulary
/// (printable Latin-1 bytes stand for themselves, the others for U+0100 onwards).
fn byte_alphabet() -> [char; 256] {
    let mut out = ['\0'; 256];
    let mut next = 256u32;
    for (b, slot) in out.iter_mut().enumerate() {
        let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        let code = if printable {
            b as u32
        } else {
            next += 1;
            next - 1
        };
        *slot = char::from_u32(code).unwrap_or('\u{FFFD}');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_is_gpt2s() {
        let a = byte_alphabet();
        assert_eq!(a[usize::from(b' ')], '\u{120}'); // 'Ġ'
        assert_eq!(a[usize::from(b'\n')], '\u{10A}'); // 'Ċ'
        assert_eq!(a[usize::from(b'A')], 'A');
        assert_eq!(a[0], '\u{100}');
        assert_eq!(a[173], '\u{143}');
        let distinct: std::collections::HashSet<char> = a.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
    }
}
