//! PPO with a critic on θ: rollouts from the policy, an outcome reward on each completion's last
//! token, GAE advantages (γ, λ) from a value head on the policy's final hidden states, the
//! clipped surrogate with per-token advantages, and the clipped value loss
//! ([`bridge_rl::critic`]). The critic (the head and its optimiser) is the algorithm's own
//! state: created at the first step (the head predicts 0: zero weights, no random stream),
//! checkpointed by [`TrainingAlgorithm::save_state`] and restored by
//! [`TrainingAlgorithm::load_state`].
//!
//! The defaults are TRL's `PPOConfig`: γ = 1, λ = 0.95, value clip 0.2, whitened advantages. The
//! KL to the reference is the loss term of `rl.loss` (as GRPO's), not a reward penalty. The head
//! reads the hidden states detached from θ, so the value loss trains the head alone (its own
//! optimiser, `algorithm.critic_optim`, θ's settings by default) and the policy loss θ alone.

use crate::algorithm::{
    Metrics, Needs, PolicyTerm, StepContext, TrainingAlgorithm, next_rollouts, record_policy_stats, record_rollouts,
    rl_batch, whole_batch_means, zero_loss,
};
use crate::state::{TrainState, load_module, load_optim, save_module, save_optim, write_atomic};
use bridge_core::{
    AdamWSettings, BridgeError, CausalLm, FlatGradients, GroupOptimizer, Result, Shard, error::ensure_finite,
};
use bridge_rl::critic::matrix;
use bridge_rl::{ValueHead, critic_features, gae, token_advantage_loss, value_loss, whiten};
use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;

/// PPO's settings (`[algorithm]` with `name = "ppo"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PpoConfig {
    /// The discount γ of GAE.
    pub gamma: f64,
    /// GAE's λ.
    pub gae_lambda: f64,
    /// The value clip range `c` (`None`: unclipped value loss).
    pub value_clip: Option<f64>,
    /// Whiten the advantages over the batch's tokens.
    pub whiten_advantages: bool,
    /// The critic's optimiser (`None`: θ's settings, `optim.theta`).
    pub critic_optim: Option<AdamWSettings>,
}

impl Default for PpoConfig {
    fn default() -> Self {
        Self { gamma: 1.0, gae_lambda: 0.95, value_clip: Some(0.2), whiten_advantages: true, critic_optim: None }
    }
}

impl PpoConfig {
    /// Checks the values, naming the field under `prefix`.
    pub fn validate(&self, prefix: &str) -> Result<()> {
        for (f, v) in [("gamma", self.gamma), ("gae_lambda", self.gae_lambda)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(BridgeError::config(format!("{prefix}.{f}"), format!("must lie in [0, 1], got {v}")));
            }
        }
        if let Some(c) = self.value_clip
            && !(c.is_finite() && c > 0.0)
        {
            return Err(BridgeError::config(format!("{prefix}.value_clip"), format!("must be > 0, got {c}")));
        }
        if let Some(s) = &self.critic_optim {
            s.validate(&format!("{prefix}.critic_optim"))?;
        }
        Ok(())
    }
}

/// The value head and its optimiser.
#[derive(Clone)]
pub struct Critic {
    /// The head.
    pub head: ValueHead,
    /// Its optimiser.
    pub optim: GroupOptimizer,
}

/// The PPO algorithm.
#[derive(Clone, Default)]
pub struct Ppo {
    /// Its settings.
    pub config: PpoConfig,
    /// The critic, once the first step has created it.
    pub critic: Option<Critic>,
}

impl std::fmt::Debug for Ppo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ppo").field("config", &self.config).field("critic", &self.critic.is_some()).finish()
    }
}

/// `critic.json`: what is needed to rebuild the head before loading its record.
#[derive(Serialize, Deserialize)]
struct CriticMeta {
    hidden_size: usize,
}

const CRITIC_META: &str = "critic.json";
const CRITIC_HEAD: &str = "critic.bpk";
const CRITIC_OPTIM: &str = "optim-critic.bpk";

fn host(t: Tensor<2>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| BridgeError::Model(format!("reading values: {e:?}")))
}

impl Ppo {
    /// A PPO algorithm with `config` and no critic yet.
    pub fn new(config: PpoConfig) -> Self {
        Self { config, critic: None }
    }

    fn new_critic<L: CausalLm>(&self, hidden: usize, device: &Device, state: &TrainState<L>) -> Result<Critic> {
        let settings = self.config.critic_optim.clone().unwrap_or_else(|| state.optim.theta.settings().clone());
        Ok(Critic {
            head: ValueHead::zeros(hidden, device),
            optim: GroupOptimizer::new("algorithm.critic_optim", settings)?,
        })
    }
}

impl<L: CausalLm> TrainingAlgorithm<L> for Ppo {
    fn name(&self) -> &str {
        "ppo"
    }

