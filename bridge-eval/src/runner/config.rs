//! Settings of an evaluation run.

use super::prompt::PromptTemplate;
use crate::verify::VerifyOptions;
use bridge_core::{BridgeError, Result};
use serde::{Deserialize, Serialize};

/// Sampling k completions per prompt: avg@k, unbiased pass@j and maj@k.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SampledEval {
    /// Completions per prompt.
    pub k: usize,
    /// Softmax temperature.
    pub temperature: f64,
    /// Nucleus sampling threshold.
    pub top_p: Option<f64>,
    /// Keep only the `top_k` most likely tokens.
    pub top_k: Option<usize>,
    /// The `j`s to report pass@j for (each in `1..=k`); empty means the powers of two below `k`
    /// and `k` itself.
    pub pass_at: Vec<usize>,
}

impl Default for SampledEval {
    fn default() -> Self {
        Self { k: 8, temperature: 0.6, top_p: Some(0.95), top_k: None, pass_at: Vec::new() }
    }
}

impl SampledEval {
    /// `k` samples with the default temperature and top-p.
    pub fn with_k(k: usize) -> Self {
        Self { k, ..Self::default() }
    }

    /// The `j`s pass@j is reported for, sorted and without duplicates.
    pub fn pass_ks(&self) -> Vec<usize> {
        let mut ks = if self.pass_at.is_empty() {
            let mut ks: Vec<usize> =
                std::iter::successors(Some(1usize), |j| j.checked_mul(2)).take_while(|&j| j < self.k).collect();
            ks.push(self.k);
            ks
        } else {
            self.pass_at.clone()
        };
        ks.sort_unstable();
        ks.dedup();
        ks
    }

    /// Checks the values, naming the bad field.
    pub fn validate(&self) -> Result<()> {
        if self.k == 0 {
            return Err(BridgeError::config("eval.sampled.k", "must be ≥ 1"));
        }
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(BridgeError::config(
                "eval.sampled.temperature",
                format!("must be ≥ 0, got {}", self.temperature),
            ));
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return Err(BridgeError::config("eval.sampled.top_p", format!("must lie in (0, 1], got {p}")));
        }
        if self.top_k == Some(0) {
            return Err(BridgeError::config("eval.sampled.top_k", "must be ≥ 1"));
        }
        if let Some(j) = self.pass_at.iter().find(|&&j| j == 0 || j > self.k) {
            return Err(BridgeError::config("eval.sampled.pass_at", format!("{j} is outside 1..={}", self.k)));
        }
        Ok(())
    }
}

/// How a benchmark is evaluated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// How questions become prompts.
    pub prompt: PromptTemplate,
    /// Maximum new tokens per completion.
    pub max_new_tokens: usize,
    /// Strings that end a completion.
    pub stop_strings: Vec<String>,
    /// Prompts per `CausalLm::sample` call.
    pub batch_size: usize,
    /// Evaluate only the first `limit` records of each dataset.
    pub limit: Option<usize>,
    /// Run greedy decoding (temperature 0) for pass@1.
    pub greedy: bool,
    /// Also sample k completions per prompt.
    pub sampled: Option<SampledEval>,
    /// Seed of the sampling streams (one per dataset and mode).
    pub seed: u64,
    /// Metadata fields broken down by in the report (those absent from a dataset are skipped).
    pub category_fields: Vec<String>,
    /// How many failures the report keeps per dataset.
    pub max_failures: usize,
    /// Prompts and completions in failures are shortened to this many characters (0: no limit).
    pub max_text_chars: usize,
    /// Keep every record's per-completion results in the report.
    pub keep_records: bool,
    /// The answer verifier's options (not serialised).
    #[serde(skip)]
    pub verify: VerifyOptions,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            prompt: PromptTemplate::default(),
            max_new_tokens: 1024,
            stop_strings: Vec::new(),
            batch_size: 8,
            limit: None,
            greedy: true,
            sampled: None,
            seed: 0,
            category_fields: ["level", "difficulty", "type", "subject"].map(String::from).to_vec(),
            max_failures: 20,
            max_text_chars: 2000,
            keep_records: false,
            verify: VerifyOptions::default(),
        }
    }
}

impl EvalConfig {
    /// Checks the values, naming the bad field.
    pub fn validate(&self) -> Result<()> {
        self.prompt.validate("prompt")?;
        if self.max_new_tokens == 0 {
            return Err(BridgeError::config("eval.max_new_tokens", "must be ≥ 1"));
        }
        if self.batch_size == 0 {
            return Err(BridgeError::config("eval.batch_size", "must be ≥ 1"));
        }
        if !self.greedy && self.sampled.is_none() {
            return Err(BridgeError::config("eval.greedy", "nothing to do: greedy is off and `sampled` is not set"));
        }
        if let Some(s) = &self.sampled {
            s.validate()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_typos_are_rejected() {
        assert!(EvalConfig::default().validate().is_ok());
        assert_eq!(SampledEval::with_k(8).pass_ks(), vec![1, 2, 4, 8]);
        assert_eq!(SampledEval::with_k(5).pass_ks(), vec![1, 2, 4, 5]);
        assert_eq!(SampledEval::with_k(1).pass_ks(), vec![1]);
        assert_eq!(SampledEval { pass_at: vec![3, 1, 3], ..SampledEval::with_k(4) }.pass_ks(), vec![1, 3]);
        let bad = EvalConfig {
            sampled: Some(SampledEval { pass_at: vec![9], ..SampledEval::with_k(4) }),
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("eval.sampled.pass_at"));
        let bad = EvalConfig { greedy: false, ..Default::default() };
        assert!(bad.validate().is_err());
        let bad = EvalConfig { batch_size: 0, ..Default::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("batch_size"));
        let err = serde_json::from_str::<EvalConfig>(r#"{"max_new_token": 5}"#).unwrap_err();
        assert!(err.to_string().contains("max_new_token"), "{err}");
        let c: EvalConfig =
            serde_json::from_str(r#"{"sampled": {"k": 4}, "prompt": {"kind": "plain", "template": "{question}"}}"#)
                .unwrap();
        assert_eq!(c.sampled.unwrap().k, 4);
    }
}
