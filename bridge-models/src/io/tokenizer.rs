//! The text codec of an HF or GGUF model: a `tokenizers::Tokenizer`, its EOS and pad ids, and the
//! chat template rendered with minijinja.
//!
//! [`HfCodec::from_dir`] reads an HF model directory (`tokenizer.json`, `tokenizer_config.json`,
//! `generation_config.json`, `config.json`, `chat_template.jinja`); [`HfCodec::from_gguf`]
//! rebuilds the same from a GGUF file's metadata. Chat templates are rendered the way
//! transformers' `apply_chat_template` does: Jinja with `trim_blocks` and `lstrip_blocks`,
//! `raise_exception`, a Python-style `tojson`, `strftime_now`, Python string methods
//! (`.strip()`, `.startswith()`, … through minijinja-contrib's pycompat), and the variables
//! `messages`, `add_generation_prompt`, `bos_token` and `eos_token`. A model without a template
//! gets plain ChatML.

use super::gguf::GgufFile;
use bridge_core::{BridgeError, Result, TextCodec};
use minijinja::value::Kwargs;
use minijinja::{Environment, ErrorKind, Value as JValue, context};
use serde_json::Value;
use std::path::Path;
use tokenizers::Tokenizer;

/// One chat turn: the workspace's message type, re-exported where the templates render it.
pub use bridge_core::ChatMessage;

/// Name of the compiled chat template inside the codec's environment.
const TEMPLATE: &str = "chat";

/// A [`TextCodec`] over a `tokenizers::Tokenizer`, with EOS/pad ids and an optional chat template.
pub struct HfCodec {
    tokenizer: Tokenizer,
    eos_ids: Vec<u32>,
    pad_id: u32,
    vocab_size: usize,
    bos_token: Option<String>,
    eos_token: Option<String>,
    template_source: Option<String>,
    env: Environment<'static>,
}

impl std::fmt::Debug for HfCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfCodec")
            .field("vocab_size", &self.vocab_size)
            .field("eos_ids", &self.eos_ids)
            .field("pad_id", &self.pad_id)
            .field("has_chat_template", &self.template_source.is_some())
            .finish()
    }
}

fn tok_err(message: impl std::fmt::Display) -> BridgeError {
    BridgeError::Tokenizer(message.to_string())
}

impl HfCodec {
    /// Wraps `tokenizer` with the ids that end a completion and the pad id (the first EOS id when
    /// `None`). Fails when there is no EOS id or an id lies outside the vocabulary.
    pub fn new(tokenizer: Tokenizer, eos_ids: Vec<u32>, pad_id: Option<u32>) -> Result<Self> {
        let vocab_size = tokenizer
            .get_vocab(true)
            .values()
            .map(|&id| id as usize + 1)
            .max()
            .unwrap_or(0)
            .max(tokenizer.get_vocab_size(true));
        let mut eos: Vec<u32> = Vec::with_capacity(eos_ids.len());
        for id in eos_ids {
            if !eos.contains(&id) {
                eos.push(id);
            }
        }
        let Some(&first) = eos.first() else { return Err(tok_err("no EOS token id")) };
        let pad_id = pad_id.unwrap_or(first);
        for id in eos.iter().chain([&pad_id]) {
            if *id as usize >= vocab_size {
                return Err(tok_err(format!("special token id {id} is outside the vocabulary of {vocab_size}")));
            }
        }
        let eos_token = tokenizer.id_to_token(first);
        Ok(Self {
            tokenizer,
            eos_ids: eos,
            pad_id,
            vocab_size,
            bos_token: None,
            eos_token,
            template_source: None,
            env: chat_environment(),
        })
    }

    /// Sets the chat template (Jinja source), checking that it compiles; `None` keeps ChatML.
    pub fn with_chat_template(mut self, template: Option<String>) -> Result<Self> {
        self.env.remove_template(TEMPLATE);
        if let Some(src) = &template {
            self.env.add_template_owned(TEMPLATE, src.clone()).map_err(|e| tok_err(format!("chat template: {e:#}")))?;
        }
        self.template_source = template;
        Ok(self)
    }

