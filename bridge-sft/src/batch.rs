//! Token sequences → [`SequenceBatch`]es: right-padded, or packed.
//!
//! * **Padded** ([`pad_batch`]): one row per example, right-padded with the codec's pad id; the
//!   padding is never a target.
//! * **Packed** ([`pack_sequences`]): whole examples are concatenated into rows of at most
//!   `max_len` tokens by first-fit decreasing, and the rows are then padded. Every example keeps
//!   its loss mask, except that the first token of each packed example is never a target (it has
//!   no prefix of its own), so every originally scored target is scored exactly once. As in TRL's
//!   classic packing (`packing=True` without position ids), **attention crosses example
//!   boundaries** inside a row: a later example also attends to the earlier ones, which the
//!   model learns to ignore. **Positions restart per row**, not per example: the model sees a
//!   row as one sequence with positions `0..len`. Packing removes almost all padding, so it pays
//!   off when lengths vary a lot.
//!
//! [`SftBatcher`] combines an [`SftTokenizer`] with either mode; [`TokenizedSource`] tokenises a
//! whole source once, so that a [`bridge_core::DataCursor`] draws only examples that were kept.

use crate::tokenize::{SftTokenizer, TokenizeOutcome, TokenizeStats};
use bridge_core::{BridgeError, ExampleSource, Result, SequenceBatch, SftExample, SftSource, TextCodec, TokenSequence};
use serde::{Deserialize, Serialize};

/// Batching settings (serde; unknown keys are rejected).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// Examples per optimiser step.
    pub batch_size: usize,
    /// Pack the examples of a step into rows of at most `tokenize.max_len` tokens (which must
    /// then be set) instead of one padded row per example.
    pub packing: bool,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self { batch_size: 8, packing: false }
    }
}

impl BatchConfig {
    /// Checks the values, naming the bad field (prefixed with `prefix`); `max_len` is the
    /// tokenizer's, needed for packing.
    pub fn validate(&self, prefix: &str, max_len: Option<usize>) -> Result<()> {
        if self.batch_size == 0 {
            return Err(BridgeError::config(format!("{prefix}.batch_size"), "must be ≥ 1"));
        }
        if self.packing && max_len.is_none() {
            return Err(BridgeError::config(
                format!("{prefix}.packing"),
                "packing needs `tokenize.max_len` (the length of a packed row)",
            ));
        }
        Ok(())
    }
}

/// One padded batch of `rows`, padded with `codec`'s pad id.
pub fn pad_batch(rows: Vec<TokenSequence>, codec: &dyn TextCodec) -> Result<SequenceBatch> {
    SequenceBatch::new(rows, codec.pad_token_id())
}

/// Packs whole sequences into rows of at most `max_len` tokens (first-fit decreasing: longest
/// first, each into the first row with room). Rows come in the order they were opened; inside a
/// row, examples keep the order they were placed in. The first token of each packed sequence is
/// unscored; every other mask entry is kept, so the packed rows score exactly the targets
/// (`loss_mask[1..]`) of the inputs. A sequence longer than `max_len` is an error.
pub fn pack_sequences(sequences: &[TokenSequence], max_len: usize) -> Result<Vec<TokenSequence>> {
    if let Some((i, s)) = sequences.iter().enumerate().find(|(_, s)| s.tokens.len() > max_len) {
        return Err(BridgeError::InvalidInput(format!(
            "sequence {i} has {} tokens, more than the packing length {max_len}",
            s.tokens.len()
        )));
    }
    let mut order: Vec<usize> = (0..sequences.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(sequences[i].tokens.len()));
    let mut rows: Vec<TokenSequence> = Vec::new();
    for i in order {
        let s = &sequences[i];
        if s.tokens.is_empty() {
            continue;
        }
        let row = match rows.iter_mut().position(|r| r.tokens.len() + s.tokens.len() <= max_len) {
            Some(r) => &mut rows[r],
            None => {
                rows.push(TokenSequence {
                    tokens: Vec::with_capacity(max_len),
                    loss_mask: Vec::with_capacity(max_len),
                });
                let last = rows.len() - 1;
                &mut rows[last]
            }
        };
        row.tokens.extend_from_slice(&s.tokens);
        row.loss_mask.push(false);
        row.loss_mask.extend_from_slice(&s.loss_mask[1.min(s.loss_mask.len())..]);
    }
    Ok(rows)
}

