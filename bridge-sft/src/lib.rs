//! # bridge-sft
//!
//! The supervised lower-level objective of BRIDGE, `J_SFT(θ, w) = E_{D_SFT} log π(r, y | x; θ, w)`
//! (method.md §2): data, tokenisation, batches and the loss ([`sft_loss`]), the building blocks that
//! `bridge-bilevel`'s algorithms compose. SFT alone is the `SftOnly` algorithm there, trained by
//! the same run loop as every other method.
//!
//! | module | what it provides |
//! |---|---|
//! | [`data`] | JSONL loaders for `D_SFT` ([`bridge_core::SftExample`]) and `D_RL` ([`bridge_core::RlPrompt`]) in the GSM8K, MATH, prompt/completion and conversational forms, with a [`PromptTemplate`] |
//! | [`tokenize`] | [`SftTokenizer`]: example → [`bridge_core::TokenSequence`] with the prompt masked out, EOS, truncation policies |
//! | [`batch`] | padded batches and first-fit-decreasing packing; [`SftBatcher`] combines tokenisation and batching |
//! | [`loss`] | [`masked_nll`]: token-mean (default), sum or per-sequence-mean negative log-likelihood |
//! | [`step`] | [`sft_loss`], the SFT loss of a batch at any weights `(θ, w)` |
//!
//! Losses are *minimised*: the SFT loss is `−J_SFT` normalised per target token (by default).
//!
//! ```
//! use bridge_core::testing::{BigramLm, CharCodec};
//! use bridge_core::{BridgeRng, CausalLm, SftExample};
//! use bridge_sft::{SftBatcher, SftTokenizer, TokenizeConfig, sft_loss};
//! use burn::tensor::Device;
//!
//! let device = Device::flex().autodiff();
//! let lm = BigramLm::new(CharCodec::new("abc"));
//! let base = lm.init_base(1.0, &device, &mut BridgeRng::seed_from_u64(0));
//! let examples = [SftExample { id: "0".into(), prompt: "ab".into(), completion: "c".into() }];
//! let config = TokenizeConfig::default(); // EOS appended, no length limit
//! let tokenizer = SftTokenizer::new(lm.codec(), &config)?;
//! let batch = SftBatcher::new(tokenizer, lm.codec(), false)?.batch(&examples)?.expect("one example kept");
//! let out = sft_loss(&lm, &base, None, &batch.batch)?;
//! assert_eq!(out.num_tokens, 2); // `c` and <eos>; the prompt is not scored
//! let _grads = out.loss.backward();
//! # Ok::<(), bridge_core::BridgeError>(())
//! ```

pub mod batch;
pub mod data;
pub mod loss;
pub mod step;
pub mod tokenize;

pub use batch::{BatchConfig, SftBatch, SftBatcher, TokenizedSource, pack_sequences, pad_batch};
pub use data::{DatasetConfig, PromptTemplate, load_rl_prompts, load_sft_examples};
pub use loss::{LossReduction, MaskedNll, masked_nll};
pub use step::{SftLossOutput, sft_loss, sft_loss_with};
pub use tokenize::{SftTokenizer, TokenizeConfig, TokenizeOutcome, TokenizeStats, TruncationPolicy};
