//! Token selection on the device: the host sampler's rule (`bridge_core::sampling::sample_token`)
//! in tensor operations, so that only `[R, 2]` numbers (token, log-probability) leave the device
//! per step.
//!
//! The randomness stays on the host: each row's uniform draw `u ∈ [0, 1)` comes from that
//! completion's own seeded generator (one `next_f64` per sampled token, exactly when the host
//! sampler draws), is uploaded as an `[R, 1]` tensor, and picks the token by inverse CDF:
//! the first candidate whose cumulative weight exceeds `u · total`, candidates in index order
//! (whole vocabulary) or, with top-k/top-p, in descending-probability order after truncation —
//! the host sampler's order. The device therefore draws the *same* tokens as the host path for
//! the same seeds, up to where `u · total` falls within f32 rounding (`1e-7` relative) of a
//! boundary of the cumulative sum, which the host accumulates in f64. It also keeps the
//! documented property that a completion depends only on its prompt, the weights and its seed,
//! and a captured decode step ([`crate::generate::graph`]) needs no device generator (whose
//! state a replayed graph would freeze).
//!
//! Backends: argmax, max/sum reductions, `cumsum`, `topk_with_indices` and `gather` run on the
//! device on cubecl (CUDA). Top-p without top-k sorts the whole vocabulary, and burn 0.22.1 sorts
//! on cubecl by reading the tensor back to the host: correct, but a device synchronisation inside
//! the step, so such steps are never captured (see `capturable`).

use bridge_core::{BridgeError, Result};
use burn::tensor::{DType, Int, Tensor};

/// What decides the token of a row (the sampling parameters of one `generate` call).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct SelectionRule {
    /// 0 (or a one-token vocabulary) is greedy: argmax, no draw.
    pub(crate) temperature: f64,
    /// Keep the `k` most likely tokens (ignored when `k ≥ sample_vocab`).
    pub(crate) top_k: Option<usize>,
    /// Keep the smallest prefix (by probability) whose mass reaches `p` (ignored when `p ≥ 1`).
    pub(crate) top_p: Option<f64>,
    /// Tokens are chosen among the first `sample_vocab` ids (the codec's vocabulary); the
    /// log-probability is over the whole row.
    pub(crate) sample_vocab: usize,
}

impl SelectionRule {
    /// Whether a token costs one uniform draw (the host sampler's condition).
    pub(crate) fn draws(&self) -> bool {
        self.temperature > 0.0 && self.sample_vocab > 1
    }

    /// The truncation width: `Some(k)` for top-k below the vocabulary, `Some(sample_vocab)`
    /// for top-p alone (a full sort), `None` without truncation.
    fn truncation(&self) -> Option<usize> {
        let k = self.top_k.filter(|&k| k < self.sample_vocab).map(|k| k.max(1));
        let p = self.top_p.is_some_and(|p| p < 1.0);
        match (k, p) {
            (Some(k), _) => Some(k),
            (None, true) => Some(self.sample_vocab),
            (None, false) => None,
        }
    }

    /// Whether every operation of the selection runs on the device without a host read (so a
    /// step that ends in it can be captured): all but top-p without top-k (a full sort, which
    /// burn 0.22.1 does on the host for cubecl).
    pub(crate) fn capturable(&self) -> bool {
        !self.draws() || self.truncation() != Some(self.sample_vocab)
    }
}

/// One token per row of `logits [R, V]` and its log-probability under `log_softmax(logits)` (the
/// policy at temperature 1, before truncation), as `[R, 2]` f32: `(token id, log-probability)`.
/// `uniforms [R, 1]` holds each row's draw in `[0, 1)` (read only when `rule.draws()`).
///
/// # Shapes
/// `logits [R, V]` (any float dtype; computed in f32), `uniforms [R, 1]` → `[R, 2]`.
pub(crate) fn select(logits: Tensor<2>, uniforms: &Tensor<2>, rule: &SelectionRule) -> Tensor<2> {
    let logits = if logits.dtype() == DType::F32 { logits } else { logits.cast(DType::F32) };
    let [r, v] = logits.dims();
    let sv = rule.sample_vocab.clamp(1, v);
    let max = logits.clone().max_dim(1);
    let log_z = max.clone() + (logits.clone() - max).exp().sum_dim(1).log();
    let scores = if sv < v { logits.clone().slice([0..r, 0..sv]) } else { logits.clone() };
    let token: Tensor<2, Int> = if !rule.draws() {
        scores.argmax(1)
    } else {
        match rule.truncation() {
            None => inverse_cdf(scores, uniforms, rule.temperature, None),
            Some(k) => {
                let (sorted, ids) =
                    if k < sv { scores.topk_with_indices(k, 1) } else { scores.sort_descending_with_indices(1) };
                let at = inverse_cdf(sorted, uniforms, rule.temperature, rule.top_p.filter(|&p| p < 1.0));
                ids.gather(1, at)
            }
        }
    };
    let logp = logits.gather(1, token.clone()) - log_z;
    Tensor::cat(vec![token.float().cast(DType::F32), logp], 1)
}

