//! # bridge-models
//!
//! Decoder-only transformers (Llama, Qwen2/2.5, Qwen3) in burn, with a trainable base θ and a
//! LoRA adapter w kept as separate modules, weights from HF directories and GGUF files, and the
//! tokenizer with its chat template. [`Decoder`] implements
//! [`CausalLm`](bridge_core::policy::CausalLm): on the CPU, `token_scores` (every loss) runs a
//! fused training engine and `sample` a fused decoding engine ([`generate`]); on other backends
//! and dtypes both run burn tensor operations.
//!
//! # Layers
//! Each module uses only modules of the layers below it (no import cycle; checked by
//! `tests/module_graph.rs`, which also prints the graph):
//!
//! 1. [`config`] (architecture hyper-parameters) and [`tensors`] (host tensors under HF names).
//! 2. [`weights`]: θ ([`DecoderWeights`]), w ([`lora`]) and dtype casts ([`precision`]); init,
//!    shape checks, HF/PEFT-named maps, merging. No forward pass, no file.
//! 3. I/O on the weights: [`hf`] (safetensors directories), [`gguf`], [`tokenizer`], PEFT
//!    adapter directories, and [`pretrained`] (all of them together: a model as the examples open it). Beside it, independent of everything, the CPU row kernels
//!    (`kernels`: the gemm wrapper, RMSNorm, rotary, softmax, SwiGLU, `exp`, … with their
//!    backwards), written once for both CPU engines; and the tensor engine's custom autodiff
//!    operations (`ops`: chunked token scores, fused causal attention), in burn tensor
//!    operations of whichever backend runs them.
//! 4. The rotary tables (`rope`) and [`decoder`]: the [`Decoder`] type (config, codec, rotary
//!    tables, engine choice) and the checks every engine runs first.
//! 5. The tensor forward (`forward`): [`Decoder::forward_logits`] and the layer function that
//!    training and the tensor decoding engine share.
//! 6. The engines: the fused CPU training engine (`fused`) and [`generate`] (the generation
//!    loop, its tensor engine, and the host decoding engine `generate::host`); both CPU engines
//!    are built on the row kernels.
//! 7. `causal_lm`: `impl CausalLm for Decoder`, which sends each call to an engine.
//!
//! The modules `hf`, `gguf` and `tokenizer` live under `io/`, and `lora` and `precision` under
//! `weights/`; they are re-exported here at their historical paths.

mod causal_lm;
pub mod config;
pub mod decoder;
mod forward;
#[cfg(feature = "flex")]
mod fused;
pub mod generate;
mod io;
mod kernels;
#[cfg(any(feature = "flex", feature = "cuda"))]
mod ops;
mod rope;
pub mod tensors;
pub mod weights;

pub use config::{Architecture, DecoderConfig, RopeScaling};
pub use decoder::{AttentionPath, DecodeEngine, Decoder, ScoringEngine, TensorPaths};
pub use io::hf::{load_hf_dir, save_hf_dir};
pub use io::pretrained::{ModelFormat, Pretrained, open_codec, open_model, open_pretrained};
pub use io::{gguf, hf, pretrained, tokenizer};
pub use weights::lora::{LoraAdapter, LoraConfig, LoraTarget};
pub use weights::precision::{Precision, WeightDType};
pub use weights::{DecoderWeights, merge};
pub use weights::{lora, precision};
