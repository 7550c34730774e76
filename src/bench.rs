//! Throughput measurements behind the benchmark examples (`bench_generate`, `gpu`): a training
//! step (forward + backward + AdamW) and KV-cache generation, on whatever device the weights
//! live on, and the model shapes the GPU benchmarks use.
//!
//! Every figure is a wall-clock time around work that ends in a device synchronisation, so that
//! asynchronous backends (CUDA) are timed for what they computed, not for what they queued.
//! Warm-up runs come first (kernel compilation and autotuning on the GPU).
//!
//! The training benchmark also reports peak memory ([`PeakMemory`]): the device allocator's pools
//! where the backend reports them (cubecl: CUDA), and this process's peak resident set (Linux) on
//! every backend, which is the figure for flex.
//!
//! [`train_bench`] is the whole training measurement for a named shape and a [`Precision`]
//! (`f32`, `bf16`, `mixed_bf16`), with the tensor engine's paths chosen by [`TensorPaths`]: what
//! `gpu bench` runs.

use bridge_core::policy::{CausalLm, SamplingParams, SequenceBatch, TokenSelection, TokenSequence};
use bridge_core::{AdamWSettings, BridgeError, BridgeRng, FlatGradients, GroupOptimizer, IdsOnlyCodec, Result};
use bridge_models::generate::{DecodeEngine, GenerationStats, Generator};
use bridge_models::{Decoder, DecoderConfig, DecoderWeights, Precision, TensorPaths};
use burn::tensor::{DType, Device};
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

/// The decoder of a benchmark shape ([`shape_config`]) with EOS disabled (every completion runs
/// to its length) and a codec of bare ids.
pub fn bench_decoder(shape: &str) -> Result<Decoder> {
    let mut config = shape_config(shape)?;
    config.eos_token_ids.clear();
    let vocab_size = config.vocab_size;
    Decoder::new(config, Box::new(IdsOnlyCodec { vocab_size }))
}

/// Peak memory of a measured region (see [`MemoryProbe`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PeakMemory {
    /// This process's peak resident set during the region (Linux `VmHWM`, reset when the region
    /// starts), in bytes; `None` where `/proc` is not available.
    pub host_peak_rss_bytes: Option<u64>,
    /// The resident set when the region started (model and data already in memory).
    pub host_rss_at_start_bytes: Option<u64>,
    /// The device allocator's pools at their fullest, summed over pools, in bytes: since the
    /// device was first used (the allocator cannot be reset), and an upper bound of the
    /// simultaneous peak when pools peaked at different moments. `None` on backends that report
    /// no pools (flex).
    pub device_pool_peak_bytes: Option<u64>,
    /// Bytes the device allocator holds when the region ends (live allocations plus pages kept
    /// for reuse; its pools only grow, so this is its peak reservation).
    pub device_reserved_bytes: Option<u64>,
    /// Bytes in live allocations when the region ends.
    pub device_in_use_bytes: Option<u64>,
}

/// Measures [`PeakMemory`] between [`MemoryProbe::start`] and [`MemoryProbe::finish`].
pub struct MemoryProbe {
    device: Device,
    rss_at_start: Option<u64>,
    peak_reset: bool,
}

/// A `kB` field of `/proc/self/status` (`VmRSS`, `VmHWM`), in bytes.
fn proc_status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    let kib: u64 = line[field.len() + 1..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

impl MemoryProbe {
    /// Starts a region on `device`: resets the process's peak resident set (writing `5` to
    /// `/proc/self/clear_refs`, Linux ≥ 4.0).
    pub fn start(device: &Device) -> Self {
        let peak_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        Self { device: device.clone(), rss_at_start: proc_status_bytes("VmRSS"), peak_reset }
    }

    /// Ends the region (after a device synchronisation) and reads the figures.
    pub fn finish(self) -> Result<PeakMemory> {
        sync(&self.device)?;
        let pools = self.device.memory_pool_report();
        let usage = self.device.memory_pool_usage();
        Ok(PeakMemory {
            // without the reset, VmHWM is the peak since the process started: not this region's
            host_peak_rss_bytes: if self.peak_reset { proc_status_bytes("VmHWM") } else { None },
            host_rss_at_start_bytes: self.rss_at_start,
            device_pool_peak_bytes: pools.map(|p| p.iter().map(|r| r.pages_peak * r.page_size).sum()),
            device_reserved_bytes: usage.map(|u| u.bytes_reserved),
            device_in_use_bytes: usage.map(|u| u.bytes_in_use),
        })
    }
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
    /// `f32`, `bf16` (or `f16`: pure half-precision weights) or `mixed_bf16`.
    pub precision: String,
    /// The tensor engine's paths (chunked scores, attention path, chunk sizes).
    pub paths: TensorPaths,
    /// Peak memory over the warm-up and timed steps.
    pub memory: PeakMemory,
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
    let precision = match (lm.compute_dtype(), weights.dtype()) {
        (Some(compute), dtype) if DType::from(compute.float_dtype()) != dtype => format!("mixed_{compute}"),
        (_, DType::BF16) => "bf16".to_owned(),
        (_, DType::F16) => "f16".to_owned(),
        (_, dtype) => format!("{dtype:?}").to_lowercase(),
    };
    let probe = MemoryProbe::start(&device);
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
        precision,
        paths: lm.tensor_paths(),
        memory: probe.finish()?,
    })
}

