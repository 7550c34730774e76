//! Everything a run carries from step to step, and its checkpoints.
//!
//! A [`TrainState`] holds the weights (θ, θ̂, w, the frozen reference), one optimiser per
//! parameter group, the rollout RNG, both data cursors and the step counter. A checkpoint holds
//! *all* of it, so that `k` steps + resume + `N−k` steps equal `N` steps exactly.
//!
//! Checkpoints are written atomically: into `checkpoints/step-NNNNNNNN.tmp/`, then renamed to
//! `checkpoints/step-NNNNNNNN/` (its `state.json` written last, so a directory with one is
//! complete), then `checkpoints/latest` is replaced (temp file + rename). A run killed at any
//! moment leaves the previous checkpoint complete and `latest` pointing at a complete directory.
//!
//! Pruning after each save keeps the newest `keep` complete checkpoints no newer than `latest`,
//! and removes the leftovers of a killed write: `*.tmp` entries, step directories without
//! `state.json`, and complete step directories newer than `latest` (written by a run that died
//! before naming them in `latest`; the resumed run went on from an older checkpoint, so they
//! belong to no history). See [`prune_checkpoints`].

use bridge_core::{BridgeError, BridgeRng, CausalLm, DataCursor, GroupOptimizer, Result};
use burn::module::Module;
use burn::store::ModuleRecord;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

/// One optimiser per parameter group.
#[derive(Clone)]
pub struct Optimizers {
    /// θ (learning rate α).
    pub theta: GroupOptimizer,
    /// θ̂, BRIDGE's RL-only base (learning rate α).
    pub theta_hat: Option<GroupOptimizer>,
    /// w, the adapter (learning rate β).
    pub adapter: Option<GroupOptimizer>,
    /// θ's SFT optimiser of naive alternating (its own learning rate and moments).
    pub theta_sft: Option<GroupOptimizer>,
}

/// The mutable state of a run.
pub struct TrainState<L: CausalLm> {
    /// The base θ.
    pub theta: L::Base,
    /// The RL-only base θ̂ (BRIDGE only).
    pub theta_hat: Option<L::Base>,
    /// The adapter w.
    pub adapter: Option<L::Adapter>,
    /// The frozen reference π_ref = θ₀ (only when the KL coefficient is non-zero).
    pub reference: Option<L::Base>,
    /// The optimisers.
    pub optim: Optimizers,
    /// Rollout sampling RNG.
    pub rollout_rng: BridgeRng,
    /// Position in the SFT data.
    pub sft_cursor: DataCursor,
    /// Position in the RL prompts.
    pub rl_cursor: DataCursor,
    /// Steps completed.
    pub step: u64,
}

/// The host-side part of a checkpoint (`state.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Steps completed.
    pub step: u64,
    /// Rollout RNG.
    pub rollout_rng: BridgeRng,
    /// SFT cursor.
    pub sft_cursor: DataCursor,
    /// RL cursor.
    pub rl_cursor: DataCursor,
    /// Which weights the checkpoint holds.
    pub has_theta_hat: bool,
    /// Whether `adapter.bpk` is present.
    pub has_adapter: bool,
    /// Whether `reference.bpk` is present.
    pub has_reference: bool,
    /// Free-form data of the caller (e.g. the resolved config's digest, wall time so far).
    #[serde(default)]
    pub extra: serde_json::Value,
}

fn record_err(path: &Path, e: impl std::fmt::Display) -> BridgeError {
    BridgeError::checkpoint(path, e.to_string())
}

/// Saves `module` (values and parameter ids) as a burnpack record at `path`.
pub fn save_module<M: Module>(module: &M, path: &Path) -> Result<()> {
    module.clone().into_record().save(path).map_err(|e| record_err(path, e))
}

/// Loads the record at `path` into `module` (whose architecture must match): values and ids.
pub fn load_module<M: Module>(module: M, path: &Path) -> Result<M> {
    let record = ModuleRecord::load(path).map_err(|e| record_err(path, e))?;
    module.try_load_record(record).map_err(|e| record_err(path, e))
}

/// Saves an optimiser's state (moments, step counts) at `path`.
pub fn save_optim(optim: &GroupOptimizer, path: &Path) -> Result<()> {
    optim.optimizer().save(path).map_err(|e| record_err(path, e))
}

/// Loads an optimiser's state saved by [`save_optim`].
pub fn load_optim(optim: &mut GroupOptimizer, path: &Path) -> Result<()> {
    let loaded = optim.optimizer().clone().load(path).map_err(|e| record_err(path, e))?;
    optim.set_optimizer(loaded);
    Ok(())
}

pub use bridge_core::fs::write_atomic;

