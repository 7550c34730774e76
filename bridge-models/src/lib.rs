//! # bridge-models
//!
//! Decoder-only transformers (Llama, Qwen2/2.5, Qwen3) in burn, with a trainable base θ and a
//! LoRA adapter w kept as separate modules, weights from HF directories and GGUF files, and the
//! tokenizer with its chat template. On the CPU, `token_scores` (every loss) runs the fused
//! training engine of [`fused`] and generation the fused decoding engine of [`generate`].

pub mod config;
// Moved to weights/; split into layers in the next commit.
#[path = "weights/base.rs"]
pub mod decoder;
#[cfg(feature = "flex")]
pub mod fused;
pub mod generate;
mod io;
mod kernels;
#[path = "weights/lora.rs"]
pub mod lora;
#[path = "weights/precision.rs"]
pub mod precision;
pub mod tensors;

pub use config::{Architecture, DecoderConfig, RopeScaling};
pub use decoder::{Decoder, DecoderWeights, ScoringEngine};
pub use io::hf::{load_hf_dir, open_model, save_hf_dir};
pub use io::{gguf, hf, tokenizer};
pub use lora::{LoraAdapter, LoraConfig, LoraTarget, merge};
pub use precision::WeightDType;
