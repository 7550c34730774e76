//! Supervised examples → token sequences with the prompt masked out of the loss.
//!
//! The prompt and the completion are encoded separately and concatenated (so the boundary is
//! exact even for tokenizers that would merge across it), EOS is appended to the completion, and
//! [`TokenSequence::prompt_completion`] marks only the completion tokens as targets. Sequences
//! longer than `max_len` are handled by a [`TruncationPolicy`]; an example left without any scored
//! target is dropped and counted in [`TokenizeStats`].

use bridge_core::{BridgeError, Result, SftExample, TextCodec, TokenSequence};
use serde::{Deserialize, Serialize};

/// What to do with an example longer than `max_len` tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TruncationPolicy {
    /// Keep the whole prompt and cut the end of the completion (EOS included). If the prompt
    /// alone fills `max_len`, nothing of the completion is left and the example is dropped.
    #[default]
    TruncateCompletion,
    /// Keep the whole completion and cut the beginning of the prompt, keeping at least one prompt
    /// token (the context of the first target); if the completion alone is still too long, its
    /// end is cut as well.
    TruncatePromptLeft,
    /// Skip the example (counted in [`TokenizeStats::dropped_too_long`]).
    Drop,
    /// Fail with [`BridgeError::InvalidInput`] naming the example.
    Error,
}

/// Tokenisation settings (serde; unknown keys are rejected).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenizeConfig {
    /// Maximum sequence length in tokens (prompt + completion + EOS); `None`: unlimited.
    pub max_len: Option<usize>,
    /// What to do with longer examples.
    pub truncation: TruncationPolicy,
    /// Append the codec's first EOS id to every completion, so the model learns to stop.
    pub append_eos: bool,
}

impl Default for TokenizeConfig {
    fn default() -> Self {
        Self { max_len: None, truncation: TruncationPolicy::TruncateCompletion, append_eos: true }
    }
}

impl TokenizeConfig {
    /// Checks the values, naming the bad field (prefixed with `prefix`).
    pub fn validate(&self, prefix: &str) -> Result<()> {
        if let Some(m) = self.max_len
            && m < 2
        {
            return Err(BridgeError::config(format!("{prefix}.max_len"), format!("must be ≥ 2, got {m}")));
        }
        Ok(())
    }
}

/// What became of one example.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenizeOutcome {
    /// The example is kept.
    Kept {
        /// Its tokens and loss mask.
        sequence: TokenSequence,
        /// Whether it was shortened to fit `max_len`.
        truncated: bool,
    },
    /// Dropped: longer than `max_len` under [`TruncationPolicy::Drop`].
    TooLong,
    /// Dropped: no completion token is left to score (empty completion, or truncated away).
    NoTarget,
}

/// Counts of what happened to a set of examples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizeStats {
    /// Examples kept (truncated ones included).
    pub kept: usize,
    /// Kept examples that were truncated.
    pub truncated: usize,
    /// Examples dropped for being too long ([`TruncationPolicy::Drop`]).
    pub dropped_too_long: usize,
    /// Examples dropped because no completion token was left to score.
    pub dropped_no_target: usize,
}

impl TokenizeStats {
    /// Records one outcome.
    pub fn record(&mut self, outcome: &TokenizeOutcome) {
        match outcome {
            TokenizeOutcome::Kept { truncated, .. } => {
                self.kept += 1;
                self.truncated += usize::from(*truncated);
            }
            TokenizeOutcome::TooLong => self.dropped_too_long += 1,
            TokenizeOutcome::NoTarget => self.dropped_no_target += 1,
        }
    }

    /// Examples dropped for any reason.
    pub fn dropped(&self) -> usize {
        self.dropped_too_long + self.dropped_no_target
    }

    /// Adds another set of counts.
    pub fn merge(&mut self, other: &TokenizeStats) {
        self.kept += other.kept;
        self.truncated += other.truncated;
        self.dropped_too_long += other.dropped_too_long;
        self.dropped_no_target += other.dropped_no_target;
    }
}

/// Turns [`SftExample`]s into [`TokenSequence`]s with a codec and a [`TokenizeConfig`].
#[derive(Clone, Copy)]
pub struct SftTokenizer<'a> {
    codec: &'a dyn TextCodec,
    config: &'a TokenizeConfig,
    eos: Option<u32>,
}

