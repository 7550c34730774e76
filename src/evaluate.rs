//! A model on disk evaluated on benchmark files: the work of `examples/eval.rs`, over the model
//! that [`bridge_models::open_pretrained`] opens for every example (an HF directory or a `.gguf`
//! file, its tokenizer, an optional PEFT adapter).

use bridge_core::Result;
use bridge_eval::runner::{EvalConfig, EvalDataset, EvalProgress, EvalReport, evaluate_datasets};
use bridge_models::{Decoder, Pretrained};

/// Evaluates `model` (θ with its adapter, prompted through its own tokenizer and chat template)
/// on `datasets`; `progress` sees each batch. A model without a tokenizer (an HF directory
/// without `tokenizer.json`) is an error naming the missing file.
pub fn evaluate_pretrained(
    mut model: Pretrained,
    datasets: &[EvalDataset],
    config: &EvalConfig,
    progress: &mut dyn FnMut(&EvalProgress),
) -> Result<EvalReport> {
    let codec = model.take_codec()?;
    let lm = Decoder::new(model.config, Box::new(codec))?;
    evaluate_datasets(&lm, &model.weights, model.adapter.as_ref(), datasets, config, progress)
}
