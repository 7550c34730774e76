//! The JSONL loaders: every format, every malformed-line case, and the shipped GSM-Symbolic file.

use bridge_core::DataFormat;
use bridge_core::testing::CharCodec;
use bridge_core::{BridgeError, ChatMessage, ExampleSource, TextCodec};
use bridge_sft::data::{DatasetConfig, PromptTemplate, load_rl_prompts, load_sft_examples};
use std::path::PathBuf;

fn write(name: &str, text: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("bridge-sft-data-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn codec() -> CharCodec {
    CharCodec::new("abc")
}

fn plain() -> PromptTemplate {
    PromptTemplate::plain("Question: {question}\nAnswer: ")
}

#[test]
fn gsm8k_loads_for_sft_and_rl() {
    let path = write(
        "gsm.jsonl",
        "{\"question\": \"What is 2+2?\", \"answer\": \"2+2=4\\n#### 4\"}\n\n   \n{\"question\": \"Big?\", \"answer\": \"so\\n#### 1,234,567\", \"level\": 3}\n",
    );
    let sft = load_sft_examples(&path, DataFormat::Auto, &plain(), &codec()).unwrap();
    assert_eq!(sft.len(), 2);
    let e = sft.get(0).unwrap();
    assert_eq!(e.prompt, "Question: What is 2+2?\nAnswer: ");
    assert_eq!(e.completion, "2+2=4\n#### 4");
    assert_eq!(e.id, "gsm.jsonl:1");
    assert_eq!(sft.get(1).unwrap().id, "gsm.jsonl:4", "blank lines are skipped but still counted");

    let rl = load_rl_prompts(&path, DataFormat::Gsm8k, &plain(), &codec()).unwrap();
    assert_eq!(rl.len(), 2);
    let p = rl.get(1).unwrap();
    assert_eq!(p.prompt, "Question: Big?\nAnswer: ");
    assert_eq!(p.reference, "1234567");
    assert_eq!(p.metadata["level"], 3);
    assert_eq!(p.metadata["format"], "gsm8k");
    assert_eq!(p.metadata["source"], "gsm.jsonl:4");
    assert_eq!(rl.get(0).unwrap().prompt, sft.get(0).unwrap().prompt, "D_SFT and D_RL share the prompt");
    // The row's worked solution is the prompt's demonstration (LUFFY's off-policy trace).
    for i in 0..2 {
        assert_eq!(rl.get(i).unwrap().demonstration.as_ref(), Some(&sft.get(i).unwrap().completion));
    }

    // The chat template: a user message, optionally after a system prompt.
    let chat = PromptTemplate::Chat { system_prompt: Some("Think.".into()), instruction: None };
    let sft = load_sft_examples(&path, DataFormat::Auto, &chat, &codec()).unwrap();
    let expected =
        codec().render_chat(&[ChatMessage::new("system", "Think."), ChatMessage::new("user", "What is 2+2?")], true);
    assert_eq!(sft.get(0).unwrap().prompt, expected.unwrap());
    // Without a system prompt a question is the codec's single-message prompt (`render_prompt`),
    // exactly what bridge-eval's chat prompt gives; this test codec has no chat template, so that
    // is the bare question.
    let sft = load_sft_examples(&path, DataFormat::Auto, &PromptTemplate::default(), &codec()).unwrap();
    assert_eq!(sft.get(0).unwrap().prompt, codec().render_prompt("What is 2+2?").unwrap());
    assert_eq!(sft.get(0).unwrap().prompt, "What is 2+2?");
}

#[test]
fn math_loads_with_answer_field_or_boxed() {
    let path = write(
        "math.jsonl",
        concat!(
            r#"{"problem": "Half?", "solution": "It is $\\boxed{\\frac{1}{2}}$.", "level": "Level 2"}"#,
            "\n",
            r#"{"problem": "P", "solution": "first \\boxed{1}, then \\boxed{ 2 }", "answer": "3", "id": "m-7"}"#,
            "\n",
            r#"{"problem": "Q", "solution": "\\boxed{4}", "answer": 5}"#,
            "\n"
        ),
    );
    let sft = load_sft_examples(&path, DataFormat::Auto, &plain(), &codec()).unwrap();
    assert_eq!(sft.len(), 3);
    assert_eq!(sft.get(0).unwrap().completion, "It is $\\boxed{\\frac{1}{2}}$.");
    assert_eq!(sft.get(1).unwrap().id, "m-7");
    let rl = load_rl_prompts(&path, DataFormat::Auto, &plain(), &codec()).unwrap();
    let refs: Vec<String> = rl.iter().map(|p| p.unwrap().reference).collect();
    assert_eq!(refs, vec!["\\frac{1}{2}", "3", "5"]);
    let demos: Vec<Option<String>> = rl.iter().map(|p| p.unwrap().demonstration).collect();
    let solutions: Vec<Option<String>> = sft.iter().map(|e| Some(e.unwrap().completion)).collect();
    assert_eq!(demos, solutions, "the solution is the demonstration");
    assert_eq!(rl.get(0).unwrap().metadata["level"], "Level 2");
    assert_eq!(rl.get(1).unwrap().id, "m-7");
    // Forced to the math format, a row with an answer but no solution is a prompt without one.
    let bare = write("math-bare.jsonl", "{\"problem\": \"R\", \"answer\": \"7\"}\n");
    let p = load_rl_prompts(&bare, DataFormat::Math, &plain(), &codec()).unwrap().get(0).unwrap();
    assert_eq!((p.reference.as_str(), p.demonstration.as_ref()), ("7", None));
}

#[test]
fn prompt_completion_loads_and_needs_an_answer_for_rl() {
    let path = write(
        "pc.jsonl",
        concat!(
            r#"{"prompt": "1+1=", "completion": "2", "answer": "2"}"#,
            "\n",
            r#"{"prompt": "2+2=", "completion": "4"}"#,
            "\n"
        ),
    );
    let cfg = DatasetConfig { template: PromptTemplate::plain("{question}"), ..DatasetConfig::new(&path) };
    let sft = cfg.load_sft(&codec()).unwrap();
    assert_eq!((sft.get(1).unwrap().prompt.as_str(), sft.get(1).unwrap().completion.as_str()), ("2+2=", "4"));
    let e = cfg.load_rl(&codec()).unwrap_err();
    assert_data_error(&e, "pc.jsonl", 2, Some("answer"));
    let first = DatasetConfig { max_examples: Some(1), ..cfg };
    let p = first.load_rl(&codec()).unwrap().get(0).unwrap();
    assert_eq!((p.reference.as_str(), p.demonstration.as_deref()), ("2", Some("2")));
}

#[test]
fn conversations_load_with_the_last_assistant_message_as_completion() {
    let path = write(
        "chat.jsonl",
        concat!(
            r#"{"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}], "answer": "4"}"#,
            "\n",
            r#"{"messages": [{"role": "user", "content": "3+3?"}, {"role": "assistant", "content": "6"}], "answer": 6}"#,
            "\n"
        ),
    );
    let chat = PromptTemplate::Chat { system_prompt: Some("Default system".into()), instruction: None };
    let sft = load_sft_examples(&path, DataFormat::Auto, &chat, &codec()).unwrap();
    let c = codec();
    let e0 = sft.get(0).unwrap();
    let history = [
        ChatMessage::new("system", "S"),
        ChatMessage::new("user", "Hi"),
        ChatMessage::new("assistant", "Hello"),
        ChatMessage::new("user", "2+2?"),
    ];
    assert_eq!(e0.prompt, c.render_chat(&history, true).unwrap(), "own system message kept, default not added");
    assert_eq!(e0.completion, "4");
    let e1 = sft.get(1).unwrap();
    let with_default = [ChatMessage::new("system", "Default system"), ChatMessage::new("user", "3+3?")];
    assert_eq!(e1.prompt, c.render_chat(&with_default, true).unwrap());
    assert_eq!(e1.completion, "6");

    let rl = load_rl_prompts(&path, DataFormat::Messages, &chat, &c).unwrap();
    assert_eq!(rl.get(0).unwrap().prompt, e0.prompt);
    assert_eq!(rl.get(1).unwrap().reference, "6");
    assert_eq!(rl.get(1).unwrap().demonstration.as_deref(), Some("6"), "the final assistant message");

    let sft = load_sft_examples(&path, DataFormat::Auto, &PromptTemplate::plain("<{question}>"), &c).unwrap();
    assert_eq!(sft.get(1).unwrap().prompt, "<3+3?>");
    assert_eq!(sft.get(0).unwrap().prompt, "<S\n\nHi\n\nHello\n\n2+2?>");
}

fn assert_data_error(e: &BridgeError, file: &str, line: usize, field: Option<&str>) {
    match e {
        BridgeError::Data { path, line: l, field: f, .. } => {
            assert!(path.ends_with(file), "{e}");
            assert_eq!(*l, line, "{e}");
            assert_eq!(f.as_deref(), field, "{e}");
            let prefix = format!(":{line}: ");
            assert!(e.to_string().contains(&prefix), "{e}");
            if let Some(field) = field {
                assert!(e.to_string().contains(&format!("field `{field}`")), "{e}");
            }
        }
        other => panic!("expected a data error, got {other}"),
    }
}

#[test]
fn malformed_lines_name_file_line_and_field() {
    let good = r#"{"question": "q", "answer": "a #### 1"}"#;
    let cases: Vec<(&str, String, DataFormat, usize, Option<&str>)> = vec![
        ("bad_json", format!("{good}\n\n{{\"question\": \"q\", \"answer\": \n"), DataFormat::Auto, 3, None),
        ("not_object", format!("{good}\n[1, 2]\n"), DataFormat::Auto, 2, None),
        ("missing", format!("{good}\n{{\"question\": \"q\"}}\n"), DataFormat::Auto, 2, Some("answer")),
        ("wrong_type", format!("{good}\n{{\"question\": 5, \"answer\": \"x\"}}\n"), DataFormat::Auto, 2, Some("question")),
        ("undetectable", "{\"text\": \"q\"}\n".into(), DataFormat::Auto, 1, None),
        ("forced_format", format!("{good}\n"), DataFormat::PromptCompletion, 1, Some("prompt")),
        ("empty_messages", "{\"messages\": []}\n".into(), DataFormat::Auto, 1, Some("messages")),
        ("messages_type", "{\"messages\": \"hi\"}\n".into(), DataFormat::Auto, 1, Some("messages")),
        (
            "last_not_assistant",
            "{\"messages\": [{\"role\": \"assistant\", \"content\": \"a\"}]}\n{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}]}\n"
                .into(),
            DataFormat::Auto,
            2,
            Some("messages"),
        ),
        (
            "message_content",
            "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\"}]}\n".into(),
            DataFormat::Auto,
            1,
            Some("messages[1].content"),
        ),
        (
            "message_role_type",
            "{\"messages\": [{\"role\": 1, \"content\": \"q\"}]}\n".into(),
            DataFormat::Auto,
            1,
            Some("messages[0].role"),
        ),
        ("message_not_object", "{\"messages\": [\"q\"]}\n".into(), DataFormat::Auto, 1, Some("messages[0]")),
        ("empty_file", "\n\n".into(), DataFormat::Auto, 1, None),
    ];
    for (name, text, format, line, field) in cases {
        let file = format!("{name}.jsonl");
        let path = write(&file, &text);
        let e = load_sft_examples(&path, format, &plain(), &codec()).expect_err(name);
        assert_data_error(&e, &file, line, field);
    }

    // RL-only requirements.
    let path = write("no_marker.jsonl", &format!("{good}\n{{\"question\": \"q\", \"answer\": \"no marker\"}}\n"));
    assert!(load_sft_examples(&path, DataFormat::Auto, &plain(), &codec()).is_ok(), "SFT does not need ####");
    let e = load_rl_prompts(&path, DataFormat::Auto, &plain(), &codec()).unwrap_err();
    assert_data_error(&e, "no_marker.jsonl", 2, Some("answer"));
    let path = write("no_boxed.jsonl", "{\"problem\": \"p\", \"solution\": \"s\"}\n");
    let e = load_rl_prompts(&path, DataFormat::Auto, &plain(), &codec()).unwrap_err();
    assert_data_error(&e, "no_boxed.jsonl", 1, Some("solution"));
    let path = write("answer_type.jsonl", "{\"problem\": \"p\", \"solution\": \"s\", \"answer\": [1]}\n");
    let e = load_rl_prompts(&path, DataFormat::Auto, &plain(), &codec()).unwrap_err();
    assert_data_error(&e, "answer_type.jsonl", 1, Some("answer"));

    // A missing file is an I/O error naming it; a bad template is a config error.
    let e = load_sft_examples("/nonexistent/x.jsonl", DataFormat::Auto, &plain(), &codec()).unwrap_err();
    assert!(matches!(e, BridgeError::Io { .. }) && e.to_string().contains("/nonexistent/x.jsonl"), "{e}");
    let path = write("ok.jsonl", &format!("{good}\n"));
    let e = load_sft_examples(&path, DataFormat::Auto, &PromptTemplate::plain("no slot"), &codec()).unwrap_err();
    assert!(matches!(e, BridgeError::Config { .. }), "{e}");
}

#[test]
fn gsm_symbolic_train_loads_with_both_loaders() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/gsm_symbolic/train.jsonl");
    if !path.exists() {
        println!("skipping: {} does not exist", path.display());
        return;
    }
    let sft = load_sft_examples(&path, DataFormat::Auto, &plain(), &codec()).unwrap();
    let rl = load_rl_prompts(&path, DataFormat::Auto, &plain(), &codec()).unwrap();
    assert_eq!((sft.len(), rl.len()), (7000, 7000));
    for (e, p) in sft.items().iter().zip(rl.items()) {
        assert_eq!(e.prompt, p.prompt);
        assert!(e.completion.contains("####"), "{}", e.id);
        assert!(p.reference.parse::<f64>().is_ok(), "{}: reference {:?} is not a number", p.id, p.reference);
    }
}