impl std::fmt::Debug for SftTokenizer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SftTokenizer").field("config", self.config).field("eos", &self.eos).finish()
    }
}

impl<'a> SftTokenizer<'a> {
    /// A tokenizer; an error if the config is invalid or EOS is asked for and the codec has none.
    pub fn new(codec: &'a dyn TextCodec, config: &'a TokenizeConfig) -> Result<Self> {
        config.validate("tokenize")?;
        let eos = if config.append_eos {
            Some(*codec.eos_token_ids().first().ok_or_else(|| {
                BridgeError::Tokenizer("`append_eos` is set but the codec has no EOS token id".into())
            })?)
        } else {
            None
        };
        Ok(Self { codec, config, eos })
    }

    /// The settings.
    pub fn config(&self) -> &TokenizeConfig {
        self.config
    }

    /// The codec.
    pub fn codec(&self) -> &'a dyn TextCodec {
        self.codec
    }

    /// Tokenises one example; an encoding error names the example and the part (`prompt` or
    /// `completion`).
    pub fn tokenize(&self, example: &SftExample) -> Result<TokenizeOutcome> {
        let encode = |part: &str, text: &str| {
            self.codec.encode(text).map_err(|e| {
                BridgeError::InvalidInput(format!("example `{}`: the {part} does not encode: {e}", example.id))
            })
        };
        let prompt = encode("prompt", &example.prompt)?;
        let completion = encode("completion", &example.completion)?;
        self.tokenize_encoded(&example.id, prompt, completion)
    }

    /// Tokenises an example whose prompt and completion are already encoded (EOS not yet
    /// appended).
    pub fn tokenize_encoded(&self, id: &str, prompt: Vec<u32>, mut completion: Vec<u32>) -> Result<TokenizeOutcome> {
        completion.extend(self.eos);
        self.assemble(id, prompt, completion)
    }

    /// Applies truncation to already encoded parts (`completion` with its EOS, if any).
    pub fn assemble(&self, id: &str, mut prompt: Vec<u32>, mut completion: Vec<u32>) -> Result<TokenizeOutcome> {
        let total = prompt.len() + completion.len();
        let mut truncated = false;
        if let Some(max_len) = self.config.max_len
            && total > max_len
        {
            truncated = true;
            match self.config.truncation {
                TruncationPolicy::TruncateCompletion => completion.truncate(max_len.saturating_sub(prompt.len())),
                TruncationPolicy::TruncatePromptLeft => {
                    let keep_prompt = max_len.saturating_sub(completion.len()).max(1).min(prompt.len());
                    prompt.drain(..prompt.len() - keep_prompt);
                    completion.truncate(max_len - prompt.len());
                }
                TruncationPolicy::Drop => return Ok(TokenizeOutcome::TooLong),
                TruncationPolicy::Error => {
                    return Err(BridgeError::InvalidInput(format!(
                        "example `{id}` has {total} tokens ({} prompt + {} completion), more than max_len = {max_len}",
                        prompt.len(),
                        completion.len()
                    )));
                }
            }
        }
        let sequence = TokenSequence::prompt_completion(&prompt, &completion);
        if sequence.loss_mask.iter().skip(1).any(|&m| m) {
            Ok(TokenizeOutcome::Kept { sequence, truncated })
        } else {
            Ok(TokenizeOutcome::NoTarget)
        }
    }

    /// Tokenises `examples`, returning the kept sequences (in order) and the counts.
    pub fn tokenize_all<'e>(
        &self,
        examples: impl IntoIterator<Item = &'e SftExample>,
    ) -> Result<(Vec<TokenSequence>, TokenizeStats)> {
        let mut stats = TokenizeStats::default();
        let mut kept = Vec::new();
        for ex in examples {
            let outcome = self.tokenize(ex)?;
            stats.record(&outcome);
            if let TokenizeOutcome::Kept { sequence, .. } = outcome {
                kept.push(sequence);
            }
        }
        Ok((kept, stats))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridge_core::testing::CharCodec;

    fn ex(prompt: &str, completion: &str) -> SftExample {
        SftExample { id: "e".into(), prompt: prompt.into(), completion: completion.into() }
    }

    fn kept(o: TokenizeOutcome) -> (Vec<u32>, Vec<bool>, bool) {
        match o {
            TokenizeOutcome::Kept { sequence, truncated } => (sequence.tokens, sequence.loss_mask, truncated),
            other => panic!("expected a kept sequence, got {other:?}"),
        }
    }

    #[test]
    fn masks_the_prompt_and_appends_eos() {
        let codec = CharCodec::new("abcdef");
        let cfg = TokenizeConfig::default();
        let t = SftTokenizer::new(&codec, &cfg).unwrap();
        let (tokens, mask, truncated) = kept(t.tokenize(&ex("ab", "cd")).unwrap());
        assert_eq!(tokens, vec![1, 2, 3, 4, 0]);
        assert_eq!(mask, vec![false, false, true, true, true]);
        assert!(!truncated);
        let cfg = TokenizeConfig { append_eos: false, ..Default::default() };
        let t = SftTokenizer::new(&codec, &cfg).unwrap();
        assert_eq!(kept(t.tokenize(&ex("ab", "cd")).unwrap()).0, vec![1, 2, 3, 4]);
        // Empty completion without EOS: nothing to learn.
        assert_eq!(t.tokenize(&ex("ab", "")).unwrap(), TokenizeOutcome::NoTarget);
        assert!(t.tokenize(&ex("xyz", "a")).is_err(), "unknown characters are a tokenizer error");
    }

    #[test]
    fn truncation_policies() {
        let codec = CharCodec::new("abcdef");
        let with = |truncation, max_len| TokenizeConfig { max_len: Some(max_len), truncation, append_eos: true };

        // prompt "abc" (3) + completion "def" + EOS (4) = 7 tokens, max 5.
        let cfg = with(TruncationPolicy::TruncateCompletion, 5);
        let t = SftTokenizer::new(&codec, &cfg).unwrap();
        let (tokens, mask, truncated) = kept(t.tokenize(&ex("abc", "def")).unwrap());
        assert_eq!((tokens, mask, truncated), (vec![1, 2, 3, 4, 5], vec![false, false, false, true, true], true));
        // Prompt fills max_len: dropped as NoTarget.
        assert_eq!(t.tokenize(&ex("abcde", "f")).unwrap(), TokenizeOutcome::NoTarget);
        // Fits: untouched.
        assert!(!kept(t.tokenize(&ex("a", "bc")).unwrap()).2);

        let cfg = with(TruncationPolicy::TruncatePromptLeft, 5);
        let t = SftTokenizer::new(&codec, &cfg).unwrap();
        let (tokens, mask, _) = kept(t.tokenize(&ex("abc", "def")).unwrap());
        assert_eq!((tokens, mask), (vec![3, 4, 5, 6, 0], vec![false, true, true, true, true]));
        // Completion alone too long: one prompt token kept, the completion's end cut.
        let (tokens, mask, _) = kept(t.tokenize(&ex("ab", "cdeff")).unwrap());
        assert_eq!((tokens, mask), (vec![2, 3, 4, 5, 6], vec![false, true, true, true, true]));

        let cfg = with(TruncationPolicy::Drop, 5);
        let t = SftTokenizer::new(&codec, &cfg).unwrap();
        assert_eq!(t.tokenize(&ex("abc", "def")).unwrap(), TokenizeOutcome::TooLong);
        let (seqs, stats) = t.tokenize_all(&[ex("abc", "def"), ex("a", "b"), ex("abcd", "")]).unwrap();
        assert_eq!(seqs.len(), 2);
        assert_eq!(
            stats,
            TokenizeStats { kept: 2, truncated: 0, dropped_too_long: 1, dropped_no_target: 0 },
            "`abcd`+EOS fits exactly and EOS is its target"
        );

        let cfg = with(TruncationPolicy::Error, 5);
        let t = SftTokenizer::new(&codec, &cfg).unwrap();
        let e = t.tokenize(&ex("abc", "def")).unwrap_err().to_string();
        assert!(e.contains("`e`") && e.contains("7 tokens"), "{e}");

        assert!(SftTokenizer::new(&codec, &with(TruncationPolicy::Drop, 1)).is_err());
        let cfg: TokenizeConfig =
            serde_json::from_str(r#"{"max_len": 8, "truncation": "truncate_prompt_left"}"#).unwrap();
        assert_eq!(
            (cfg.max_len, cfg.truncation, cfg.append_eos),
            (Some(8), TruncationPolicy::TruncatePromptLeft, true)
        );
        assert!(serde_json::from_str::<TokenizeConfig>(r#"{"maxlen": 8}"#).is_err());
    }
}
