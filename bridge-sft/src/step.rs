//! The SFT loss of a batch for any trainer ([`sft_loss`]), and the standalone SFT baseline
//! ([`SftTrainer`]).
//!
//! The bilevel trainer composes [`sft_loss`] with its RL terms (e.g. `(1−λ)·L_SFT + λ·L_RL`) and
//! splits the gradient of the sum into the base and adapter groups itself; [`SftTrainer`] is
//! the "SFT" row of method.md §5: it minimises `L_SFT` over the base θ (and optionally the
//! adapter w) with AdamW, global-norm clipping and a finiteness check before every update.

use crate::batch::{TokenizedSource, pack_sequences};
use crate::loss::{LossReduction, masked_nll};
use crate::tokenize::{SftTokenizer, TokenizeConfig};
use crate::{BatchConfig, MaskedNll};
use bridge_core::error::ensure_finite;
use bridge_core::{
    AdamWSettings, BridgeError, CausalLm, DataCursor, ExampleSource, FlatGradients, Result, SequenceBatch, SftSource,
    TokenSequence, derive_seed,
};
use burn::optim::ModuleOptimizer;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// The SFT loss of one batch.
#[derive(Clone, Debug)]
pub struct SftLossOutput {
    /// `−J_SFT` of the batch under the chosen reduction: a one-element tensor, differentiable
    /// with respect to the base and (when given) the adapter.
    pub loss: Tensor<1>,
    /// Number of target tokens scored.
    pub num_tokens: usize,
    /// The loss value on the host (may be non-finite: callers check it with
    /// [`ensure_finite`] before acting on it).
    pub value: f64,
}

/// The token-mean SFT loss `−Σ(logp·mask)/Σmask` of `batch` under `π(·; base, adapter)`.
///
/// # Shapes
/// - `batch`: `B` rows padded to `T` tokens; the scores are `[B, T−1]`
/// - returned `loss`: `[1]`
pub fn sft_loss<L: CausalLm>(
    lm: &L,
    base: &L::Base,
    adapter: Option<&L::Adapter>,
    batch: &SequenceBatch,
) -> Result<SftLossOutput> {
    sft_loss_with(lm, base, adapter, batch, LossReduction::TokenMean)
}

/// [`sft_loss`] with another [`LossReduction`].
///
/// # Shapes
/// - `batch`: `B` rows padded to `T` tokens; the scores are `[B, T−1]`
/// - returned `loss`: `[1]`
pub fn sft_loss_with<L: CausalLm>(
    lm: &L,
    base: &L::Base,
    adapter: Option<&L::Adapter>,
    batch: &SequenceBatch,
    reduction: LossReduction,
) -> Result<SftLossOutput> {
    let scores = lm.token_scores(base, adapter, batch, false)?;
    let MaskedNll { loss, num_tokens } = masked_nll(&scores, reduction)?;
    let value = loss.clone().detach().into_scalar::<f64>();
    Ok(SftLossOutput { loss, num_tokens, value })
}

/// Settings of the SFT baseline (serde; unknown keys are rejected).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SftConfig {
    /// Tokenisation (max length, truncation, EOS).
    pub tokenize: TokenizeConfig,
    /// Batch size and packing.
    pub batch: BatchConfig,
    /// Loss reduction.
    pub reduction: LossReduction,
    /// AdamW for the base θ (its `max_grad_norm` clips θ's gradient).
    pub optim: AdamWSettings,
    /// AdamW for the adapter w; `None` keeps the adapter (if any) frozen. Its `max_grad_norm`
    /// clips w's gradient separately from θ's.
    pub adapter_optim: Option<AdamWSettings>,
    /// Linear learning-rate warm-up over this many steps (0: none), for both groups.
    pub warmup_steps: u64,
    /// Run seed; the data order uses the stream `data/sft`.
    pub seed: u64,
    /// Reshuffle the examples every epoch.
    pub shuffle: bool,
}

impl Default for SftConfig {
    fn default() -> Self {
        Self {
            tokenize: TokenizeConfig::default(),
            batch: BatchConfig::default(),
            reduction: LossReduction::TokenMean,
            optim: AdamWSettings::default(),
            adapter_optim: None,
            warmup_steps: 0,
            seed: 0,
            shuffle: true,
        }
    }
}

impl SftConfig {
    /// Checks every value, naming the bad field (prefixed with `prefix`, e.g. `sft`).
    pub fn validate(&self, prefix: &str) -> Result<()> {
        self.tokenize.validate(&format!("{prefix}.tokenize"))?;
        self.batch.validate(&format!("{prefix}.batch"), self.tokenize.max_len)?;
        self.optim.validate(&format!("{prefix}.optim"))?;
        if let Some(a) = &self.adapter_optim {
            a.validate(&format!("{prefix}.adapter_optim"))?;
        }
        Ok(())
    }