/// A batch ready for [`crate::sft_loss`], with what tokenisation did to its examples.
#[derive(Clone, Debug, PartialEq)]
pub struct SftBatch {
    /// The padded (possibly packed) batch.
    pub batch: SequenceBatch,
    /// Examples that went into it.
    pub num_examples: usize,
    /// Tokenisation counts of the examples it was made from.
    pub stats: TokenizeStats,
}

/// Tokenises examples and batches them (padded or packed): what a trainer drawing
/// [`SftExample`]s needs to get a [`SequenceBatch`].
#[derive(Clone, Copy, Debug)]
pub struct SftBatcher<'a> {
    tokenizer: SftTokenizer<'a>,
    pad_id: u32,
    pack_len: Option<usize>,
}

impl<'a> SftBatcher<'a> {
    /// A batcher; `packing` needs the tokenizer's `max_len`.
    pub fn new(tokenizer: SftTokenizer<'a>, codec: &dyn TextCodec, packing: bool) -> Result<Self> {
        let pack_len = if packing {
            Some(tokenizer.config().max_len.ok_or_else(|| {
                BridgeError::config("batch.packing", "packing needs `tokenize.max_len` (the length of a packed row)")
            })?)
        } else {
            None
        };
        Ok(Self { tokenizer, pad_id: codec.pad_token_id(), pack_len })
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &SftTokenizer<'a> {
        &self.tokenizer
    }

    /// Batches already tokenised sequences (padded, or packed then padded).
    pub fn batch_sequences(&self, sequences: Vec<TokenSequence>) -> Result<SequenceBatch> {
        let rows = match self.pack_len {
            Some(len) => pack_sequences(&sequences, len)?,
            None => sequences,
        };
        SequenceBatch::new(rows, self.pad_id)
    }

    /// Tokenises and batches `examples`; `None` when every example was dropped.
    pub fn batch(&self, examples: &[SftExample]) -> Result<Option<SftBatch>> {
        let (sequences, stats) = self.tokenizer.tokenize_all(examples)?;
        if sequences.is_empty() {
            return Ok(None);
        }
        let num_examples = sequences.len();
        Ok(Some(SftBatch { batch: self.batch_sequences(sequences)?, num_examples, stats }))
    }
}

/// A source tokenised once: serves the kept [`TokenSequence`]s, so that a
/// [`bridge_core::DataCursor`] over it draws full batches.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenizedSource {
    sequences: Vec<TokenSequence>,
    ids: Vec<String>,
    stats: TokenizeStats,
}

impl TokenizedSource {
    /// Tokenises every example of `source`; an error if none is kept.
    pub fn new<S: SftSource>(source: &S, tokenizer: &SftTokenizer<'_>) -> Result<Self> {
        Self::from_outcomes(source.iter().map(|ex| {
            let ex = ex?;
            let outcome = tokenizer.tokenize(&ex)?;
            Ok((ex.id, outcome))
        }))
    }

    /// The kept sequences of already tokenised examples (`(id, outcome)` in order; the first
    /// error is returned); an error if none is kept.
    pub fn from_outcomes(outcomes: impl IntoIterator<Item = Result<(String, TokenizeOutcome)>>) -> Result<Self> {
        let mut stats = TokenizeStats::default();
        let (mut sequences, mut ids) = (Vec::new(), Vec::new());
        for item in outcomes {
            let (id, outcome) = item?;
            stats.record(&outcome);
            if let TokenizeOutcome::Kept { sequence, .. } = outcome {
                sequences.push(sequence);
                ids.push(id);
            }
        }
        if sequences.is_empty() {
            return Err(BridgeError::InvalidInput(format!(
                "no SFT example is left after tokenisation ({} too long, {} without a target)",
                stats.dropped_too_long, stats.dropped_no_target
            )));
        }
        Ok(Self { sequences, ids, stats })
    }

    /// Tokenisation counts over the whole source.
    pub fn stats(&self) -> &TokenizeStats {
        &self.stats
    }

    /// The ids of the kept examples, index-aligned with the sequences.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// The kept sequences.
    pub fn sequences(&self) -> &[TokenSequence] {
        &self.sequences
    }

    /// Total number of scored targets.
    pub fn num_targets(&self) -> usize {
        self.sequences.iter().map(|s| s.loss_mask.iter().skip(1).filter(|m| **m).count()).sum()
    }
}

impl ExampleSource for TokenizedSource {
    type Example = TokenSequence;

    fn len(&self) -> usize {
        self.sequences.len()
    }

