//! Sample-level metrics: unbiased pass@k and majority voting.

use bridge_core::{BridgeError, Result};
use std::collections::HashMap;

/// The unbiased pass@k estimator of Chen et al. (2021): the probability that at least one of `k`
/// samples drawn without replacement from `n` samples, `c` of them correct, is correct,
/// `1 − C(n−c, k) / C(n, k)`.
///
/// It is computed as `1 − ∏_{i=n−c+1}^{n} (1 − k/i)`, which never forms a binomial coefficient
/// and so neither overflows nor loses precision for large `n`. Errors unless `1 ≤ k ≤ n` and
/// `c ≤ n`.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> Result<f64> {
    if k == 0 || k > n {
        return Err(BridgeError::InvalidInput(format!("pass@k needs 1 ≤ k ≤ n, got k = {k}, n = {n}")));
    }
    if c > n {
        return Err(BridgeError::InvalidInput(format!("pass@k: {c} correct out of only {n} samples")));
    }
    if n - c < k {
        return Ok(1.0);
    }
    let k = k as f64;
    let miss: f64 = (n - c + 1..=n).map(|i| 1.0 - k / i as f64).product();
    Ok(1.0 - miss)
}

/// The winner of a majority vote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MajorityVote {
    /// Index of the first answer equal to the winning one.
    pub index: usize,
    /// How many answers equal the winning one.
    pub votes: usize,
}

/// Majority vote over answers (`None` = no answer, which never wins). Answers are compared as
/// strings, so pass *normalised* answers; a tie goes to the answer that occurred first. `None`
/// when no sample has an answer.
pub fn majority_vote<S: AsRef<str>>(answers: &[Option<S>]) -> Option<MajorityVote> {
    let mut counts: HashMap<&str, (usize, usize)> = HashMap::new();
    for (i, a) in answers.iter().enumerate() {
        if let Some(a) = a {
            counts.entry(a.as_ref()).or_insert((i, 0)).1 += 1;
        }
    }
    counts
        .into_values()
        .map(|(index, votes)| MajorityVote { index, votes })
        .max_by(|a, b| a.votes.cmp(&b.votes).then(b.index.cmp(&a.index)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_at_k_edge_cases() {
        assert!(pass_at_k(3, 1, 0).is_err());
        assert!(pass_at_k(3, 1, 4).is_err());
        assert!(pass_at_k(3, 4, 1).is_err());
        assert_eq!(pass_at_k(1, 1, 1).unwrap(), 1.0);
        assert_eq!(pass_at_k(1, 0, 1).unwrap(), 0.0);
        // Large n stays finite and accurate: with c = n/2, pass@1 = 1/2.
        assert!((pass_at_k(100_000, 50_000, 1).unwrap() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn majority_ignores_missing_answers() {
        let none: [Option<&str>; 2] = [None, None];
        assert_eq!(majority_vote(&none), None);
        assert_eq!(majority_vote(&[None, Some("3")]), Some(MajorityVote { index: 1, votes: 1 }));
    }
}