    /// Sets the `bos_token` string the chat template sees.
    pub fn with_bos_token(mut self, bos: Option<String>) -> Self {
        self.bos_token = bos;
        self
    }

    /// Loads the codec of an HF model directory: `tokenizer.json`, plus the EOS/pad tokens and
    /// chat template from `tokenizer_config.json`, `generation_config.json`, `config.json` and
    /// `chat_template.jinja` where present.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.is_file() {
            return Err(BridgeError::io(&tok_path, std::io::Error::from(std::io::ErrorKind::NotFound)));
        }
        let tokenizer = Tokenizer::from_file(&tok_path).map_err(|e| tok_err(format!("{}: {e}", tok_path.display())))?;
        let tok_cfg = read_json(&dir.join("tokenizer_config.json"))?;
        let gen_cfg = read_json(&dir.join("generation_config.json"))?;
        let model_cfg = read_json(&dir.join("config.json"))?;

        let token_id = |field: &str| -> Option<u32> {
            let content = tok_cfg.as_ref().and_then(|c| token_content(c.get(field)?))?;
            tokenizer.token_to_id(&content)
        };
        let mut eos = Vec::new();
        for cfg in [&gen_cfg, &model_cfg] {
            if let Some(v) = cfg.as_ref().and_then(|c| c.get("eos_token_id")) {
                eos.extend(ids_of(v));
            }
        }
        eos.extend(token_id("eos_token"));
        if eos.is_empty() {
            return Err(tok_err(format!(
                "{}: no EOS token in generation_config.json, config.json or tokenizer_config.json",
                dir.display()
            )));
        }
        let pad = token_id("pad_token")
            .or_else(|| [&gen_cfg, &model_cfg].iter().find_map(|c| c.as_ref()?.get("pad_token_id").and_then(json_id)));

        let template = match std::fs::read_to_string(dir.join("chat_template.jinja")) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => tok_cfg.as_ref().and_then(template_of),
            Err(e) => return Err(BridgeError::io(dir.join("chat_template.jinja"), e)),
        };
        let bos = tok_cfg.as_ref().and_then(|c| token_content(c.get("bos_token")?));
        let eos_token = tok_cfg.as_ref().and_then(|c| token_content(c.get("eos_token")?));
        let mut codec = Self::new(tokenizer, eos, pad)?.with_chat_template(template)?.with_bos_token(bos);
        if eos_token.is_some() {
            codec.eos_token = eos_token;
        }
        Ok(codec)
    }

    /// Builds the codec from a GGUF file's metadata: the tokenizer ([`GgufFile::tokenizer`]),
    /// `tokenizer.ggml.eos_token_id` (plus `eot_token_id`/`eom_token_id`), the padding id, and
    /// `tokenizer.chat_template`.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let tokenizer = file
            .tokenizer()?
            .ok_or_else(|| BridgeError::weights(file.path(), "no tokenizer metadata (tokenizer.ggml.model)"))?;
        Self::from_gguf_with(file, tokenizer)
    }

    /// Like [`Self::from_gguf`] with an already built `tokenizer`.
    pub fn from_gguf_with(file: &GgufFile, tokenizer: Tokenizer) -> Result<Self> {
        let eos: Vec<u32> =
            ["eos_token_id", "eot_token_id", "eom_token_id"].iter().filter_map(|k| file.token_id(k)).collect();
        if eos.is_empty() {
            return Err(BridgeError::weights(file.path(), "no tokenizer.ggml.eos_token_id"));
        }
        let bos = file.token_id("bos_token_id").and_then(|id| tokenizer.id_to_token(id));
        let pad = file.token_id("padding_token_id");
        Self::new(tokenizer, eos, pad)?
            .with_chat_template(file.chat_template().map(str::to_owned))
            .map(|c| c.with_bos_token(bos))
    }

    /// The underlying tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The `bos_token` string the chat template sees, when the model has one.
    pub fn bos_token(&self) -> Option<&str> {
        self.bos_token.as_deref()
    }

    /// The `eos_token` string the chat template sees (the first EOS id's token by default).
    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }

    /// The chat template source, when the model has one.
    pub fn chat_template(&self) -> Option<&str> {
        self.template_source.as_deref()
    }

    /// Renders `messages` with the chat template (ChatML without one), ending with the assistant
    /// header when `add_generation_prompt`.
    pub fn apply_chat_template(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        if self.template_source.is_none() {
            let mut out = String::new();
            for m in messages {
                out.push_str(&format!("<|im_start|>{}\n{}<|im_end|>\n", m.role, m.content));
            }
            if add_generation_prompt {
                out.push_str("<|im_start|>assistant\n");
            }
            return Ok(out);
        }
        let tmpl = self.env.get_template(TEMPLATE).map_err(|e| tok_err(format!("chat template: {e:#}")))?;
        tmpl.render(context! {
            messages => messages
                .iter()
                .map(|m| JValue::from_pairs([("role", m.role.as_str()), ("content", m.content.as_str())]))
                .collect::<Vec<_>>(),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.clone().unwrap_or_default(),
            eos_token => self.eos_token.clone().unwrap_or_default(),
        })
        .map_err(|e| tok_err(format!("rendering the chat template: {e:#}")))
    }

    /// Errors when the vocabulary has ids beyond the `vocab_rows` rows of a model's embedding.
    pub fn check_fits(&self, vocab_rows: usize) -> Result<()> {
        if self.vocab_size > vocab_rows {
            return Err(tok_err(format!(
                "the tokenizer has {} ids but the model's embedding has only {vocab_rows} rows",
                self.vocab_size
            )));
        }
        Ok(())
    }
}

