//! Shared by the root's integration tests: a generated task and a tiny random model.

#![allow(dead_code)]

use bridge::tasks::{ALPHABET, TaskConfig, generate};
use std::path::{Path, PathBuf};

/// Writes the data of a two-level task (`data/sft.jsonl`, `rl.jsonl`, `test.jsonl`, …) and a tiny
/// Qwen2 `config.json` into `dir` (emptied first); returns the data directory.
pub fn setup(dir: &Path) -> PathBuf {
    if dir.exists() {
        std::fs::remove_dir_all(dir).unwrap();
    }
    let data = dir.join("data");
    let task = TaskConfig {
        levels: 2,
        n_pretrain: 20,
        pretrain_problems: vec![5, 5],
        n_sft: 16,
        n_rl: 16,
        n_test: 8,
        ..TaskConfig::default()
    };
    generate(&task).unwrap().write_jsonl(&data).unwrap();
    let model = serde_json::json!({
        "model_type": "qwen2", "vocab_size": ALPHABET.chars().count() + 1, "hidden_size": 16,
        "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
        "tie_word_embeddings": true, "rope_theta": 10000.0, "eos_token_id": 0
    });
    std::fs::write(dir.join("config.json"), model.to_string()).unwrap();
    data
}

/// The `[model]`, `[data.*]` and `[eval]` sections of a run on [`setup`]'s files (plain
/// `Q: …\nA: ` prompts, the task's character codec).
pub fn model_and_data(dir: &Path, data: &Path) -> String {
    let alphabet = ALPHABET.replace('\\', "\\\\").replace('\n', "\\n");
    format!(
        r#"
        [model]
        config = "{model}"
        codec = {{ kind = "chars", alphabet = "{alphabet}" }}
        [data.sft]
        path = "{data}/sft.jsonl"
        template = {{ kind = "plain", template = "Q: {{question}}\nA: " }}
        [data.rl]
        path = "{data}/rl.jsonl"
        template = {{ kind = "plain", template = "Q: {{question}}\nA: " }}
        [[data.eval]]
        path = "{data}/test.jsonl"
        [eval]
        max_new_tokens = 8
        prompt = {{ kind = "plain", template = "Q: {{question}}\nA: " }}
        "#,
        model = dir.join("config.json").display(),
        data = data.display(),
    )
}
