//! Throughput measurements behind the benchmark examples (`bench_generate`, `gpu`): a training
//! step (forward + backward + AdamW) and KV-cache generation, on whatever device the weights
//! live on, and the model shapes the GPU benchmarks use.
//!
//! Every figure is a wall-clock time around work that ends in a device synchronisation, so that
//! asynchronous backends (CUDA) are timed for what they computed, not for what they queued.
//! Warm-up runs come first (kernel compilation and autotuning on the GPU).

use bridge_core::policy::{CausalLm, SamplingParams, SequenceBatch, TokenSelection, TokenSequence};
use bridge_core::{AdamWSettings, BridgeError, BridgeRng, FlatGradients, GroupOptimizer, Result};
use bridge_models::generate::{DecodeEngine, GenerationStats, Generator};
use bridge_models::{Decoder, DecoderConfig, DecoderWeights};
use serde::Serialize;
use std::time::Instant;

/// A named HF `config.json` for the benchmarks (random init): `tiny` (the CPU benchmarks' Qwen2
/// model), `smollm2-135m` (Llama layout) and `qwen2.5-0.5b` (Qwen2 layout), as the GPU issue
/// specifies them.
pub fn shape_config(name: &str) -> Result<DecoderConfig> {
    let json = match name {
        "tiny" => serde_json::json!({
            "model_type": "qwen2", "vocab_size": 512, "hidden_size": 128, "intermediate_size": 512,
            "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
            "tie_word_embeddings": true, "rope_theta": 10000.0
        }),
        "smollm2-135m" => serde_json::json!({
            "model_type": "llama", "vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536,
            "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
            "tie_word_embeddings": true, "rope_theta": 100000.0, "rms_norm_eps": 1e-5,
            "max_position_embeddings": 8192
        }),
        "qwen2.5-0.5b" => serde_json::json!({
            "model_type": "qwen2", "vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864,
            "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
            "tie_word_embeddings": true, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
            "max_position_embeddings": 32768
        }),
        other => {
            return Err(BridgeError::InvalidInput(format!(
                "unknown model shape `{other}` (expected tiny, smollm2-135m or qwen2.5-0.5b)"
            )));
        }
    };
    DecoderConfig::from_hf_json(&json)
}

/// What [`train_step_throughput`] measures.
#[derive(Clone, Debug)]
pub struct TrainBenchConfig {
    /// Sequences per step.
    pub batch: usize,
    /// Tokens per sequence (every next token is a target).
    pub seq_len: usize,
    /// Timed steps.
    pub steps: usize,
    /// Untimed steps first.
    pub warmup: usize,
    /// AdamW learning rate.
    pub lr: f64,
}

/// A training-step measurement.
#[derive(Clone, Debug, Serialize)]
pub struct TrainBenchResult {
    /// Sequences per step.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq_len: usize,
    /// Timed steps.
    pub steps: usize,
    /// Mean wall-clock seconds per step.
    pub seconds_per_step: f64,
    /// `batch × seq_len / seconds_per_step`.
    pub tokens_per_second: f64,
    /// The loss (mean NLL per target) of the first and of the last step.
    pub first_loss: f64,
    /// See `first_loss`.
    pub last_loss: f64,
}

/// Training steps of θ alone on random tokens: `token_scores`, the mean NLL over all `B × (T−1)`
/// targets (what transformers' `labels=` loss is), its backward pass and one AdamW step (no
/// gradient clipping, as the PyTorch reference), in the dtype of `weights` (pure bf16 training
/// when they are bf16). `weights` must live on an autodiff device.
pub fn train_step_throughput(
    lm: &Decoder,
    mut weights: DecoderWeights,
    cfg: &TrainBenchConfig,
    rng: &mut BridgeRng,
) -> Result<TrainBenchResult> {
    if cfg.batch == 0 || cfg.seq_len < 2 || cfg.steps == 0 {
        return Err(BridgeError::InvalidInput("train benchmark: batch ≥ 1, seq_len ≥ 2, steps ≥ 1".into()));
    }
    let vocab = lm.config().vocab_size as u64;
    let rows = (0..cfg.batch)
        .map(|_| TokenSequence::all_scored((0..cfg.seq_len).map(|_| rng.below(vocab) as u32).collect()))
        .collect();
    let batch = SequenceBatch::new(rows, 0)?;
    let targets = (cfg.batch * (cfg.seq_len - 1)) as f64;
    let mut opt = GroupOptimizer::new("bench.adamw", AdamWSettings::with_lr(cfg.lr))?;
    let device = weights.device();
    let mut step = |w: DecoderWeights, read_loss: bool| -> Result<(DecoderWeights, f64)> {
        let s = lm.token_scores(&w, None, &batch, false)?;
        let loss = (s.logprobs * s.mask).sum().neg().div_scalar(targets);
        let value = if read_loss { loss.clone().into_scalar::<f32>() as f64 } else { f64::NAN };
        let grads = FlatGradients::from_backward(&mut loss.backward(), &w);
        Ok((opt.apply(w, &grads), value))
    };
    // One loop: `warmup` untimed steps, then `steps` timed ones; the loss is read (a device
    // synchronisation) only at the first and the last step.
    let total = cfg.warmup + cfg.steps;
    let (mut first_loss, mut last_loss) = (f64::NAN, f64::NAN);
    let mut t0 = Instant::now();
    for i in 0..total {
        if i == cfg.warmup {
            sync(&device)?;
            t0 = Instant::now();
        }
        let (w, loss) = step(weights, i == 0 || i + 1 == total)?;
        weights = w;
        if i == 0 {
            first_loss = loss;
        }
        if i + 1 == total {
            last_loss = loss;
        }
    }
    sync(&device)?;
    let seconds_per_step = t0.elapsed().as_secs_f64() / cfg.steps as f64;
    Ok(TrainBenchResult {
        batch: cfg.batch,
        seq_len: cfg.seq_len,
        steps: cfg.steps,
        seconds_per_step,
        tokens_per_second: (cfg.batch * cfg.seq_len) as f64 / seconds_per_step,
        first_loss,
        last_loss,
    })
}

