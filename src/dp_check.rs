//! Data parallelism on one device, checked and timed: the check behind `examples/gpu.rs dp`,
//! which a GPU session runs (`scripts/gpu-session.sh`, phase `dp`).
//!
//! A small random decoder (the layout of [`crate::device_check`], a character codec) trains with
//! BRIDGE for a few steps (plain SGD, so the comparison sees the gradients) in three ways on the
//! same device:
//! - `single`: one rank, no synchronisation (the reference; run twice, the first run warms up
//!   kernels and autotuning, the second is timed);
//! - `collective-1`: one rank through burn's collectives ([`bridge_core::CollectiveSync`], NCCL):
//!   the only multi-GPU code path a single card can exercise (CUDA only);
//! - `host-2`: two ranks sharing the device, gradients summed through the host
//!   ([`bridge_core::HostSync`]).
//!
//! Each is compared with `single` parameter by parameter (θ, θ̂, w: maximum absolute difference)
//! and timed (seconds per step, wall clock, including generation).

use crate::device_check::check_config;
use bridge_bilevel::{
    Bridge, LoopConfig, Metrics, OptimConfig, Replica, RunInputs, TrainState, init_state, run_data_parallel, run_steps,
};
use bridge_core::schedule::ConstantLambda;
use bridge_core::{
    AdamWSettings, BridgeError, BridgeRng, CausalLm, CharCodec, CollectiveSync, DeviceChoice, GradientSync,
    InMemorySource, Result, Reward, RewardFunction, RlPrompt, SamplingParams, TokenSequence,
};
use bridge_models::{Decoder, LoraConfig};
use bridge_rl::GrpoConfig;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;

const ALPHABET: &str = "#0123456789+= ";

/// 1 when the completion contains a `1`: a reward the random model earns about half the time, so
/// that groups have non-zero advantages.
struct HasOne;

impl RewardFunction for HasOne {
    fn name(&self) -> &str {
        "has_one"
    }
    fn score(&self, completion: &str, _: &RlPrompt) -> Reward {
        Reward::scored(f64::from(u8::from(completion.contains('1'))))
    }
}

/// One way of running the steps, against the single-rank reference.
#[derive(Clone, Debug, Serialize)]
pub struct DataParallelRun {
    /// `single`, `collective-1` or `host-2`.
    pub name: String,
    /// Number of ranks.
    pub ranks: usize,
    /// Wall-clock seconds per step (generation included).
    pub seconds_per_step: f64,
    /// Maximum absolute difference from the reference: θ, θ̂, w (0 for the reference).
    pub max_diff: [f64; 3],
    /// Whether every difference is within the tolerance.
    pub ok: bool,
    /// Why the run did not happen (e.g. no collectives on flex); its figures are then 0.
    pub skipped: Option<String>,
}

/// The report of [`data_parallel_check`].
#[derive(Clone, Debug, Serialize)]
pub struct DataParallelReport {
    /// The device.
    pub device: String,
    /// BRIDGE steps per run.
    pub steps: u64,
    /// The largest accepted parameter difference.
    pub tolerance: f64,
    /// How far the reference moved θ, θ̂ and w (maximum absolute change): the differences are
    /// small against it.
    pub reference_change: [f64; 3],
    /// The runs, the reference first.
    pub runs: Vec<DataParallelRun>,
    /// Whether every run that happened is within the tolerance.
    pub ok: bool,
}

fn values<M: Module>(m: &M) -> Vec<f32> {
    struct Collect(Vec<f32>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.0.extend(p.val().into_data().iter::<f32>());
        }
    }
    let mut c = Collect(Vec::new());
    m.visit(&mut c);
    c.0
}

fn max_diff(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    a.iter().zip(b).map(|(x, y)| f64::from((x - y).abs())).fold(0.0, f64::max)
}

fn snapshot(s: &TrainState<Decoder>) -> [Vec<f32>; 3] {
    [
        values(&s.theta),
        s.theta_hat.as_ref().map(values).unwrap_or_default(),
        s.adapter.as_ref().map(values).unwrap_or_default(),
    ]
}

