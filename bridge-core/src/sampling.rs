//! Host-side token sampling shared by every generator: temperature, top-k, top-p.
//!
//! The log-probability a generator records for a sampled token is always the one under the
//! policy itself (temperature 1, before top-k/top-p truncation): the quantity GRPO's importance
//! ratio needs. [`log_softmax`] gives it; [`sample_token`] only decides *which* token.

use crate::error::Result;
use crate::policy::TextCodec;
use crate::seed::BridgeRng;

/// `log softmax(logits)`, accumulated in f64.
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return vec![f32::NAN; logits.len()];
    }
    let sum: f64 = logits.iter().map(|&x| f64::from(x - max).exp()).sum();
    let log_z = f64::from(max) + sum.ln();
    logits.iter().map(|&x| (f64::from(x) - log_z) as f32).collect()
}

/// Index of the largest logit (the first one on ties).
pub fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    best
}

/// Draws a token from `logits`.
///
/// `temperature == 0` is greedy (argmax). Otherwise the logits are divided by `temperature`,
/// restricted to the `top_k` most likely tokens and then to the smallest set whose probability
/// reaches `top_p`, renormalised, and sampled with one uniform draw from `rng`.
pub fn sample_token(
    logits: &[f32],
    temperature: f64,
    top_k: Option<usize>,
    top_p: Option<f64>,
    rng: &mut BridgeRng,
) -> usize {
    if temperature <= 0.0 || logits.len() <= 1 {
        return argmax(logits);
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut cand: Vec<(usize, f64)> =
        logits.iter().enumerate().map(|(i, &x)| (i, (f64::from(x - max) / temperature).exp())).collect();
    let truncate = top_k.is_some_and(|k| k < cand.len()) || top_p.is_some_and(|p| p < 1.0);
    if truncate {
        // Highest probability first; ties by index so the order is deterministic.
        cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if let Some(k) = top_k {
            cand.truncate(k.max(1));
        }
        if let Some(p) = top_p {
            let total: f64 = cand.iter().map(|c| c.1).sum();
            let mut acc = 0.0;
            let mut keep = cand.len();
            for (j, c) in cand.iter().enumerate() {
                acc += c.1 / total;
                if acc >= p {
                    keep = j + 1;
                    break;
                }
            }
            cand.truncate(keep.max(1));
        }
    }
    let total: f64 = cand.iter().map(|c| c.1).sum();
    let mut u = rng.next_f64() * total;
    for &(i, w) in &cand {
        if u < w {
            return i;
        }
        u -= w;
    }
    cand.last().map_or(0, |c| c.0)
}

/// Whether the text of a completion now contains one of `stop_strings`, for a generator that
/// checks after every appended token (so the text before the last token held none of them).
///
/// Decoding the whole completion at every step costs O(n²) tokens per completion (4.5 M token
/// decodes for one 3000-token rollout). Only a suffix is decoded here: a new occurrence must
/// overlap the last token's text, so it lies in the last `longest stop string + last token's
/// text` characters; the suffix of tokens is doubled until its text is that long plus a margin
/// of 4 characters for what a window start can lose (a leading space stripped by a
/// SentencePiece decoder, an incomplete UTF-8 sequence). For the byte-level and metaspace
/// decoders of our models this gives the same answer as decoding everything, which
/// `bridge-models` checks on a real tokenizer.
pub fn hits_stop_string(codec: &dyn TextCodec, tokens: &[u32], stop_strings: &[String]) -> Result<bool> {
    let n = tokens.len();
    if stop_strings.is_empty() || n == 0 {
        return Ok(false);
    }
    let longest = stop_strings.iter().map(|s| s.chars().count()).max().unwrap_or(0);
    let need = longest + codec.decode(&tokens[n - 1..])?.chars().count() + 4;
    let mut k = n.min(8);
    loop {
        let text = codec.decode(&tokens[n - k..])?;
        if k == n || text.chars().count() >= need {
            return Ok(stop_strings.iter().any(|s| text.contains(s.as_str())));
        }
        k = n.min(2 * k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    #[test]
    fn log_softmax_matches_hand_values() {
        let lp = log_softmax(&[1.0, 2.0, 3.0]);
        let z = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
        assert_relative_eq!(lp[0] as f64, 1.0 - z, epsilon = 1e-6);
        assert_relative_eq!(lp[2] as f64, 3.0 - z, epsilon = 1e-6);
        let big = log_softmax(&[1000.0, 0.0]);
        assert!(big[0].abs() < 1e-6 && big[1] < -999.0);
    }

    #[test]
    fn greedy_and_degenerate_truncations_pick_the_argmax() {
        let logits = [0.1, 2.0, 1.9, -3.0];
        let mut rng = BridgeRng::seed_from_u64(0);
        assert_eq!(sample_token(&logits, 0.0, None, None, &mut rng), 1);
        for _ in 0..50 {
            assert_eq!(sample_token(&logits, 1.0, Some(1), None, &mut rng), 1);
            assert_eq!(sample_token(&logits, 1.0, None, Some(1e-9), &mut rng), 1);
        }
    }

    #[test]
    fn sampling_frequencies_follow_the_truncated_distribution() {
        let logits = [0.0f32, (2.0f32).ln(), (3.0f32).ln(), -20.0];
        let mut rng = BridgeRng::seed_from_u64(42);
        let n = 60_000;
        let mut counts = [0usize; 4];
        for _ in 0..n {
            counts[sample_token(&logits, 1.0, None, None, &mut rng)] += 1;
        }
        // p ≈ (1, 2, 3, 0)/6
        for (c, p) in counts.iter().zip([1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0, 0.0]) {
            assert!((*c as f64 / n as f64 - p).abs() < 0.01, "{counts:?}");
        }
        // top_k = 2 keeps {2, 1}: p = (0, 2/5, 3/5, 0)
        let mut counts = [0usize; 4];
        for _ in 0..n {
            counts[sample_token(&logits, 1.0, Some(2), None, &mut rng)] += 1;
        }
        assert_eq!(counts[0] + counts[3], 0);
        assert!((counts[2] as f64 / n as f64 - 0.6).abs() < 0.01, "{counts:?}");
        // top_p = 0.6 keeps {2 (0.5), 1 (0.33)}: the smallest prefix reaching 0.6
        let mut counts = [0usize; 4];
        for _ in 0..n {
            counts[sample_token(&logits, 1.0, None, Some(0.6), &mut rng)] += 1;
        }
        assert_eq!(counts[0] + counts[3], 0);
        // temperature 0.5 squares the odds: p ∝ (1, 4, 9)
        let mut counts = [0usize; 4];
        for _ in 0..n {
            counts[sample_token(&logits, 0.5, None, None, &mut rng)] += 1;
        }
        assert!((counts[2] as f64 / n as f64 - 9.0 / 14.0).abs() < 0.01, "{counts:?}");
    }

    #[test]
    fn stop_strings_are_found_in_a_decoded_suffix_as_in_the_whole_text() {
        use crate::testing::CharCodec;
        let codec = CharCodec::new("abc xyz");
        let mut rng = BridgeRng::seed_from_u64(11);
        let stops = vec!["cab".to_string(), "z z".to_string(), "aaaaaaaaaaaaaaaaaaaaaa".to_string()];
        for _ in 0..200 {
            let tokens: Vec<u32> = (0..60).map(|_| codec.encode("abc xyz").unwrap()[rng.below(7) as usize]).collect();
            for n in 1..=tokens.len() {
                let whole = codec.decode(&tokens[..n]).unwrap();
                let before = codec.decode(&tokens[..n - 1]).unwrap();
                if stops.iter().any(|s| before.contains(s.as_str())) {
                    break; // a generator would have stopped already
                }
                let want = stops.iter().any(|s| whole.contains(s.as_str()));
                assert_eq!(hits_stop_string(&codec, &tokens[..n], &stops).unwrap(), want, "{whole:?}");
            }
        }
        assert!(!hits_stop_string(&codec, &[], &stops).unwrap());
        assert!(!hits_stop_string(&codec, &[1, 2], &[]).unwrap());
    }
}
