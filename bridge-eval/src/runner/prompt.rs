//! How a benchmark question becomes the prompt a model continues: the workspace's one
//! [`PromptTemplate`] (from `bridge-core`), the same type the training data (`bridge-sft`) use, so
//! that a run is evaluated on the prompts it was trained on.

pub use bridge_core::prompt::{PromptTemplate, QUESTION_PLACEHOLDER};
