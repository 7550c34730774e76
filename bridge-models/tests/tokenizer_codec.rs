//! `HfCodec` on small HF-style directories: EOS/pad resolution, chat templates (HF's Jinja
//! extensions, `chat_template.jinja`, the ChatML fallback) and typed errors.

use bridge_core::{BridgeError, TextCodec};
use bridge_models::tokenizer::{ChatMessage, HfCodec};
use serde_json::json;
use std::path::PathBuf;

fn tokenizer_json() -> serde_json::Value {
    let special = |id: u32, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
               "normalized": false, "special": true})
    };
    json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>"), special(3, "<pad>")],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "unk_token": "<unk>",
                  "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "<pad>": 3, "hello": 4, "world": 5, "a": 6, "b": 7}}
    })
}

/// A fresh directory holding `files` (name, contents).
fn model_dir(tag: &str, files: &[(&str, String)]) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "bridge-tokenizer-tests-{}/{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    dir
}

const TEMPLATE: &str = r#"{{ bos_token }}{% for message in messages %}
{% if loop.first and message['role'] != 'system' %}[SYS]default[/SYS]
{% endif %}
{% if message['role'] not in ['system', 'user', 'assistant'] %}{{ raise_exception('bad role ' + message['role']) }}{% endif %}
[{{ message.role | upper }}]{{ message.content.strip() }}{{ eos_token }}
{% endfor %}
{% if add_generation_prompt %}[ASSISTANT]{% endif %}"#;

fn full_dir(tag: &str) -> PathBuf {
    model_dir(
        tag,
        &[
            ("tokenizer.json", tokenizer_json().to_string()),
            (
                "tokenizer_config.json",
                json!({"chat_template": TEMPLATE, "eos_token": {"content": "</s>"}, "bos_token": "<s>",
                       "pad_token": "<pad>"})
                .to_string(),
            ),
            ("generation_config.json", json!({"eos_token_id": [2, 7]}).to_string()),
            ("config.json", json!({"eos_token_id": 2, "pad_token_id": 0}).to_string()),
        ],
    )
}

#[test]
fn directory_codec_resolves_ids_and_renders_hf_templates() {
    let codec = HfCodec::from_dir(full_dir("full")).unwrap();
    assert_eq!(codec.eos_token_ids(), &[2, 7]);
    assert_eq!(codec.pad_token_id(), 3, "tokenizer_config's pad_token wins over config.json");
    assert_eq!(codec.vocab_size(), 8);
    assert_eq!(codec.encode("hello world b").unwrap(), vec![4, 5, 7]);
    assert_eq!(codec.decode(&[1, 4, 5, 2]).unwrap(), "hello world");
    assert!(matches!(codec.decode(&[8]), Err(BridgeError::Tokenizer(_))));

    // trim_blocks/lstrip_blocks, loop.first, `.strip()` (pycompat), filters, bos/eos tokens
    assert_eq!(codec.render_prompt("  hi  ").unwrap(), "<s>[SYS]default[/SYS]\n[USER]hi</s>\n[ASSISTANT]");
    let msgs = [ChatMessage::new("system", "be brief"), ChatMessage::new("user", "x")];
    assert_eq!(codec.apply_chat_template(&msgs, false).unwrap(), "<s>[SYSTEM]be brief</s>\n[USER]x</s>\n");
    // render_chat (what SFT/RL data use) is the model's template too, and for one user message it
    // is exactly the evaluation prompt (render_prompt), default system prompt included.
    assert_eq!(codec.render_chat(&msgs, false).unwrap(), codec.apply_chat_template(&msgs, false).unwrap());
    assert_eq!(
        codec.render_chat(&[ChatMessage::new("user", "  hi  ")], true).unwrap(),
        codec.render_prompt("  hi  ").unwrap()
    );
    let err = codec.apply_chat_template(&[ChatMessage::new("tool", "x")], true).unwrap_err();
    assert!(matches!(&err, BridgeError::Tokenizer(m) if m.contains("bad role tool")), "{err}");

    codec.check_fits(8).unwrap();
    assert!(matches!(codec.check_fits(7), Err(BridgeError::Tokenizer(m)) if m.contains("8 ids")));
}

#[test]
fn template_sources_and_fallback() {
    // chat_template.jinja beats tokenizer_config.json
    let dir = full_dir("jinja");
    std::fs::write(dir.join("chat_template.jinja"), "{{ messages | length }}|{{ messages[0] | tojson }}").unwrap();
    let codec = HfCodec::from_dir(&dir).unwrap();
    assert_eq!(codec.render_prompt("a \"q\"").unwrap(), r#"1|{"content": "a \"q\"", "role": "user"}"#);

    // a list of named templates: the default one
    let dir = model_dir(
        "list",
        &[
            ("tokenizer.json", tokenizer_json().to_string()),
            (
                "tokenizer_config.json",
                json!({"eos_token": "</s>", "chat_template": [
                    {"name": "tool_use", "template": "TOOLS"},
                    {"name": "default", "template": "{{ messages[0]['content'] }}!"}]})
                .to_string(),
            ),
        ],
    );
    let codec = HfCodec::from_dir(&dir).unwrap();
    assert_eq!(codec.render_prompt("hey").unwrap(), "hey!");
    assert_eq!((codec.eos_token_ids(), codec.pad_token_id()), (&[2][..], 2), "pad falls back to EOS");

    // no template: plain ChatML
    let dir = model_dir(
        "chatml",
        &[("tokenizer.json", tokenizer_json().to_string()), ("config.json", json!({"eos_token_id": 2}).to_string())],
    );
    let codec = HfCodec::from_dir(&dir).unwrap();
    assert_eq!(codec.chat_template(), None);
    assert_eq!(codec.render_prompt("2+2?").unwrap(), "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n");
}

#[test]
fn bad_directories_are_typed_errors() {
    let dir = model_dir("none", &[("config.json", "{}".into())]);
    assert!(matches!(HfCodec::from_dir(&dir), Err(BridgeError::Io { .. })));

    let dir = model_dir("badjson", &[("tokenizer.json", tokenizer_json().to_string()), ("config.json", "{".into())]);
    assert!(matches!(HfCodec::from_dir(&dir), Err(BridgeError::Data { .. })));

    let dir = model_dir("noeos", &[("tokenizer.json", tokenizer_json().to_string())]);
    let err = HfCodec::from_dir(&dir).unwrap_err();
    assert!(err.to_string().contains("no EOS token"), "{err}");

    let dir = model_dir("badtok", &[("tokenizer.json", "{\"model\": 3}".into())]);
    assert!(matches!(HfCodec::from_dir(&dir), Err(BridgeError::Tokenizer(_))));

    let dir = model_dir(
        "syntax",
        &[
            ("tokenizer.json", tokenizer_json().to_string()),
            ("tokenizer_config.json", json!({"eos_token": "</s>", "chat_template": "{% for %}"}).to_string()),
        ],
    );
    assert!(matches!(HfCodec::from_dir(&dir), Err(BridgeError::Tokenizer(m)) if m.contains("chat template")));

    let dir = model_dir(
        "oov",
        &[("tokenizer.json", tokenizer_json().to_string()), ("config.json", json!({"eos_token_id": 99}).to_string())],
    );
    assert!(matches!(HfCodec::from_dir(&dir), Err(BridgeError::Tokenizer(m)) if m.contains("99")));
}