/// Name of the checkpoint directory of `step`.
pub fn checkpoint_name(step: u64) -> String {
    format!("step-{step:08}")
}

impl<L: CausalLm> TrainState<L> {
    /// The number of the step being taken, counted from 1 (`step + 1`): what the `step` metric of
    /// that step will be, and what its errors (a non-finite loss, say) name.
    pub fn next_step(&self) -> u64 {
        self.step + 1
    }

    /// Writes a complete checkpoint under `dir/checkpoints/`, atomically, and keeps only the
    /// newest `keep` checkpoints. Returns the checkpoint's directory.
    pub fn save_checkpoint(&self, dir: &Path, keep: usize, extra: serde_json::Value) -> Result<PathBuf> {
        self.save_checkpoint_with(dir, keep, extra, |_| Ok(()))
    }

    /// [`Self::save_checkpoint`], with `write_more` adding files to the checkpoint directory
    /// before it is completed (an algorithm's own state:
    /// [`TrainingAlgorithm::save_state`](crate::TrainingAlgorithm::save_state)); what it writes
    /// is part of the same atomic rename.
    pub fn save_checkpoint_with(
        &self,
        dir: &Path,
        keep: usize,
        extra: serde_json::Value,
        write_more: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<PathBuf> {
        let root = dir.join("checkpoints");
        fs::create_dir_all(&root).map_err(|e| BridgeError::io(&root, e))?;
        let name = checkpoint_name(self.step);
        let final_dir = root.join(&name);
        let tmp = root.join(format!("{name}.tmp"));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| BridgeError::io(&tmp, e))?;
        }
        fs::create_dir_all(&tmp).map_err(|e| BridgeError::io(&tmp, e))?;
        save_module(&self.theta, &tmp.join("theta.bpk"))?;
        save_optim(&self.optim.theta, &tmp.join("optim-theta.bpk"))?;
        if let Some(m) = &self.theta_hat {
            save_module(m, &tmp.join("theta_hat.bpk"))?;
        }
        if let Some(o) = &self.optim.theta_hat {
            save_optim(o, &tmp.join("optim-theta_hat.bpk"))?;
        }
        if let Some(m) = &self.adapter {
            save_module(m, &tmp.join("adapter.bpk"))?;
        }
        if let Some(o) = &self.optim.adapter {
            save_optim(o, &tmp.join("optim-adapter.bpk"))?;
        }
        if let Some(o) = &self.optim.theta_sft {
            save_optim(o, &tmp.join("optim-theta_sft.bpk"))?;
        }
        if let Some(m) = &self.reference {
            save_module(m, &tmp.join("reference.bpk"))?;
        }
        let meta = CheckpointMeta {
            step: self.step,
            rollout_rng: self.rollout_rng.clone(),
            sft_cursor: self.sft_cursor.clone(),
            rl_cursor: self.rl_cursor.clone(),
            has_theta_hat: self.theta_hat.is_some(),
            has_adapter: self.adapter.is_some(),
            has_reference: self.reference.is_some(),
            extra,
        };
        write_more(&tmp)?;
        let json = serde_json::to_vec_pretty(&meta).map_err(|e| BridgeError::checkpoint(&tmp, e.to_string()))?;
        write_atomic(&tmp.join("state.json"), &json)?;
        if final_dir.exists() {
            fs::remove_dir_all(&final_dir).map_err(|e| BridgeError::io(&final_dir, e))?;
        }
        fs::rename(&tmp, &final_dir).map_err(|e| BridgeError::io(&final_dir, e))?;
        write_atomic(&root.join("latest"), name.as_bytes())?;
        prune_checkpoints(dir, keep)?;
        Ok(final_dir)
    }

    /// Loads the checkpoint in `checkpoint_dir` into this state (whose modules must have the
    /// checkpoint's architecture; their values and parameter ids are replaced).
    pub fn load_checkpoint(mut self, checkpoint_dir: &Path) -> Result<(Self, CheckpointMeta)> {
        let meta = read_checkpoint_meta(checkpoint_dir)?;
        let mismatch = |what: &str| {
            BridgeError::checkpoint(checkpoint_dir, format!("the checkpoint and the run disagree on {what}"))
        };
        if meta.has_theta_hat != self.theta_hat.is_some() {
            return Err(mismatch("θ̂ (the algorithm differs)"));
        }
        if meta.has_adapter != self.adapter.is_some() {
            return Err(mismatch("the adapter"));
        }
        if meta.has_reference != self.reference.is_some() {
            return Err(mismatch("the reference model (KL coefficient)"));
        }
        self.theta = load_module(self.theta, &checkpoint_dir.join("theta.bpk"))?;
        load_optim(&mut self.optim.theta, &checkpoint_dir.join("optim-theta.bpk"))?;
        if let Some(m) = self.theta_hat.take() {
            self.theta_hat = Some(load_module(m, &checkpoint_dir.join("theta_hat.bpk"))?);
        }
        if let Some(o) = self.optim.theta_hat.as_mut() {
            load_optim(o, &checkpoint_dir.join("optim-theta_hat.bpk"))?;
        }
        if let Some(m) = self.adapter.take() {
            self.adapter = Some(load_module(m, &checkpoint_dir.join("adapter.bpk"))?);
        }
        if let Some(o) = self.optim.adapter.as_mut() {
            load_optim(o, &checkpoint_dir.join("optim-adapter.bpk"))?;
        }
        if let Some(o) = self.optim.theta_sft.as_mut() {
            load_optim(o, &checkpoint_dir.join("optim-theta_sft.bpk"))?;
        }
        if let Some(m) = self.reference.take() {
            self.reference = Some(load_module(m, &checkpoint_dir.join("reference.bpk"))?);
        }
        self.step = meta.step;
        self.rollout_rng = meta.rollout_rng.clone();
        self.sft_cursor = meta.sft_cursor.clone();
        self.rl_cursor = meta.rl_cursor.clone();
        Ok((self, meta))
    }
}