/// Text the model's codec cannot encode is found when the data is loaded for training, and the
/// error names the file, the line and the field.
#[test]
fn unencodable_text_names_file_line_and_field() {
    use bridge_sft::{SftTokenizer, TokenizeConfig};
    let codec = CharCodec::new("abcQ:? \n#4");
    let template = PromptTemplate::plain("Q: {question}\n");
    let path = write(
        "unencodable.jsonl",
        "{\"question\": \"abc\", \"answer\": \"cab\\n#### 4\"}\n{\"question\": \"abz\", \"answer\": \"a\\n#### 4\"}\n",
    );
    let cfg = DatasetConfig { template: template.clone(), ..DatasetConfig::new(&path) };
    let e = cfg.load_rl_encoded(&codec).unwrap_err();
    assert_data_error(&e, "unencodable.jsonl", 2, Some("question"));
    assert!(e.to_string().contains("'z'"), "{e}");
    let tokenize = TokenizeConfig::default();
    let tokenizer = SftTokenizer::new(&codec, &tokenize).unwrap();
    let e = cfg.load_sft_tokenized(&tokenizer).unwrap_err();
    assert_data_error(&e, "unencodable.jsonl", 2, Some("question"));
    // The completion side, and a record that encodes.
    let path = write("unencodable2.jsonl", "{\"question\": \"abc\", \"answer\": \"c!\\n#### 4\"}\n");
    let cfg = DatasetConfig { template, ..DatasetConfig::new(&path) };
    assert_data_error(&cfg.load_sft_tokenized(&tokenizer).unwrap_err(), "unencodable2.jsonl", 1, Some("answer"));
    let (prompts, ids) = cfg.load_rl_encoded(&codec).unwrap();
    assert_eq!((prompts.len(), ids), (1, vec![codec.encode("Q: abc\n").unwrap()]));
    let ok = write("encodable.jsonl", "{\"question\": \"abc\", \"answer\": \"cab\\n#### 4\"}\n");
    let source = DatasetConfig { template: PromptTemplate::plain("Q: {question}\n"), ..DatasetConfig::new(&ok) }
        .load_sft_tokenized(&tokenizer)
        .unwrap();
    assert_eq!(source.len(), 1);
}