    /// The learning rate of `settings` at step `step` (0-based), after warm-up.
    pub fn lr_at(&self, settings: &AdamWSettings, step: u64) -> f64 {
        if self.warmup_steps == 0 {
            settings.lr
        } else {
            settings.lr * ((step + 1) as f64 / self.warmup_steps as f64).min(1.0)
        }
    }
}

/// What one SFT step did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SftStepMetrics {
    /// The step index (0-based) this step ran as.
    pub step: u64,
    /// The loss before the update.
    pub loss: f64,
    /// Target tokens in the batch.
    pub num_tokens: usize,
    /// Examples in the batch.
    pub num_examples: usize,
    /// Rows of the batch (fewer than examples when packing).
    pub num_rows: usize,
    /// Norm of θ's gradient before clipping.
    pub grad_norm: f64,
    /// Norm of w's gradient before clipping, when the adapter is trained.
    pub adapter_grad_norm: Option<f64>,
    /// θ's learning rate used.
    pub lr: f64,
    /// w's learning rate used, when the adapter is trained.
    pub adapter_lr: Option<f64>,
    /// Epochs of the (tokenised) data consumed after this step.
    pub epoch: f64,
}

/// The SFT baseline: minimises `L_SFT` over the base θ (and optionally the adapter w).
pub struct SftTrainer<L: CausalLm> {
    lm: L,
    base: L::Base,
    adapter: Option<L::Adapter>,
    data: TokenizedSource,
    cursor: DataCursor,
    config: SftConfig,
    base_optim: ModuleOptimizer,
    adapter_optim: Option<ModuleOptimizer>,
    step: u64,
}

impl<L: CausalLm> std::fmt::Debug for SftTrainer<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SftTrainer")
            .field("step", &self.step)
            .field("examples", &self.data.sequences().len())
            .field("cursor", &self.cursor)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The gradient of one group, clipped when `max_norm` is set, and its norm before clipping.
fn clipped(grads: FlatGradients, max_norm: Option<f64>) -> (FlatGradients, f64) {
    match max_norm {
        Some(m) => grads.clip_norm(m),
        None => {
            let norm = grads.norm();
            (grads, norm)
        }
    }
}

impl<L: CausalLm> SftTrainer<L> {
    /// A trainer over `source`, tokenised once with `lm`'s codec. The weights live on the device
    /// the loss is to be differentiated on (an autodiff device). With an adapter and no
    /// `adapter_optim`, the adapter is used in every forward pass but never updated (its
    /// gradient, if it requires one, is computed and discarded; the module is not modified).
    pub fn new<S: SftSource>(
        lm: L,
        base: L::Base,
        adapter: Option<L::Adapter>,
        source: &S,
        config: SftConfig,
    ) -> Result<Self> {
        config.validate("sft")?;
        if config.adapter_optim.is_some() && adapter.is_none() {
            return Err(BridgeError::config("sft.adapter_optim", "is set but no adapter was given"));
        }
        let data = {
            let tokenizer = SftTokenizer::new(lm.codec(), &config.tokenize)?;
            TokenizedSource::new(source, &tokenizer)?
        };
        let cursor = DataCursor::new(derive_seed(config.seed, "data/sft"), config.shuffle);
        let base_optim = config.optim.build();
        let adapter_optim = config.adapter_optim.as_ref().map(AdamWSettings::build);
        Ok(Self { lm, base, adapter, data, cursor, config, base_optim, adapter_optim, step: 0 })
    }

    /// The model architecture.
    pub fn lm(&self) -> &L {
        &self.lm
    }

    /// The current base θ.
    pub fn base(&self) -> &L::Base {
        &self.base
    }

    /// The adapter w, if any.
    pub fn adapter(&self) -> Option<&L::Adapter> {
        self.adapter.as_ref()
    }

    /// The tokenised training data (with its tokenisation counts).
    pub fn data(&self) -> &TokenizedSource {
        &self.data
    }

    /// The settings.
    pub fn config(&self) -> &SftConfig {
        &self.config
    }

    /// The data position (what a checkpoint stores to resume the same order).
    pub fn cursor(&self) -> &DataCursor {
        &self.cursor
    }

    /// Steps taken so far.
    pub fn steps_done(&self) -> u64 {
        self.step
    }

    /// Resumes at `step` with the data position `cursor` (from a checkpoint).
    pub fn resume_at(&mut self, step: u64, cursor: DataCursor) {
        self.step = step;
        self.cursor = cursor;
    }