/// The host-side record (`state.json`: the step, RNG, cursors) of the checkpoint in
/// `checkpoint_dir`, without loading its weights.
pub fn read_checkpoint_meta(checkpoint_dir: &Path) -> Result<CheckpointMeta> {
    let meta_path = checkpoint_dir.join("state.json");
    let bytes = fs::read(&meta_path).map_err(|e| BridgeError::io(&meta_path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| BridgeError::checkpoint(&meta_path, format!("state.json: {e}")))
}

/// The newest complete checkpoint of the run in `dir` (`None` when there is none).
pub fn latest_checkpoint(dir: &Path) -> Result<Option<PathBuf>> {
    let root = dir.join("checkpoints");
    let latest = root.join("latest");
    if !latest.exists() {
        return Ok(None);
    }
    let name = fs::read_to_string(&latest).map_err(|e| BridgeError::io(&latest, e))?;
    let path = root.join(name.trim());
    if !path.join("state.json").exists() {
        return Err(BridgeError::checkpoint(&path, "`latest` names a checkpoint without state.json"));
    }
    Ok(Some(path))
}

/// The step of a checkpoint directory name (`step-00000042` → 42; `None` for anything else).
fn checkpoint_step(name: &str) -> Option<u64> {
    name.strip_prefix("step-").filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))?.parse().ok()
}

fn remove(path: &Path) -> Result<()> {
    let r = if path.is_dir() { fs::remove_dir_all(path) } else { fs::remove_file(path) };
    r.map_err(|e| BridgeError::io(path, e))
}

/// Prunes `dir/checkpoints/`: keeps the newest `keep` (at least 1) complete checkpoints whose
/// step is at most `latest`'s, and removes the rest together with the leftovers of killed writes
/// (`*.tmp` entries, step directories without `state.json`, and step directories newer than
/// `latest`). Returns the removed paths. Does nothing without a valid `latest`, so that a
/// directory whose checkpoints nothing names is never emptied.
pub fn prune_checkpoints(dir: &Path, keep: usize) -> Result<Vec<PathBuf>> {
    let Some(latest) = latest_checkpoint(dir)? else {
        return Ok(Vec::new());
    };
    let latest_step =
        latest.file_name().and_then(|n| n.to_str()).and_then(checkpoint_step).ok_or_else(|| {
            BridgeError::checkpoint(&latest, "`latest` names a directory that is not `step-NNNNNNNN`")
        })?;
    let root = dir.join("checkpoints");
    let mut complete: Vec<(u64, PathBuf)> = Vec::new();
    let mut removed = Vec::new();
    for entry in fs::read_dir(&root).map_err(|e| BridgeError::io(&root, e))? {
        let path = entry.map_err(|e| BridgeError::io(&root, e))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        if name.ends_with(".tmp") && (name.starts_with("step-") || name == "latest.tmp") {
            removed.push(path);
            continue;
        }
        let Some(step) = checkpoint_step(name) else { continue };
        if step > latest_step || !path.join("state.json").is_file() {
            removed.push(path);
        } else {
            complete.push((step, path));
        }
    }
    complete.sort();
    let excess = complete.len().saturating_sub(keep.max(1));
    removed.extend(complete.into_iter().take(excess).map(|(_, p)| p));
    for path in &removed {
        remove(path)?;
    }
    Ok(removed)
}
