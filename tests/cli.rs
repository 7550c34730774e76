//! The examples' flags (`examples/cli/*.rs`, included here as the examples include them): each
//! example parses its documented command lines, and every bad flag — a malformed or
//! out-of-range value, an unknown flag, a missing or conflicting one — is an error naming it.

#![allow(dead_code)]

#[path = "../examples/cli/common.rs"]
mod common;

#[path = "../examples/cli/bench_forward.rs"]
mod bench_forward;
#[path = "../examples/cli/bench_generate.rs"]
mod bench_generate;
#[path = "../examples/cli/bench_steps.rs"]
mod bench_steps;
#[path = "../examples/cli/convert.rs"]
mod convert;
#[path = "../examples/cli/eval.rs"]
mod eval;
#[path = "../examples/cli/generate.rs"]
mod generate;
#[path = "../examples/cli/gpu.rs"]
mod gpu;
#[path = "../examples/cli/score.rs"]
mod score;
#[path = "../examples/cli/train.rs"]
mod train;
#[path = "../examples/cli/verify.rs"]
mod verify;

use bridge_models::{DecodeEngine, Precision};
use clap::Parser;
use clap::error::ErrorKind;

/// `argv` is refused with an error of `kind` whose message names every one of `names`.
fn refused<P: Parser + std::fmt::Debug>(argv: &[&str], kind: ErrorKind, names: &[&str]) {
    let e = P::try_parse_from(argv).expect_err(&format!("{argv:?} should be refused"));
    assert_eq!(e.kind(), kind, "{argv:?}: {e}");
    let text = e.to_string();
    for n in names {
        assert!(text.contains(n), "{argv:?}: the error does not name {n}: {text}");
    }
}

#[test]
fn train_flags() {
    use train::Args;
    let a = Args::try_parse_from(["train", "--config", "c.toml", "--steps", "10"]).unwrap();
    assert_eq!((a.steps, a.resume.is_none(), a.overwrite), (Some(10), true, false));
    let a = Args::try_parse_from(["train", "--config", "c.toml", "--resume", "runs/x"]).unwrap();
    assert_eq!(a.resume.as_deref(), Some(std::path::Path::new("runs/x")));
    refused::<Args>(
        &["train", "--config", "c.toml", "--steps", "ten"],
        ErrorKind::ValueValidation,
        &["--steps", "ten"],
    );
    refused::<Args>(&["train", "--config", "c.toml", "--steps", "-3"], ErrorKind::ValueValidation, &["--steps", "-3"]);
    refused::<Args>(&["train", "--config", "c.toml", "--steps", "0"], ErrorKind::ValueValidation, &["--steps"]);
    refused::<Args>(&["train", "--config", "c.toml", "--step", "3"], ErrorKind::UnknownArgument, &["--step"]);
    refused::<Args>(&["train", "--steps", "3"], ErrorKind::MissingRequiredArgument, &["--config"]);
    refused::<Args>(&["train", "--config", "c.toml", "--steps"], ErrorKind::InvalidValue, &["--steps"]);
    refused::<Args>(
        &["train", "--config", "c.toml", "--resume", "d", "--overwrite"],
        ErrorKind::ArgumentConflict,
        &["--resume", "--overwrite"],
    );
}

