//! The weights, the bottom layer of the crate: the base θ ([`DecoderWeights`] and its parts), the
//! LoRA adapter w ([`lora`]) and their float dtype ([`precision`]).
//!
//! θ and w are separate burn modules, as BRIDGE needs them: one adapter is applied to two bases
//! (θ and θ̂) in one step without a copy, and each is its own parameter group. This layer builds
//! them (seeded random init, from HF- or PEFT-named host tensors), checks their shapes against a
//! [`DecoderConfig`](crate::config::DecoderConfig), exports them, casts them to a dtype and folds
//! an adapter into a base ([`merge`]). It has no forward pass and reads no file: the layers above
//! (`crate::forward`, the engines, `crate::io`) work on these types.

mod base;
pub mod lora;
pub mod precision;

pub use base::{DecoderLayer, DecoderWeights, Embedding, Mlp, Proj, RmsNorm, SelfAttention, merge};
