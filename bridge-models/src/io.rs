//! Weights and tokenizers on disk: the layer between the files and the [`crate::weights`].
//!
//! - [`hf`]: Hugging Face model directories (`config.json`, safetensors, shards) in and out.
//! - [`gguf`]: llama.cpp's GGUF files (parser, dequantisers, config and tokenizer conversion).
//! - [`pretrained`]: a model as the examples and run configs open it (an HF directory or a GGUF
//!   file, its tokenizer, an optional PEFT adapter: [`pretrained::open_pretrained`]), and its
//!   export to an HF directory with tokenizer files ([`pretrained::Pretrained::save_hf_dir`]).
//! - [`tokenizer`]: the text codec of an HF directory or a GGUF file, with its chat template.
//! - `peft`: PEFT adapter directories
//!   ([`LoraAdapter::save_peft`](crate::lora::LoraAdapter::save_peft),
//!   [`LoraAdapter::load_peft`](crate::lora::LoraAdapter::load_peft)).
//!
//! Every loader produces a [`TensorMap`](crate::tensors::TensorMap) under HF (or PEFT) names,
//! and the weights layer builds the modules from it in one place, whatever the file format was.

pub mod gguf;
pub mod hf;
mod peft;
pub mod pretrained;
pub mod tokenizer;