/// The position `[R, 1]` picked in each row of `scores [R, K]` by inverse CDF at `u · total` over
/// the weights `exp((s − max) / T)` in the rows' order, after keeping (when `top_p` is given)
/// the shortest prefix whose normalised cumulative weight reaches `p` — `sample_token`'s rule.
fn inverse_cdf(scores: Tensor<2>, uniforms: &Tensor<2>, temperature: f64, top_p: Option<f64>) -> Tensor<2, Int> {
    let [_, k] = scores.dims();
    let max = scores.clone().max_dim(1);
    let mut weights = (scores - max).div_scalar(temperature).exp();
    let mut cdf = weights.clone().cumsum(1);
    // The last position a row may pick: k − 1, or the end of its top-p prefix.
    let mut last: Option<Tensor<2, Int>> = None;
    if let Some(p) = top_p {
        let total = cdf.clone().slice_dim(1, k - 1..k);
        // keep = 1 + #{j : cdf_j / total < p}
        let below = cdf.clone().div(total).lower_elem(p).int().sum_dim(1);
        let keep_last = below.clamp_max((k - 1) as i64); // (keep − 1), at most k − 1
        // Positions 0..k as a cumulative sum of ones: no host data enters the step (a captured
        // graph would replay an upload from a host buffer it has to keep alive).
        let positions = weights.ones_like().cumsum(1).sub_scalar(1.0);
        weights = weights.mask_fill(positions.greater(keep_last.clone().float()), 0.0);
        cdf = weights.cumsum(1);
        last = Some(keep_last);
    }
    let total = cdf.clone().slice_dim(1, k - 1..k);
    let target = uniforms.clone() * total;
    // The first j with cdf_j > target is the number of j with cdf_j ≤ target.
    let at = cdf.lower_equal(target).int().sum_dim(1).clamp_max((k - 1) as i64);
    match last {
        Some(last) => at.min_pair(last),
        None => at,
    }
}

