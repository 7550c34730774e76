//! # bridge
//!
//! Training LLM reasoners with BRIDGE — cooperative SFT and RL through bilevel optimisation
//! (Chen et al., arXiv 2509.06948) — and every baseline it is measured against, on burn.
//!
//! This facade re-exports the workspace's crates and holds the application layer the examples
//! are thin binaries over: [`train`] (a run from a TOML config, its algorithm resolved through
//! the [`registry`]), [`quickstart`] (the
//! end-to-end comparison of `examples/quickstart.rs`), [`evaluate`] (a model on disk on benchmark
//! files: `examples/eval.rs`), [`bench`](mod@bench) (training-step and generation throughput),
//! [`device_check`] (the same computations on two backends, compared), [`launches`] (kernel
//! launches counted on cubecl backends) and [`compare`] (finished runs side by side: accuracy
//! before and after, one plot).
//!
//! | crate | re-exported as | what it holds |
//! |---|---|---|
//! | `bridge-core` | [`core`] | traits: policy, reward, data sources, outer objective, λ schedule |
//! | `bridge-models` | [`models`] | Llama/Qwen2/Qwen3 decoders, LoRA, HF and GGUF weights, tokenizers |
//! | `bridge-sft` | [`sft`] | the SFT objective and trainer |
//! | `bridge-rl` | [`rl`] | GRPO and its variants |
//! | `bridge-bilevel` | [`bilevel`] | BRIDGE and the baselines, checkpoints |
//! | `bridge-eval` | [`eval`] | verifier, rewards, benchmark runner |
//! | `bridge-tasks` | [`tasks`] | the quickstart's seeded arithmetic task (pre-training, SFT, RL and test splits) |
//! | `bridge-report` | [`report`] | metrics log, progress display, charts |

pub use bridge_bilevel as bilevel;
pub use bridge_core as core;
pub use bridge_eval as eval;
pub use bridge_models as models;
pub use bridge_report as report;
pub use bridge_rl as rl;
pub use bridge_sft as sft;
pub use bridge_tasks as tasks;

pub mod bench;
pub mod compare;
pub mod device_check;
pub mod dp_check;
pub mod evaluate;
pub mod launches;
pub mod quickstart;
pub mod registry;
pub mod train;