fn sync(device: &burn::tensor::Device) -> Result<()> {
    device.sync().map_err(|e| BridgeError::Device(format!("synchronising {device:?}: {e:?}")))
}

/// A generation mode by name: `greedy` (temperature 0) or `sample` (temperature 1, the whole
/// vocabulary), as `(name, temperature)`.
pub fn generation_mode(name: &str) -> Result<(String, f64)> {
    match name {
        "greedy" => Ok((name.to_owned(), 0.0)),
        "sample" => Ok((name.to_owned(), 1.0)),
        other => Err(BridgeError::InvalidInput(format!("unknown mode `{other}` (expected greedy or sample)"))),
    }
}

/// What [`generation_throughput`] measures.
#[derive(Clone, Debug)]
pub struct GenerationBenchConfig {
    /// Batch sizes (prompts per `sample` call).
    pub batches: Vec<usize>,
    /// Tokens per (random) prompt.
    pub prompt_len: usize,
    /// New tokens per completion; EOS must be disabled in the model's config, so that every
    /// completion runs to this length.
    pub new_tokens: usize,
    /// `(name, temperature)`: 0 is greedy.
    pub modes: Vec<(String, f64)>,
    /// Timed runs (after one warm-up); the best is reported.
    pub repeats: usize,
    /// Where tokens are chosen (host or device; `auto` picks by backend).
    pub selection: TokenSelection,
    /// Which forward pass decodes (`auto`: the host engine for f32 weights on a CPU, the graph
    /// engine on a GPU).
    pub engine: DecodeEngine,
    /// Whether the graph engine captures its step (`false`: the same steps run eagerly).
    pub capture: bool,
}

/// One generation measurement.
#[derive(Clone, Debug, Serialize)]
pub struct GenerationBenchResult {
    /// `greedy` or `sample` (the mode's name).
    pub mode: String,
    /// Prompts per call.
    pub batch: usize,
    /// Best wall-clock seconds of one `sample` call.
    pub seconds: f64,
    /// Every timed run's seconds.
    pub seconds_all: Vec<f64>,
    /// `batch × new_tokens / seconds`.
    pub new_tokens_per_second: f64,
    /// The engine that ran (`Generator::engine_for`: never `auto`).
    pub engine: String,
    /// What the generator did in the last timed run (steps, compactions, graph captures and
    /// replays).
    pub stats: GenerationStats,
    /// Bytes the device's allocator held after the runs (its pools keep freed pages, so this is
    /// close to the peak); `None` on a backend that does not report it.
    pub device_bytes_reserved: Option<u64>,
}