impl TextCodec for HfCodec {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer.encode(text, false).map(|e| e.get_ids().to_vec()).map_err(|e| tok_err(format!("encoding: {e}")))
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            return Err(tok_err(format!("id {bad} is outside the vocabulary of {}", self.vocab_size)));
        }
        self.tokenizer.decode(ids, true).map_err(|e| tok_err(format!("decoding: {e}")))
    }

    fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    fn eos_token_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    fn pad_token_id(&self) -> u32 {
        self.pad_id
    }

    fn render_prompt(&self, message: &str) -> Result<String> {
        self.apply_chat_template(&[ChatMessage::new("user", message)], true)
    }

    /// The model's chat template (not the trait's plain ChatML), so that SFT/RL prompts built
    /// from messages match the evaluation prompts built by [`TextCodec::render_prompt`].
    fn render_chat(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        self.apply_chat_template(messages, add_generation_prompt)
    }
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| BridgeError::data(path, e.line(), None, format!("invalid JSON: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(BridgeError::io(path, e)),
    }
}

fn json_id(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|x| u32::try_from(x).ok())
}

/// `eos_token_id` as an int or a list of ints.
fn ids_of(v: &Value) -> Vec<u32> {
    match v {
        Value::Array(a) => a.iter().filter_map(json_id).collect(),
        other => json_id(other).into_iter().collect(),
    }
}

/// A special token of `tokenizer_config.json`: a string or an AddedToken dict with `content`.
fn token_content(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

/// `chat_template` of `tokenizer_config.json`: a string, or a list of `{name, template}` of which
/// the `default` one is used.
fn template_of(cfg: &Value) -> Option<String> {
    match cfg.get("chat_template")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(list) => list
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|t| t.get("template")?.as_str().map(str::to_owned)),
        _ => None,
    }
}