/// Runs the check on `device` for `steps` BRIDGE steps.
pub fn data_parallel_check(device: DeviceChoice, steps: u64) -> Result<DataParallelReport> {
    let autodiff = device.autodiff_device()?;
    let lm = Decoder::new(check_config()?, Box::new(CharCodec::new(ALPHABET)))?;
    let lora = LoraConfig { rank: 4, alpha: 8.0, ..LoraConfig::default() };
    // The same weights for every rank of every run (drawn on the host from one seed).
    let weights = || -> Result<_> {
        let mut rng = BridgeRng::seed_from_u64(7);
        let theta = lm.init_weights(&autodiff, &mut rng)?;
        let adapter = lm.init_adapter(&lora, &autodiff, &mut rng)?.with_random_b(0.02, &mut rng);
        Ok((theta, adapter))
    };
    let codec = lm.codec();
    let problems: Vec<(String, String)> =
        (0..16u32).map(|i| (format!("{}+{}=", i % 7 + 2, i % 5 + 3), format!("{}", i % 7 + i % 5 + 5))).collect();
    let sft: InMemorySource<TokenSequence> = problems
        .iter()
        .map(|(q, a)| Ok(TokenSequence::prompt_completion(&codec.encode(q)?, &codec.encode(&format!("{a}#"))?)))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .collect();
    let prompts: InMemorySource<RlPrompt> =
        problems.iter().enumerate().map(|(i, (q, a))| RlPrompt::new(format!("p{i}"), q, a)).collect();
    let reward = HasOne;
    let rl = GrpoConfig {
        prompts_per_step: 4,
        sampling: SamplingParams { n: 4, max_new_tokens: 8, ..SamplingParams::default() },
        ..GrpoConfig::default()
    };
    let lambda = ConstantLambda(0.5);
    let inputs =
        RunInputs { sft: &sft, prompts: &prompts, reward: &reward, rl: &rl, sft_batch_size: 4, lambda: &lambda };
    let optim = OptimConfig { theta: AdamWSettings::sgd(0.05), ..OptimConfig::default() };
    let run_dir = std::env::temp_dir().join(format!("bridge-dp-check-{}", std::process::id()));
    let cfg = LoopConfig { total_steps: steps, run_dir: run_dir.clone(), ..LoopConfig::default() };
    let replica = || -> Result<Replica<Decoder>> {
        let algorithm: Box<dyn bridge_bilevel::TrainingAlgorithm<Decoder>> = Box::new(Bridge::default());
        let (theta, adapter) = weights()?;
        let state = init_state(algorithm.needs(), theta, Some(adapter), &optim, rl.loss.kl_coef > 0.0, 3)?;
        Ok(Replica { state, algorithm })
    };
    let no_eval = |_: &Decoder, _: &TrainState<Decoder>| Ok(Metrics::new());
    let timed = |f: &mut dyn FnMut() -> Result<TrainState<Decoder>>| -> Result<(TrainState<Decoder>, f64)> {
        let start = Instant::now();
        let s = f()?;
        Ok((s, start.elapsed().as_secs_f64() / steps as f64))
    };
    let single = || -> Result<TrainState<Decoder>> {
        let Replica { state, mut algorithm } = replica()?;
        run_steps(&lm, algorithm.as_mut(), state, &inputs, &cfg, no_eval, |_| Ok(()))
    };
    single()?; // warm-up: kernels compiled and tuned
    let (reference, t_single) = timed(&mut || single())?;
    let reference = snapshot(&reference);
    let start = {
        let Replica { state, .. } = replica()?;
        snapshot(&state)
    };
    let reference_change = [0, 1, 2].map(|i| max_diff(&start[i], &reference[i]));
    let tolerance = 1e-4;
    let mut runs = vec![DataParallelRun {
        name: "single".into(),
        ranks: 1,
        seconds_per_step: t_single,
        max_diff: [0.0; 3],
        ok: true,
        skipped: None,
    }];
    let parallel = |name: &str, ranks: usize, sync: Option<Arc<dyn GradientSync>>| -> Result<DataParallelRun> {
        let (state, t) = timed(&mut || {
            let replicas = (0..ranks).map(|_| replica()).collect::<Result<Vec<_>>>()?;
            Ok(run_data_parallel(&lm, replicas, sync.clone(), &inputs, &cfg, no_eval, |_| Ok(()))?.state)
        })?;
        let got = snapshot(&state);
        let d = [max_diff(&reference[0], &got[0]), max_diff(&reference[1], &got[1]), max_diff(&reference[2], &got[2])];
        Ok(DataParallelRun {
            name: name.into(),
            ranks,
            seconds_per_step: t,
            ok: d.iter().all(|x| *x <= tolerance),
            max_diff: d,
            skipped: None,
        })
    };
    match device {
        DeviceChoice::Cuda(_) => {
            let sync: Arc<dyn GradientSync> = Arc::new(CollectiveSync::new(&[device])?);
            runs.push(parallel("collective-1", 1, Some(sync))?);
        }
        DeviceChoice::Flex => runs.push(DataParallelRun {
            name: "collective-1".into(),
            ranks: 1,
            seconds_per_step: 0.0,
            max_diff: [0.0; 3],
            ok: true,
            skipped: Some("flex has no collectives (burn's all-reduce is NCCL on CUDA)".into()),
        }),
    }
    runs.push(parallel("host-2", 2, None)?);
    let _ = std::fs::remove_dir_all(&run_dir);
    if runs.iter().any(|r| r.max_diff.iter().any(|d| !d.is_finite())) {
        return Err(BridgeError::Parallel("a run's parameters have a different layout".into()));
    }
    let ok = runs.iter().all(|r| r.ok);
    Ok(DataParallelReport { device: device.to_string(), steps, tolerance, reference_change, runs, ok })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_host_ranks_match_one_on_flex() {
        let report = data_parallel_check(DeviceChoice::Flex, 2).unwrap();
        assert!(report.ok, "{report:?}");
        assert!(report.reference_change.iter().all(|c| *c > 1e-4), "every group moved: {report:?}");
        let host = report.runs.iter().find(|r| r.name == "host-2").unwrap();
        assert!(host.skipped.is_none() && host.max_diff.iter().all(|d| *d <= 1e-5), "{host:?}");
        assert!(report.runs.iter().any(|r| r.name == "collective-1" && r.skipped.is_some()));
    }
}