/// New-token throughput of [`CausalLm::sample`] (prefill and KV-cache decode, one completion per
/// prompt) on random prompts of ids `3..vocab`, for each mode and batch size.
pub fn generation_throughput(
    lm: &Decoder,
    weights: &DecoderWeights,
    cfg: &GenerationBenchConfig,
    rng: &mut BridgeRng,
) -> Result<Vec<GenerationBenchResult>> {
    let vocab = lm.config().vocab_size as u64;
    if vocab <= 3 {
        return Err(BridgeError::InvalidInput(format!("vocabulary of {vocab} ids: no room for random prompts")));
    }
    if cfg.batches.is_empty() || cfg.batches.contains(&0) || cfg.prompt_len == 0 || cfg.new_tokens == 0 {
        return Err(BridgeError::InvalidInput("generation benchmark: batches, prompt_len, new_tokens ≥ 1".into()));
    }
    let mut out = Vec::new();
    for (mode, temperature) in &cfg.modes {
        let params = SamplingParams {
            max_new_tokens: cfg.new_tokens,
            temperature: *temperature,
            selection: cfg.selection,
            ..Default::default()
        };
        for &batch in &cfg.batches {
            let prompts: Vec<Vec<u32>> =
                (0..batch).map(|_| (0..cfg.prompt_len).map(|_| (3 + rng.below(vocab - 3)) as u32).collect()).collect();
            let mut times = Vec::with_capacity(cfg.repeats);
            let (mut stats, mut engine) = (GenerationStats::default(), DecodeEngine::Auto);
            for i in 0..=cfg.repeats.max(1) {
                let t0 = Instant::now();
                let mut g = Generator::new(lm, weights, None)?.with_engine(cfg.engine).with_capture(cfg.capture);
                engine = g.engine_for(&params)?;
                let completions = g.generate(&prompts, &params, &mut BridgeRng::seed_from_u64(1))?;
                let dt = t0.elapsed().as_secs_f64();
                if completions.iter().any(|c| c.tokens.len() != cfg.new_tokens) {
                    return Err(BridgeError::Model("a completion stopped early (is EOS disabled?)".into()));
                }
                stats = g.stats();
                if i > 0 {
                    times.push(dt); // the first run is a warm-up
                }
            }
            let best = times.iter().copied().fold(f64::INFINITY, f64::min);
            out.push(GenerationBenchResult {
                mode: mode.clone(),
                batch,
                seconds: best,
                seconds_all: times,
                new_tokens_per_second: (batch * cfg.new_tokens) as f64 / best,
                engine: engine.to_string(),
                stats,
                device_bytes_reserved: weights.device().memory_pool_usage().map(|u| u.bytes_reserved),
            });
        }
    }
    Ok(out)
}

/// Kernel launches per decode step (see [`crate::launches`]), each measured as the difference
/// between two generations of `short` and `long` new tokens (greedy, EOS disabled, no early
/// stop) divided by `long − short`: the prefill, the first selection and any capture cancel out.
#[derive(Clone, Debug, Serialize)]
pub struct DecodeLaunches {
    /// The tensor engine (dynamic shapes, device selection): every kernel of a step, issued one
    /// by one.
    pub tensor_engine: f64,
    /// The graph engine's static step run eagerly: the kernels one replayed graph holds.
    pub graph_step_kernels: f64,
    /// What the graph engine still issues per step when its step is replayed (input refreshes),
    /// plus the one graph launch, which cubecl does not observe.
    pub graph_replayed: f64,
    /// Steps replayed from a hardware graph in the long replayed run (0: no graph was used and
    /// `graph_replayed` counts eager steps).
    pub graph_replays: usize,
    /// The most launched kernels of the tensor engine's long run, `(name, launches)`.
    pub tensor_engine_top: Vec<(String, u64)>,
}