    fn needs(&self) -> Needs {
        Needs::default()
    }

    fn data_parallel(&self) -> bool {
        true
    }

    fn step(&mut self, ctx: &StepContext<'_, L>, state: &mut TrainState<L>) -> Result<Metrics> {
        let step = state.step;
        let mut m = Metrics::new();
        let rollouts = next_rollouts(ctx, &mut state.rl_cursor, &mut state.rollout_rng, &state.theta, None)?;
        record_rollouts(&mut m, "", &rollouts);
        let start = Instant::now();
        let batch = rl_batch(ctx, &rollouts, state.reference.as_ref())?;
        let tokens = batch.num_loss_tokens();
        m.insert("tokens".into(), tokens as f64);
        let normaliser = batch.loss_normaliser(ctx.rl.loss.aggregation);
        let counts = ctx.shard.sum(vec![tokens as f64, normaliser])?;
        if counts[0] == 0.0 {
            m.insert("training_seconds".into(), start.elapsed().as_secs_f64());
            return Ok(m);
        }
        // This rank's shares of the policy loss (by its normaliser) and of the value loss (a token
        // mean); a rank without loss tokens adds zeros.
        let (share, value_share) =
            if ctx.shard.is_single() { (1.0, 1.0) } else { (normaliser / counts[1], tokens as f64 / counts[0]) };
        // The critic's view of the rollouts (θ before this step's update, detached).
        let features = critic_features(ctx.lm, &state.theta, None, &batch.sequences)?;
        let [b, t1, hidden] = features.dims();
        let device = features.device();
        let mut critic = match self.critic.take() {
            Some(c) if c.head.hidden_size() == hidden => c,
            Some(c) => {
                return Err(BridgeError::Model(format!(
                    "the critic reads {} hidden units, the model has {hidden}",
                    c.head.hidden_size()
                )));
            }
            None => self.new_critic(hidden, &device, state)?,
        };
        let old_values = critic.head.forward(features.clone()).detach();
        let old = host(old_values.clone())?;
        // GAE per completion: the outcome reward on its last token.
        let mask = batch.mask_values();
        let (mut adv, mut ret) = (vec![0.0f64; b * t1], vec![0.0f64; b * t1]);
        for (i, reward) in rollouts.rewards.iter().enumerate() {
            let cols = batch
                .completion_columns(i)
                .ok_or_else(|| BridgeError::InvalidInput(format!("no completion columns for row {i}")))?;
            if cols.is_empty() || !cols.clone().any(|c| mask[i * t1 + c] > 0.0) {
                continue;
            }
            let mut rewards = vec![0.0; cols.len()];
            if let Some(last) = rewards.last_mut() {
                *last = reward.value.unwrap_or(0.0);
            }
            let values: Vec<f64> = cols.clone().map(|c| f64::from(old[i * t1 + c])).collect();
            let (a, r) = gae(&rewards, &values, self.config.gamma, self.config.gae_lambda)?;
            for (k, c) in cols.enumerate() {
                adv[i * t1 + c] = a[k];
                ret[i * t1 + c] = r[k];
            }
        }
        let kept: Vec<usize> = (0..b * t1).filter(|&k| mask[k] > 0.0).collect();
        let n = kept.len() as f64;
        let mean = |x: f64| if n > 0.0 { x / n } else { 0.0 };
        let means = whole_batch_means(
            ctx.shard,
            &[
                (mean(kept.iter().map(|&k| adv[k]).sum::<f64>()), n),
                (mean(kept.iter().map(|&k| ret[k]).sum::<f64>()), n),
                (mean(kept.iter().map(|&k| f64::from(old[k])).sum::<f64>()), n),
            ],
        )?;
        for (key, v) in ["advantage_mean", "return_mean", "value_mean"].iter().zip(means) {
            m.insert((*key).into(), v);
        }
        if self.config.whiten_advantages {
            let mut values: Vec<f64> = kept.iter().map(|&k| adv[k]).collect();
            whiten_across(ctx.shard, &mut values)?;
            for (&k, v) in kept.iter().zip(values) {
                adv[k] = v;
            }
        }
        let advantages = matrix(adv.iter().map(|&x| x as f32).collect(), b, t1, &device);
        let returns = matrix(ret.iter().map(|&x| x as f32).collect(), b, t1, &device);
        let loss_mask = batch.mask(&device);
        for _ in 0..ctx.rl.epochs_per_batch {
            let (loss, stats, entropy) = if tokens > 0 {
                let (out, entropy) = token_advantage_loss(
                    ctx.lm,
                    &state.theta,
                    None,
                    &batch,
                    advantages.clone(),
                    state.reference.as_ref(),
                    &ctx.rl.loss,
                    ctx.rl.log_entropy,
                )?;
                (out.loss, Some(out.stats), entropy)
            } else {
                (zero_loss::<L::Base, L::Base>(&state.theta, None)?, None, None)
            };
            let t = tokens as f64;
            let policy = PolicyTerm { stats: stats.as_ref(), normaliser, stat_tokens: t, entropy, tokens };
            record_policy_stats(ctx, &mut m, "", step, &policy, &[])?;
            let loss = if share == 1.0 { loss } else { loss.mul_scalar(share) };
            let g_theta = FlatGradients::from_backward(&mut loss.backward(), &state.theta);
            let (vl_loss, vl_stats) = if tokens > 0 {
                let values = critic.head.forward(features.clone());
                let vl =
                    value_loss(values, old_values.clone(), returns.clone(), loss_mask.clone(), self.config.value_clip)?;
                (vl.loss, (vl.value, vl.clip_fraction))
            } else {
                (zero_loss::<ValueHead, ValueHead>(&critic.head, None)?, (0.0, 0.0))
            };
            let vl_global = whole_batch_means(ctx.shard, &[(vl_stats.0, t), (vl_stats.1, t)])?;
            ensure_finite("value_loss", vl_global[0], step)?;
            m.insert("value_loss".into(), vl_global[0]);
            m.insert("value_clip_fraction".into(), vl_global[1]);
            let vl_loss = if value_share == 1.0 { vl_loss } else { vl_loss.mul_scalar(value_share) };
            let g_critic = FlatGradients::from_backward(&mut vl_loss.backward(), &critic.head);
            // Sum both groups across ranks, check both before either moves.
            let g_theta = ctx.shard.all_reduce(&g_theta, &state.theta)?;
            let g_critic = ctx.shard.all_reduce(&g_critic, &critic.head)?;
            let (g_theta, n_theta) = state.optim.theta.clip(&g_theta, step)?;
            let (g_critic, n_critic) = critic.optim.clip(&g_critic, step)?;
            m.insert("grad_norm_theta".into(), n_theta);
            m.insert("grad_norm_critic".into(), n_critic);
            state.theta = state.optim.theta.apply(state.theta.clone(), &g_theta);
            critic.head = critic.optim.apply(critic.head, &g_critic);
        }
        self.critic = Some(critic);
        m.insert("training_seconds".into(), start.elapsed().as_secs_f64());
        Ok(m)
    }