    fn get(&self, index: usize) -> Result<TokenSequence> {
        self.sequences.get(index).cloned().ok_or_else(|| {
            BridgeError::InvalidInput(format!(
                "tokenised example index {index} out of range ({} examples)",
                self.sequences.len()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenize::TokenizeConfig;
    use bridge_core::InMemorySource;
    use bridge_core::testing::CharCodec;

    fn seq(prompt: &[u32], completion: &[u32]) -> TokenSequence {
        TokenSequence::prompt_completion(prompt, completion)
    }

    /// (token, previous token) of every scored target, the identity of a target in a row.
    fn targets(rows: &[TokenSequence]) -> Vec<(u32, u32)> {
        let mut t: Vec<(u32, u32)> = rows
            .iter()
            .flat_map(|r| (1..r.tokens.len()).filter(|&j| r.loss_mask[j]).map(|j| (r.tokens[j], r.tokens[j - 1])))
            .collect();
        t.sort();
        t
    }

    #[test]
    fn packing_keeps_every_target_exactly_once() {
        // Distinct token values so that each target is identifiable by (token, position in its example).
        let seqs = vec![
            seq(&[1, 2], &[3, 4, 5]),
            seq(&[6], &[7]),
            seq(&[8, 9, 10], &[11, 12, 13, 14]),
            seq(&[], &[15, 16, 17]), // empty prompt: token 15 is not a target
            seq(&[18, 19], &[20]),
        ];
        let max_len = 8;
        let rows = pack_sequences(&seqs, max_len).unwrap();
        assert!(rows.iter().all(|r| r.tokens.len() <= max_len && r.tokens.len() == r.loss_mask.len()));
        // Every token appears exactly once.
        let mut all: Vec<u32> = rows.iter().flat_map(|r| r.tokens.clone()).collect();
        all.sort();
        assert_eq!(all, (1..=20).collect::<Vec<_>>());
        // Scored tokens are exactly the originals' targets, with the same predecessor.
        let mut expected = targets(&seqs);
        expected.sort();
        assert_eq!(targets(&rows), expected);
        let scored: usize = rows.iter().map(|r| r.loss_mask.iter().filter(|m| **m).count()).sum();
        assert_eq!(scored, 3 + 1 + 4 + 2 + 1);
        // First-fit decreasing: 7, 5, 3, 3, 2 tokens into rows of 8 → [7], [5,3], [3,2].
        let lens: Vec<usize> = rows.iter().map(|r| r.tokens.len()).collect();
        assert_eq!(lens, vec![7, 8, 5]);
        // The batch built from it scores the same number of targets.
        let b = SequenceBatch::new(rows, 0).unwrap();
        assert_eq!(b.num_targets(), 11);
        assert!(pack_sequences(&seqs, 6).is_err(), "a sequence longer than a row is an error");
    }

    #[test]
    fn batcher_pads_or_packs_and_tokenized_source_filters() {
        let codec = CharCodec::new("abcdef");
        let cfg = TokenizeConfig { max_len: Some(6), ..Default::default() };
        let tok = SftTokenizer::new(&codec, &cfg).unwrap();
        let examples: Vec<SftExample> = [("ab", "c"), ("a", "bcd"), ("abcdef", "a")]
            .iter()
            .enumerate()
            .map(|(i, (p, c))| SftExample { id: format!("x{i}"), prompt: (*p).into(), completion: (*c).into() })
            .collect();
        let padded = SftBatcher::new(tok, &codec, false).unwrap().batch(&examples).unwrap().unwrap();
        assert_eq!((padded.num_examples, padded.stats.dropped_no_target), (2, 1));
        assert_eq!((padded.batch.batch_size(), padded.batch.seq_len(), padded.batch.num_targets()), (2, 5, 6));
        let packed = SftBatcher::new(tok, &codec, true).unwrap().batch(&examples).unwrap().unwrap();
        assert_eq!(packed.batch.batch_size(), 2, "4 + 5 tokens do not fit one row of 6");
        assert_eq!(packed.batch.num_targets(), 6);
        let all_dropped = [examples[2].clone()];
        assert!(SftBatcher::new(tok, &codec, false).unwrap().batch(&all_dropped).unwrap().is_none());
        let no_len = TokenizeConfig::default();
        assert!(SftBatcher::new(SftTokenizer::new(&codec, &no_len).unwrap(), &codec, true).is_err());

        let source = InMemorySource::new(examples);
        let ts = TokenizedSource::new(&source, &tok).unwrap();
        assert_eq!((ts.len(), ts.ids(), ts.stats().kept, ts.num_targets()), (2, &["x0".into(), "x1".into()][..], 2, 6));
        assert!(ts.get(2).is_err());
        let none = InMemorySource::new(all_dropped.to_vec());
        assert!(TokenizedSource::new(&none, &tok).is_err());
    }
}