/// The training benchmark of a named shape ([`bench_decoder`]) on `device` (an autodiff device is
/// made from it): random init (seed 0) in `precision` ([`Precision::prepare`]; the decoder
/// computes in its compute dtype), the tensor engine's `paths`, random tokens (seed 1), then
/// [`train_step_throughput`]. The scoring engine is the default one (the tensor engine on a GPU
/// and for half-precision compute; the fused engine for f32 on flex).
pub fn train_bench(
    shape: &str,
    precision: Precision,
    paths: TensorPaths,
    device: &Device,
    cfg: &TrainBenchConfig,
) -> Result<TrainBenchResult> {
    let lm = bench_decoder(shape)?.with_precision(precision).with_tensor_paths(paths);
    let weights = lm.init_weights(&device.clone().autodiff(), &mut BridgeRng::seed_from_u64(0))?;
    train_step_throughput(&lm, precision.prepare(weights), cfg, &mut BridgeRng::seed_from_u64(1))
}

fn sync(device: &burn::tensor::Device) -> Result<()> {
    device.sync().map_err(|e| BridgeError::Device(format!("synchronising {device:?}: {e}")))
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

    fn tiny() -> Decoder {
        bench_decoder("tiny").unwrap()
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

    /// The three precisions on flex, the tensor engine with the new paths: each learns, reports
    /// its precision and a peak resident set at least the one it started with.
    #[test]
    fn train_bench_runs_every_precision_with_a_memory_figure() {
        let cfg = TrainBenchConfig { batch: 2, seq_len: 12, steps: 3, warmup: 1, lr: 1e-2 };
        let paths = TensorPaths { attention: bridge_models::AttentionPath::Fused, ..TensorPaths::default() };
        for (precision, name) in
            [(Precision::F32, "f32"), (Precision::Bf16, "bf16"), (Precision::MixedBf16, "mixed_bf16")]
        {
            let r = train_bench("tiny", precision, paths, &Device::flex(), &cfg).unwrap();
            assert_eq!(r.precision, name);
            assert_eq!(r.paths, paths);
            assert!(r.last_loss < r.first_loss, "{name}: {r:?}");
            assert!(r.tokens_per_second > 0.0);
            // flex reports no device pools; the host figures are there on Linux
            assert_eq!(r.memory.device_pool_peak_bytes, None);
            if let (Some(peak), Some(start)) = (r.memory.host_peak_rss_bytes, r.memory.host_rss_at_start_bytes) {
                assert!(peak >= start, "{name}: {:?}", r.memory);
            }
            let json = serde_json::to_value(&r).unwrap();
            assert!(json["memory"]["host_peak_rss_bytes"].is_u64() || json["memory"]["host_peak_rss_bytes"].is_null());
        }
    }

    /// The probe sees memory the region touched: a 64 MiB buffer written during the region
    /// raises the peak resident set by at least that much.
    #[test]
    fn memory_probe_sees_a_large_allocation() {
        let probe = MemoryProbe::start(&Device::flex());
        let buffer = vec![1u8; 64 << 20];
        std::hint::black_box(&buffer);
        let m = probe.finish().unwrap();
        drop(buffer);
        if cfg!(target_os = "linux") {
            let (peak, start) = (m.host_peak_rss_bytes.unwrap(), m.host_rss_at_start_bytes.unwrap());
            assert!(peak >= start + (60 << 20), "{m:?}");
        }
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