/// `[B, 2]` (token, log-probability) → host pairs, checked.
pub(crate) fn read_picks(picked: Tensor<2>, rows: usize) -> Result<Vec<(usize, f32)>> {
    let values: Vec<f32> = picked
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| BridgeError::Model(format!("reading the selected tokens: {e:?}")))?;
    if values.len() != 2 * rows {
        return Err(BridgeError::Model(format!("the decode step returned {} values for {rows} rows", values.len())));
    }
    Ok(values.chunks(2).map(|p| (p[0] as usize, p[1])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridge_core::BridgeRng;
    use bridge_core::sampling::{log_softmax, sample_token};
    use burn::tensor::{Device, TensorData};

    fn run(logits: &[f32], rows: usize, u: &[f64], rule: &SelectionRule) -> Vec<(usize, f32)> {
        let device = Device::flex();
        let v = logits.len() / rows;
        let l = Tensor::<2>::from_data(TensorData::new(logits.to_vec(), [rows, v]), &device);
        let u = Tensor::<2>::from_data(TensorData::new(u.iter().map(|&x| x as f32).collect(), [rows, 1]), &device);
        let out: Vec<f32> = select(l, &u, rule).into_data().iter::<f32>().collect();
        out.chunks(2).map(|p| (p[0] as usize, p[1])).collect()
    }

    /// Random logits with a spread-out distribution.
    fn logits(rows: usize, v: usize, seed: u64) -> Vec<f32> {
        let mut rng = BridgeRng::seed_from_u64(seed);
        (0..rows * v).map(|_| (rng.next_f64() * 6.0 - 3.0) as f32).collect()
    }

    /// Every rule against the host sampler, draw for draw: the same tokens from the same seeded
    /// uniforms (the host draws its uniform inside `sample_token`; a copy of its generator gives
    /// the device the same number), and the temperature-1 log-probabilities of the host path.
    #[test]
    fn device_selection_draws_what_the_host_sampler_draws() {
        let (rows, v) = (64, 50);
        let l = logits(rows, v, 1);
        let rules = [
            (0.0, None, None, v),
            (0.0, None, None, 40),
            (1.0, None, None, v),
            (0.7, None, None, 37),
            (1.3, Some(5), None, v),
            (1.0, Some(1), None, v),
            (1.0, None, Some(0.8), v),
            (0.9, Some(20), Some(0.6), 45),
            (1.0, Some(60), Some(1.0), v), // no truncation at all
        ];
        let mut differing = 0;
        for (i, &(temperature, top_k, top_p, sample_vocab)) in rules.iter().enumerate() {
            let rule = SelectionRule { temperature, top_k, top_p, sample_vocab };
            let mut rngs: Vec<BridgeRng> =
                (0..rows).map(|r| BridgeRng::seed_from_u64(100 * i as u64 + r as u64)).collect();
            let u: Vec<f64> = rngs.iter().map(|g| if rule.draws() { g.clone().next_f64() } else { 0.0 }).collect();
            let picked = run(&l, rows, &u, &rule);
            for (r, (tok, lp)) in picked.into_iter().enumerate() {
                let row = &l[r * v..(r + 1) * v];
                let want = sample_token(&row[..sample_vocab], temperature, top_k, top_p, &mut rngs[r]);
                differing += usize::from(tok != want);
                assert!(tok < sample_vocab, "rule {i}: token {tok} outside the sampled vocabulary");
                assert!((lp - log_softmax(row)[tok]).abs() < 1e-5, "rule {i} row {r}");
            }
        }
        assert_eq!(differing, 0, "tokens differing from the host sampler");
    }

    /// The inverse CDF draws from the tempered, truncated distribution: with the uniforms on a
    /// fine grid, the picked frequencies are the host sampler's probabilities (a wrong temperature
    /// or a missing truncation would move them).
    #[test]
    fn grid_uniforms_give_the_truncated_probabilities() {
        let row = [0.0f32, 2f32.ln(), 3f32.ln(), 4f32.ln(), -20.0];
        let n = 1000;
        let rule = SelectionRule { temperature: 1.0, top_k: Some(3), top_p: Some(0.7), sample_vocab: 5 };
        // top-3 = {3, 2, 1} with weights 4, 3, 2; top-p 0.7 keeps {3, 2} (4/9 < 0.7 ≤ 7/9)
        let l: Vec<f32> = (0..n).flat_map(|_| row).collect();
        let u: Vec<f64> = (0..n).map(|i| (i as f64 + 0.5) / n as f64).collect();
        let mut counts = [0usize; 5];
        for (tok, _) in run(&l, n, &u, &rule) {
            counts[tok] += 1;
        }
        assert_eq!(counts, [0, 0, 429, 571, 0]); // 3/7 and 4/7 of the grid
        let plain = SelectionRule { top_k: None, top_p: None, ..rule };
        let mut counts = [0usize; 5];
        for (tok, _) in run(&l, n, &u, &plain) {
            counts[tok] += 1;
        }
        assert_eq!(counts, [100, 200, 300, 400, 0]); // 1 : 2 : 3 : 4 (id 4 has weight e^-20)
    }

    #[test]
    fn capturable_excludes_the_full_sort() {
        let rule = |temperature, top_k, top_p| SelectionRule { temperature, top_k, top_p, sample_vocab: 100 };
        assert!(rule(0.0, None, Some(0.9)).capturable(), "greedy ignores top-p");
        assert!(rule(1.0, Some(50), Some(0.9)).capturable());
        assert!(rule(1.0, None, Some(1.0)).capturable(), "p = 1 truncates nothing");
        assert!(!rule(1.0, None, Some(0.9)).capturable());
        assert!(!rule(1.0, Some(100), Some(0.9)).capturable(), "k ≥ vocabulary is no top-k");
    }
}