#[test]
fn eval_flags() {
    use eval::Args;
    let base = ["eval", "--model", "m", "--data", "a.jsonl", "--data", "b.jsonl"];
    let a = Args::try_parse_from(base).unwrap();
    assert_eq!(a.data.len(), 2);
    let cfg = a.eval_config().unwrap();
    assert_eq!((cfg.max_new_tokens, cfg.batch_size, cfg.greedy, cfg.sampled.is_none()), (1024, 8, true, true));
    let with = |extra: &[&'static str]| [&base[..], extra].concat();
    let a = Args::try_parse_from(with(&["--k", "4", "--top-p", "1", "--no-greedy"])).unwrap();
    let cfg = a.eval_config().unwrap();
    assert_eq!((cfg.greedy, cfg.sampled.as_ref().map(|s| (s.k, s.top_p))), (false, Some((4, None))));
    refused::<Args>(&with(&["--k", "abc"]), ErrorKind::ValueValidation, &["--k", "abc"]);
    refused::<Args>(&with(&["--k", "0"]), ErrorKind::ValueValidation, &["--k"]);
    refused::<Args>(&with(&["--limit", "-1"]), ErrorKind::ValueValidation, &["--limit"]);
    refused::<Args>(&with(&["--max-new-tokens", "1.5"]), ErrorKind::ValueValidation, &["--max-new-tokens"]);
    refused::<Args>(&with(&["--format", "csv"]), ErrorKind::ValueValidation, &["--format", "csv"]);
    refused::<Args>(&with(&["--device", "tpu"]), ErrorKind::ValueValidation, &["--device", "tpu"]);
    refused::<Args>(&with(&["--temperature", "0.7"]), ErrorKind::MissingRequiredArgument, &["--k"]);
    refused::<Args>(&with(&["--k", "2", "--top-p", "1.5"]), ErrorKind::ValueValidation, &["--top-p"]);
    refused::<Args>(&with(&["--no-greedy"]), ErrorKind::MissingRequiredArgument, &["--k"]);
    refused::<Args>(
        &with(&["--instruction", "x", "--template", "{question}"]),
        ErrorKind::ArgumentConflict,
        &["--instruction", "--template"],
    );
    refused::<Args>(&with(&["--bogus"]), ErrorKind::UnknownArgument, &["--bogus"]);
    refused::<Args>(&["eval", "--model", "m"], ErrorKind::MissingRequiredArgument, &["--data"]);
}

/// Every example that runs a model takes the same `--model DIR|FILE.gguf [--adapter DIR]`
/// (`common::ModelArgs`).
#[test]
fn model_flags_are_shared() {
    let m = ["--model", "m.gguf", "--adapter", "runs/x/final/adapter"];
    let check = |a: &common::ModelArgs| {
        assert_eq!(a.path, std::path::Path::new("m.gguf"));
        assert_eq!(a.adapter.as_deref(), Some(std::path::Path::new("runs/x/final/adapter")));
    };
    check(&eval::Args::try_parse_from([&["eval"][..], &m, &["--data", "d.jsonl"]].concat()).unwrap().model);
    check(&score::Args::try_parse_from([&["score"][..], &m, &["--ids", "1"]].concat()).unwrap().model);
    check(&generate::Args::try_parse_from([&["generate"][..], &m, &["--ids", "1"]].concat()).unwrap().model);
    let c = convert::Args::try_parse_from([&["convert"][..], &m, &["--out", "hf"]].concat()).unwrap();
    check(&c.model);
    assert!(!c.overwrite);
    let a = eval::Args::try_parse_from(["eval", "--model", "m", "--data", "d", "--dtype", "bf16"]).unwrap();
    assert_eq!(a.placement.dtype, bridge_models::WeightDType::Bf16);
    refused::<convert::Args>(&["convert", "--model", "m.gguf"], ErrorKind::MissingRequiredArgument, &["--out"]);
    refused::<convert::Args>(&["convert", "--out", "d"], ErrorKind::MissingRequiredArgument, &["--model"]);
    refused::<convert::Args>(
        &["convert", "--model", "m", "--out", "d", "--adapter"],
        ErrorKind::InvalidValue,
        &["--adapter"],
    );
    refused::<eval::Args>(&["eval", "--data", "d"], ErrorKind::MissingRequiredArgument, &["--model"]);
}

#[test]
fn verify_flags() {
    verify::Args::try_parse_from(["verify"]).unwrap();
    refused::<verify::Args>(&["verify", "--strict"], ErrorKind::UnknownArgument, &["--strict"]);
}

#[test]
fn score_and_generate_flags() {
    let a = score::Args::try_parse_from(["score", "--model", "m.gguf", "--ids", "1, 2 3"]).unwrap();
    assert_eq!(a.ids.map(|l| l.0), Some(vec![1, 2, 3]));
    refused::<score::Args>(&["score", "--model", "m", "--ids", "1 x"], ErrorKind::ValueValidation, &["--ids", "x"]);
    refused::<score::Args>(&["score", "--model", "m"], ErrorKind::MissingRequiredArgument, &["--ids", "--text"]);
    refused::<score::Args>(
        &["score", "--model", "m", "--ids", "1", "--text", "a"],
        ErrorKind::ArgumentConflict,
        &["--ids", "--text"],
    );
    refused::<score::Args>(
        &["score", "--model", "m", "--ids", "1", "--dtype", "f8"],
        ErrorKind::ValueValidation,
        &["--dtype", "f8"],
    );

    let a =
        generate::Args::try_parse_from(["generate", "--model", "m", "--text", "hi", "--greedy", "--n", "2"]).unwrap();
    let p = a.params().unwrap();
    assert_eq!((p.temperature, p.n, p.max_new_tokens), (0.0, 2, 32));
    let g = |extra: &[&'static str]| [&["generate", "--model", "m", "--text", "hi"][..], extra].concat();
    refused::<generate::Args>(&g(&["--max-new-tokens", "lots"]), ErrorKind::ValueValidation, &["--max-new-tokens"]);
    refused::<generate::Args>(&g(&["--temperature", "-1"]), ErrorKind::ValueValidation, &["--temperature"]);
    refused::<generate::Args>(&g(&["--top-p", "0"]), ErrorKind::ValueValidation, &["--top-p"]);
    refused::<generate::Args>(&g(&["--top-k", "0"]), ErrorKind::ValueValidation, &["--top-k"]);
    refused::<generate::Args>(&g(&["--n", "0"]), ErrorKind::ValueValidation, &["--n"]);
    refused::<generate::Args>(&g(&["--seed", "-2"]), ErrorKind::ValueValidation, &["--seed"]);
    refused::<generate::Args>(
        &g(&["--greedy", "--temperature", "0.5"]),
        ErrorKind::ArgumentConflict,
        &["--greedy", "--temperature"],
    );
    refused::<generate::Args>(&g(&["--top_p", "0.5"]), ErrorKind::UnknownArgument, &["--top_p"]);
}

#[test]
fn bench_flags() {
    let a = bench_forward::Args::try_parse_from(["bench_forward"]).unwrap();
    assert_eq!((a.batch, a.seq_len, a.steps, a.warmup, a.backward_steps), (16, 64, 20, 3, None));
    assert_eq!((a.attention, a.chunked_scores), (bridge_models::AttentionPath::Auto, true));
    let a = bench_forward::Args::try_parse_from(["bench_forward", "--attention", "fused", "--chunked-scores", "off"])
        .unwrap();
    assert_eq!((a.attention, a.chunked_scores), (bridge_models::AttentionPath::Fused, false));
    refused::<bench_forward::Args>(
        &["bench_forward", "--attention", "flash"],
        ErrorKind::ValueValidation,
        &["--attention"],
    );
    refused::<bench_forward::Args>(
        &["bench_forward", "--chunked-scores", "yes"],
        ErrorKind::ValueValidation,
        &["--chunked-scores"],
    );
    refused::<bench_forward::Args>(&["bench_forward", "--steps", "abc"], ErrorKind::ValueValidation, &["--steps"]);
    refused::<bench_forward::Args>(&["bench_forward", "--seq-len", "1"], ErrorKind::ValueValidation, &["--seq-len"]);
    refused::<bench_forward::Args>(&["bench_forward", "--engine", "gpu"], ErrorKind::ValueValidation, &["--engine"]);
    refused::<bench_forward::Args>(&["bench_forward", "--stepz", "3"], ErrorKind::UnknownArgument, &["--stepz"]);

    let a = bench_generate::Args::try_parse_from(["bench_generate", "--batches", "1,4", "--modes", "sample"]).unwrap();
    assert_eq!((a.batches.0, a.modes.0), (vec![1, 4], vec![("sample".to_string(), 1.0)]));
    let bg = |extra: &[&'static str]| [&["bench_generate"][..], extra].concat();
    refused::<bench_generate::Args>(&bg(&["--batches", "1,0"]), ErrorKind::ValueValidation, &["--batches"]);
    refused::<bench_generate::Args>(&bg(&["--modes", "beam"]), ErrorKind::ValueValidation, &["--modes", "beam"]);
    refused::<bench_generate::Args>(&bg(&["--repeats", "x"]), ErrorKind::ValueValidation, &["--repeats"]);
    refused::<bench_generate::Args>(&bg(&["--prompt-len", "0"]), ErrorKind::ValueValidation, &["--prompt-len"]);
    refused::<bench_generate::Args>(&bg(&["--new-tokens"]), ErrorKind::InvalidValue, &["--new-tokens"]);

    let a = bench_steps::Args::try_parse_from(["bench_steps", "--algorithm", "bridge"]).unwrap();
    assert_eq!(a.algorithm, "bridge");
    refused::<bench_steps::Args>(
        &["bench_steps", "--algorithm", "grpo"],
        ErrorKind::ValueValidation,
        &["--algorithm", "grpo"],
    );
    refused::<bench_steps::Args>(&["bench_steps", "--steps", "ten"], ErrorKind::ValueValidation, &["--steps"]);
}

#[test]
fn gpu_flags() {
    use gpu::{Args, Command};
    let a = Args::try_parse_from(["gpu", "bench", "--what", "generate", "--gen-shapes", "tiny"]).unwrap();
    let Command::Bench(b) = a.command else { panic!("bench") };
    assert_eq!(
        (b.generation().batches, b.what.0, b.gen_shapes.0),
        (vec![64], vec!["generate".to_string()], vec!["tiny".to_string()])
    );
    let a = Args::try_parse_from(["gpu", "train", "--config", "c.toml", "--time-limit-s", "90"]).unwrap();
    assert!(matches!(a.command, Command::Train(t) if t.time_limit_s == Some(90.0)));
    refused::<Args>(&["gpu"], ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand, &["check", "bench", "train"]);
    refused::<Args>(&["gpu", "fly"], ErrorKind::InvalidSubcommand, &["fly"]);
    refused::<Args>(&["gpu", "check", "--device", "tpu"], ErrorKind::ValueValidation, &["--device"]);
    let a = Args::try_parse_from(["gpu", "dp", "--device", "flex"]).unwrap();
    assert!(matches!(a.command, Command::Dp { steps: 3, .. }));
    refused::<Args>(&["gpu", "dp", "--steps", "0"], ErrorKind::ValueValidation, &["--steps"]);
    refused::<Args>(&["gpu", "dp", "--devices", "2"], ErrorKind::UnknownArgument, &["--devices"]);
    refused::<Args>(&["gpu", "bench", "--what", "eval"], ErrorKind::ValueValidation, &["--what", "eval"]);
    refused::<Args>(&["gpu", "bench", "--train-shape", "gpt5"], ErrorKind::ValueValidation, &["--train-shape"]);
    refused::<Args>(&["gpu", "bench", "--train-batch", "many"], ErrorKind::ValueValidation, &["--train-batch"]);
    refused::<Args>(&["gpu", "bench", "--selection", "gpu"], ErrorKind::ValueValidation, &["--selection"]);
    refused::<Args>(&["gpu", "train", "--config", "c", "--steps", "ten"], ErrorKind::ValueValidation, &["--steps"]);
    refused::<Args>(
        &["gpu", "train", "--config", "c", "--time-limit-s", "-5"],
        ErrorKind::ValueValidation,
        &["--time-limit-s"],
    );
    refused::<Args>(&["gpu", "train", "--config", "c", "--resume", "d"], ErrorKind::UnknownArgument, &["--resume"]);
    // the generation side's flags: engines, capture, launch counts, partial results, overrides
    let a = Args::try_parse_from([
        "gpu",
        "bench",
        "--what",
        "generate,launches",
        "--engines",
        "graph,tensor",
        "--capture",
        "false",
        "--launches",
        "2,6",
        "--partial",
        "p.json",
    ])
    .unwrap();
    let Command::Bench(b) = a.command else { panic!("bench") };
    assert_eq!(
        (b.engines.0.clone(), b.generation().capture, b.launches),
        (vec![DecodeEngine::Graph, DecodeEngine::Tensor], false, (2, 6))
    );
    assert_eq!(b.partial, Some(std::path::PathBuf::from("p.json")));
    let a = Args::try_parse_from(["gpu", "bench"]).unwrap();
    let Command::Bench(b) = a.command else { panic!("bench") };
    assert_eq!((b.engines.0.clone(), b.generation().capture, b.launches), (vec![DecodeEngine::Auto], true, (4, 12)));
    let a = Args::try_parse_from([
        "gpu",
        "train",
        "--config",
        "c.toml",
        "--decode-engine",
        "tensor",
        "--set",
        "rl.sampling.n=2",
        "--set",
        "eval.limit=3",
    ])
    .unwrap();
    let Command::Train(t) = a.command else { panic!("train") };
    assert_eq!(t.decode_engine, Some(DecodeEngine::Tensor));
    assert_eq!(t.sets, [("rl.sampling.n".to_string(), "2".to_string()), ("eval.limit".to_string(), "3".to_string())]);
    let a = Args::try_parse_from(["gpu", "compare", "--run", "bridge=runs/b", "--run", "rl=runs/r", "--png", "x.png"])
        .unwrap();
    let Command::Compare(c) = a.command else { panic!("compare") };
    assert_eq!(c.runs().len(), 2);
    assert_eq!(c.runs()[1], ("rl".to_string(), std::path::PathBuf::from("runs/r")));
    refused::<Args>(&["gpu", "bench", "--engines", "warp"], ErrorKind::ValueValidation, &["--engines", "warp"]);
    refused::<Args>(&["gpu", "bench", "--capture", "maybe"], ErrorKind::InvalidValue, &["--capture"]);
    refused::<Args>(&["gpu", "bench", "--launches", "12,4"], ErrorKind::ValueValidation, &["--launches"]);
    refused::<Args>(&["gpu", "train", "--config", "c", "--set", "novalue"], ErrorKind::ValueValidation, &["--set"]);
    refused::<Args>(
        &["gpu", "train", "--config", "c", "--decode-engine", "fast"],
        ErrorKind::ValueValidation,
        &["--decode-engine"],
    );
    refused::<Args>(&["gpu", "compare"], ErrorKind::MissingRequiredArgument, &["--run"]);
    // the training step's precision: --precision, else --dtype's
    let precision = |argv: &[&str]| match Args::try_parse_from(argv).unwrap().command {
        Command::Bench(b) => b.train_precision(),
        _ => panic!("bench"),
    };
    assert_eq!(precision(&["gpu", "bench"]), Some(Precision::Bf16));
    assert_eq!(precision(&["gpu", "bench", "--dtype", "f32"]), Some(Precision::F32));
    assert_eq!(precision(&["gpu", "bench", "--precision", "mixed_bf16"]), Some(Precision::MixedBf16));
    assert_eq!(precision(&["gpu", "bench", "--dtype", "f16"]), None);
    refused::<Args>(&["gpu", "bench", "--precision", "fp8"], ErrorKind::ValueValidation, &["--precision", "fp8"]);
}