    /// Gives back the trained weights.
    pub fn into_parts(self) -> (L::Base, Option<L::Adapter>) {
        (self.base, self.adapter)
    }

    /// Batches sequences as the config says (padded, or packed then padded).
    fn make_batch(&self, sequences: Vec<TokenSequence>) -> Result<SequenceBatch> {
        let rows = match (self.config.batch.packing, self.config.tokenize.max_len) {
            (true, Some(len)) => pack_sequences(&sequences, len)?,
            _ => sequences,
        };
        SequenceBatch::new(rows, self.lm.codec().pad_token_id())
    }

    /// One optimiser step on the next batch. The loss and the gradient norms are checked to be
    /// finite *before* any weight changes; on an error the weights and the data position are
    /// left as they were.
    pub fn step(&mut self) -> Result<SftStepMetrics> {
        let saved_cursor = self.cursor.clone();
        let result = self.try_step();
        if result.is_err() {
            self.cursor = saved_cursor;
        }
        result
    }

    fn try_step(&mut self) -> Result<SftStepMetrics> {
        let step = self.step;
        let sequences = self.cursor.next_batch(&self.data, self.config.batch.batch_size)?;
        let num_examples = sequences.len();
        let batch = self.make_batch(sequences)?;
        let out = sft_loss_with(&self.lm, &self.base, self.adapter.as_ref(), &batch, self.config.reduction)?;
        let loss = ensure_finite("sft_loss", out.value, step)?;

        let mut grads = out.loss.backward();
        let base_grads = FlatGradients::from_backward(&mut grads, &self.base);
        if base_grads.is_empty() {
            return Err(BridgeError::InvalidInput(
                "the SFT loss reaches no parameter of the base (is it frozen, or not on an autodiff device?)".into(),
            ));
        }
        let (base_grads, grad_norm) = clipped(base_grads, self.config.optim.max_grad_norm);
        ensure_finite("sft_grad_norm", grad_norm, step)?;
        let adapter_update = match (&self.adapter, &self.config.adapter_optim) {
            (Some(adapter), Some(settings)) => {
                let g = FlatGradients::from_backward(&mut grads, adapter);
                if g.is_empty() {
                    return Err(BridgeError::InvalidInput(
                        "`adapter_optim` is set but the SFT loss reaches no adapter parameter (is it frozen?)".into(),
                    ));
                }
                let (g, norm) = clipped(g, settings.max_grad_norm);
                ensure_finite("sft_adapter_grad_norm", norm, step)?;
                Some((g, norm, self.config.lr_at(settings, step)))
            }
            _ => None,
        };

        // Everything is finite: update.
        let lr = self.config.lr_at(&self.config.optim, step);
        let g = base_grads.to_gradients_params(&self.base);
        self.base = self.base_optim.step(lr, self.base.clone(), g);
        let (adapter_grad_norm, adapter_lr) = match (adapter_update, &mut self.adapter, &mut self.adapter_optim) {
            (Some((g, norm, alr)), Some(adapter), Some(optim)) => {
                let g = g.to_gradients_params(adapter);
                *adapter = optim.step(alr, adapter.clone(), g);
                (Some(norm), Some(alr))
            }
            _ => (None, None),
        };
        self.step += 1;
        Ok(SftStepMetrics {
            step,
            loss,
            num_tokens: out.num_tokens,
            num_examples,
            num_rows: batch.batch_size(),
            grad_norm,
            adapter_grad_norm,
            lr,
            adapter_lr,
            epoch: self.cursor.epochs_done(self.data.len()),
        })
    }

    /// The token-mean SFT loss of `sequences` under the current weights, computed in padded
    /// chunks of `batch.batch_size` rows and combined weighted by target tokens (no update).
    pub fn eval_loss(&self, sequences: &[TokenSequence]) -> Result<f64> {
        let (mut nll, mut tokens) = (0.0, 0usize);
        for chunk in sequences.chunks(self.config.batch.batch_size.max(1)) {
            let batch = SequenceBatch::new(chunk.to_vec(), self.lm.codec().pad_token_id())?;
            if batch.num_targets() == 0 {
                continue;
            }
            let out = sft_loss(&self.lm, &self.base, self.adapter.as_ref(), &batch)?;
            nll += out.value * out.num_tokens as f64;
            tokens += out.num_tokens;
        }
        if tokens == 0 {
            return Err(BridgeError::InvalidInput("no target token to evaluate the SFT loss on".into()));
        }
        Ok(nll / tokens as f64)
    }
}