/// [`DecodeLaunches`] for `weights` on their device, `batch` random prompts of `prompt_len`
/// tokens; `None` where the backend cannot count launches (anything but cubecl).
pub fn decode_launches(
    lm: &Decoder,
    weights: &DecoderWeights,
    batch: usize,
    prompt_len: usize,
    (short, long): (usize, usize),
    rng: &mut BridgeRng,
) -> Result<Option<DecodeLaunches>> {
    if short == 0 || long <= short || batch == 0 || prompt_len == 0 {
        return Err(BridgeError::InvalidInput("decode launches: 1 ≤ short < long, batch and prompt ≥ 1".into()));
    }
    if crate::launches::LaunchCounter::start(&weights.device()).is_none() {
        return Ok(None);
    }
    let vocab = lm.config().vocab_size as u64;
    let prompts: Vec<Vec<u32>> =
        (0..batch).map(|_| (0..prompt_len).map(|_| (3 + rng.below(vocab.max(4) - 3)) as u32).collect()).collect();
    /// One counted generation: launches, the generator's counters, the most launched kernels.
    struct Counted {
        launches: f64,
        stats: GenerationStats,
        top: Vec<(String, u64)>,
    }
    let count = |engine: DecodeEngine, capture: bool, tokens: usize| -> Result<Counted> {
        let params = SamplingParams {
            max_new_tokens: tokens,
            temperature: 0.0,
            selection: TokenSelection::Device,
            ..Default::default()
        };
        let mut g = Generator::new(lm, weights, None)?.with_engine(engine).with_capture(capture);
        let counter = crate::launches::LaunchCounter::start(&weights.device())
            .ok_or_else(|| BridgeError::Device("the launch counter went away".into()))?;
        let completions = g.generate(&prompts, &params, &mut BridgeRng::seed_from_u64(1))?;
        if completions.iter().any(|c| c.tokens.len() != tokens) {
            return Err(BridgeError::Model("a completion stopped early (is EOS disabled?)".into()));
        }
        Ok(Counted { launches: counter.total() as f64, stats: g.stats(), top: counter.top(12) })
    };
    // Per step: (long − short) / (long − short tokens), after a warm-up run of `long` tokens
    // (compilation and autotuning launch kernels of their own, for every new shape).
    let per_step = |engine, capture| -> Result<Counted> {
        count(engine, capture, long)?;
        let a = count(engine, capture, short)?;
        let b = count(engine, capture, long)?;
        Ok(Counted { launches: (b.launches - a.launches) / (long - short) as f64, ..b })
    };
    let tensor = per_step(DecodeEngine::Tensor, false)?;
    let graph_step = per_step(DecodeEngine::Graph, false)?;
    let replayed = per_step(DecodeEngine::Graph, true)?;
    Ok(Some(DecodeLaunches {
        tensor_engine: tensor.launches,
        graph_step_kernels: graph_step.launches,
        graph_replayed: replayed.launches + if replayed.stats.graph_replays > 0 { 1.0 } else { 0.0 },
        graph_replays: replayed.stats.graph_replays,
        tensor_engine_top: tensor.top,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridge_core::IdsOnlyCodec;
    use burn::tensor::Device;

    fn tiny() -> Decoder {
        let mut config = shape_config("tiny").unwrap();
        config.eos_token_ids.clear();
        Decoder::new(config, Box::new(IdsOnlyCodec { vocab_size: 512 })).unwrap()
    }

    #[test]
    fn shapes_are_the_issue_s_models() {
        let q = shape_config("qwen2.5-0.5b").unwrap();
        assert_eq!((q.vocab_size, q.hidden_size, q.num_hidden_layers, q.num_key_value_heads), (151936, 896, 24, 2));
        let s = shape_config("smollm2-135m").unwrap();
        assert_eq!((s.vocab_size, s.hidden_size, s.num_hidden_layers, s.num_attention_heads), (49152, 576, 30, 9));
        assert!(matches!(shape_config("gpt2"), Err(BridgeError::InvalidInput(m)) if m.contains("gpt2")));
    }

    /// The training steps learn (a random batch seen again and again: the loss falls) and the
    /// throughput is consistent with the timing.
    #[test]
    fn train_steps_lower_the_loss_of_the_batch() {
        let lm = tiny();
        let device = Device::flex().autodiff();
        let mut rng = BridgeRng::seed_from_u64(0);
        let w = lm.init_weights(&device, &mut rng).unwrap();
        let cfg = TrainBenchConfig { batch: 2, seq_len: 16, steps: 8, warmup: 1, lr: 1e-2 };
        let r = train_step_throughput(&lm, w, &cfg, &mut rng).unwrap();
        assert!(r.first_loss > 5.5 && r.first_loss < 7.0, "random init ≈ ln 512: {}", r.first_loss);
        assert!(r.last_loss < 0.8 * r.first_loss, "{r:?}");
        assert!((r.tokens_per_second * r.seconds_per_step - 32.0).abs() < 1e-6);
    }

    #[test]
    fn generation_runs_every_row_to_the_requested_length() {
        let lm = tiny();
        let device = Device::flex();
        let mut rng = BridgeRng::seed_from_u64(0);
        let w = lm.init_weights(&device, &mut rng).unwrap();
        let cfg = GenerationBenchConfig {
            batches: vec![1, 3],
            prompt_len: 4,
            new_tokens: 5,
            modes: vec![("greedy".into(), 0.0), ("sample".into(), 1.0)],
            repeats: 1,
            selection: TokenSelection::Auto,
            engine: DecodeEngine::Auto,
            capture: true,
        };
        let r = generation_throughput(&lm, &w, &cfg, &mut rng).unwrap();
        assert_eq!(r.len(), 4);
        assert_eq!((r[3].mode.as_str(), r[3].batch), ("sample", 3));
        assert!(r.iter().all(|x| x.seconds_all.len() == 1 && x.new_tokens_per_second > 0.0));
        assert!(r.iter().all(|x| x.engine == "host" && x.stats.decode_steps == 4 && x.stats.graph_replays == 0));
        // flex counts no kernel launches
        assert!(decode_launches(&lm, &w, 2, 4, (2, 4), &mut rng).unwrap().is_none());
        assert!(decode_launches(&lm, &w, 2, 4, (4, 4), &mut rng).is_err());
        // With EOS enabled a completion may stop early: reported as an error, not a wrong figure.
        let mut config = shape_config("tiny").unwrap();
        config.eos_token_ids = (0..512).collect();
        let eos_everywhere = Decoder::new(config, Box::new(IdsOnlyCodec { vocab_size: 512 })).unwrap();
        assert!(generation_throughput(&eos_everywhere, &w, &cfg, &mut rng).is_err());
    }
}