/// The Jinja environment of HF chat templates.
fn chat_environment() -> Environment<'static> {
    let mut env = Environment::new();
    // HF renders with `trim_blocks=True, lstrip_blocks=True` (and Jinja's default of dropping one
    // trailing newline, which is also minijinja's).
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build() {
        env.set_syntax(syntax);
    }
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> std::result::Result<JValue, minijinja::Error> {
        Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
    });
    env.add_function("strftime_now", |fmt: String| -> std::result::Result<JValue, minijinja::Error> {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))?
            .as_secs();
        strftime(&fmt, secs).map(JValue::from)
    });
    env.add_filter("tojson", |v: JValue, kwargs: Kwargs| -> std::result::Result<JValue, minijinja::Error> {
        let indent: Option<usize> = kwargs.get("indent")?;
        kwargs.assert_all_used()?;
        let json =
            serde_json::to_value(&v).map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
        let mut out = String::new();
        py_json(&json, indent, 0, &mut out);
        Ok(JValue::from_safe_string(out))
    });
    env
}

/// `json.dumps(v, ensure_ascii=False, indent=indent)` as Python writes it (`", "` and `": "`
/// separators without indent, one item per line with it), which is transformers' `tojson`.
fn py_json(v: &Value, indent: Option<usize>, level: usize, out: &mut String) {
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * level));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match v {
        Value::Array(a) if !a.is_empty() => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                py_json(x, indent, level + 1, out);
            }
            newline(out, level);
            out.push(']');
        }
        Value::Object(o) if !o.is_empty() => {
            out.push('{');
            for (i, (k, x)) in o.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                out.push_str(&Value::String(k.clone()).to_string());
                out.push_str(": ");
                py_json(x, indent, level + 1, out);
            }
            newline(out, level);
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// A small `strftime` over UTC seconds since the epoch: `%Y %m %d %e %H %M %S %b %B %a %A %y %j %%`.
fn strftime(fmt: &str, secs: u64) -> std::result::Result<String, minijinja::Error> {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = ["Thursday", "Friday", "Saturday", "Sunday", "Monday", "Tuesday", "Wednesday"];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let cum = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = cum[(month - 1) as usize] + day + i64::from(leap && month > 2);
    let weekday = DAYS[(days % 7) as usize];
    let mname = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year % 100)),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('e') => out.push_str(&format!("{day:2}")),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('H') => out.push_str(&format!("{:02}", rem / 3600)),
            Some('M') => out.push_str(&format!("{:02}", rem / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", rem % 60)),
            Some('b') => out.push_str(&mname[..3]),
            Some('B') => out.push_str(mname),
            Some('a') => out.push_str(&weekday[..3]),
            Some('A') => out.push_str(weekday),
            Some('%') => out.push('%'),
            other => {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!("strftime_now: unsupported directive %{}", other.map(String::from).unwrap_or_default()),
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_matches_known_dates() {
        // 2024-02-29 13:05:09 UTC, a Thursday
        let t = 1_709_211_909;
        assert_eq!(strftime("%Y-%m-%d %H:%M:%S", t).unwrap(), "2024-02-29 13:05:09");
        assert_eq!(strftime("%d %b %Y, %A %j %%", t).unwrap(), "29 Feb 2024, Thursday 060 %");
        assert_eq!(strftime("%d %B %Y", 0).unwrap(), "01 January 1970");
        assert!(strftime("%Q", 0).is_err());
    }

    #[test]
    fn tojson_writes_python_separators() {
        let v = serde_json::json!({"a": [1, "x\"y", null], "b": {"c": true}});
        let mut s = String::new();
        py_json(&v, None, 0, &mut s);
        assert_eq!(s, r#"{"a": [1, "x\"y", null], "b": {"c": true}}"#);
        let mut s = String::new();
        py_json(&serde_json::json!({"a": [1, 2], "e": []}), Some(2), 0, &mut s);
        assert_eq!(s, "{\n  \"a\": [\n    1,\n    2\n  ],\n  \"e\": []\n}");
    }
}