    fn save_state(&self, dir: &Path) -> Result<()> {
        let Some(critic) = &self.critic else { return Ok(()) };
        let meta = serde_json::to_vec(&CriticMeta { hidden_size: critic.head.hidden_size() })
            .map_err(|e| BridgeError::checkpoint(dir, e.to_string()))?;
        write_atomic(&dir.join(CRITIC_META), &meta)?;
        save_module(&critic.head, &dir.join(CRITIC_HEAD))?;
        save_optim(&critic.optim, &dir.join(CRITIC_OPTIM))
    }

    fn load_state(&mut self, dir: &Path, state: &TrainState<L>) -> Result<()> {
        let meta_path = dir.join(CRITIC_META);
        if !meta_path.exists() {
            self.critic = None;
            return Ok(());
        }
        let bytes = std::fs::read(&meta_path).map_err(|e| BridgeError::io(&meta_path, e))?;
        let meta: CriticMeta = serde_json::from_slice(&bytes)
            .map_err(|e| BridgeError::checkpoint(&meta_path, format!("{CRITIC_META}: {e}")))?;
        let device = state
            .theta
            .devices()
            .into_iter()
            .next()
            .ok_or_else(|| BridgeError::checkpoint(dir, "θ has no parameter to place the critic beside"))?;
        let mut critic = self.new_critic(meta.hidden_size, &device, state)?;
        critic.head = load_module(critic.head, &dir.join(CRITIC_HEAD))?;
        load_optim(&mut critic.optim, &dir.join(CRITIC_OPTIM))?;
        self.critic = Some(critic);
        Ok(())
    }
}

/// [`whiten`] over the whole batch: mean and (n−1)-variance of every rank's `values` together.
fn whiten_across(shard: &Shard, values: &mut [f64]) -> Result<()> {
    if shard.is_single() {
        whiten(values);
        return Ok(());
    }
    let sums = shard.sum(vec![values.len() as f64, values.iter().sum()])?;
    let (n, mean) = (sums[0], if sums[0] > 0.0 { sums[1] / sums[0] } else { 0.0 });
    let squares = shard.sum(vec![values.iter().map(|v| (v - mean).powi(2)).sum()])?[0];
    let scale = if n > 1.0 { 1.0 / (squares / (n - 1.0) + 1e-8).sqrt() } else { 1.0 };
    for v in values {
        *v = (*v - mean) * scale;
    }
    Ok(())
}
