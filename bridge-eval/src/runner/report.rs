//! What an evaluation produces: [`EvalReport`], written as JSON and as markdown tables.

use super::config::EvalConfig;
use crate::verify::Verdict;
use bridge_core::{BridgeError, DataFormat, FinishReason, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

/// The verifier's judgement of one completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The predicted answer is equivalent to the gold one.
    Correct,
    /// Both answers parsed and differ.
    Incorrect,
    /// The completion has no usable answer.
    UnparseablePrediction,
    /// The gold answer could not be parsed (a dataset problem).
    UnparseableGold,
    /// Neither side could be used.
    UnparseableBoth,
    /// The comparison ran out of its step budget.
    Undecided,
    /// The completion's answer is too long to judge.
    TooLongPrediction,
    /// The gold answer is too long to judge (a dataset problem).
    TooLongGold,
    /// Both answers are unusable, the gold one too long.
    TooLongBoth,
}

impl Outcome {
    /// The outcome of a verifier [`Verdict`].
    pub fn of(verdict: &Verdict) -> Self {
        use crate::verify::Side;
        match verdict {
            Verdict::Correct { .. } => Self::Correct,
            Verdict::Incorrect { .. } => Self::Incorrect,
            Verdict::Unparseable { side: Side::Prediction, .. } => Self::UnparseablePrediction,
            Verdict::Unparseable { side: Side::Gold, .. } => Self::UnparseableGold,
            Verdict::Unparseable { side: Side::Both, .. } => Self::UnparseableBoth,
            Verdict::Undecided { .. } => Self::Undecided,
            Verdict::TooLong { side: Side::Prediction, .. } => Self::TooLongPrediction,
            Verdict::TooLong { side: Side::Gold, .. } => Self::TooLongGold,
            Verdict::TooLong { side: Side::Both, .. } => Self::TooLongBoth,
        }
    }

    /// 1 for [`Outcome::Correct`], else 0.
    pub fn score(self) -> f64 {
        if self == Self::Correct { 1.0 } else { 0.0 }
    }

    /// Whether the prediction had no usable answer (none, unparseable or too long).
    pub fn prediction_unparseable(self) -> bool {
        matches!(
            self,
            Self::UnparseablePrediction | Self::UnparseableBoth | Self::TooLongPrediction | Self::TooLongBoth
        )
    }

    /// Whether the gold answer could not be used (unparseable or too long).
    pub fn gold_unparseable(self) -> bool {
        matches!(self, Self::UnparseableGold | Self::UnparseableBoth | Self::TooLongGold | Self::TooLongBoth)
    }
}

/// One scored completion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampleResult {
    /// The verifier's judgement.
    pub outcome: Outcome,
    /// The answer extracted from the completion, if any.
    pub prediction: Option<String>,
    /// That answer after the verifier's normalisation (what majority voting compares).
    pub normalized: Option<String>,
    /// Number of generated tokens (stop token included; 0 for text scored without generation).
    pub tokens: usize,
    /// Why generation ended ([`FinishReason::Stop`] for text scored without generation).
    pub finish: FinishReason,
}

impl SampleResult {
    /// Whether the completion is correct.
    pub fn is_correct(&self) -> bool {
        self.outcome == Outcome::Correct
    }

    /// Whether generation hit `max_new_tokens`.
    pub fn truncated(&self) -> bool {
        self.finish == FinishReason::Length
    }
}

/// Pass@k for one `k`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PassAtK {
    /// The number of attempts.
    pub k: usize,
    /// The unbiased estimate, averaged over records.
    pub value: f64,
}

/// The scores of one decoding mode (greedy, or k samples) over a set of records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModeScores {
    /// Records scored.
    pub records: usize,
    /// Completions per record (1 for greedy, k for sampling).
    pub samples_per_record: usize,
    /// Completions scored.
    pub completions: usize,
    /// Correct completions.
    pub correct: usize,
    /// Mean accuracy over completions: greedy pass@1, or avg@k for sampling.
    pub accuracy: f64,
    /// Unbiased pass@k for each requested k (sampling only).
    pub pass_at: Vec<PassAtK>,
    /// Accuracy of the majority answer of each record's k samples (sampling only).
    pub maj_at_k: Option<f64>,
    /// Completions without a usable answer.
    pub unparseable: usize,
    /// Completions whose gold answer could not be parsed.
    pub gold_unparseable: usize,
    /// Completions whose comparison ran out of budget.
    pub undecided: usize,
    /// Mean number of generated tokens per completion.
    pub mean_completion_tokens: f64,
    /// Fraction of completions that hit `max_new_tokens`.
    pub truncation_rate: f64,
    /// Total generated tokens.
    pub generated_tokens: usize,
}

impl ModeScores {
    /// The pass@k value for `k`, if it was computed.
    pub fn pass_at(&self, k: usize) -> Option<f64> {
        self.pass_at.iter().find(|p| p.k == k).map(|p| p.value)
    }
}

/// Scores restricted to the records whose metadata `field` equals `value`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CategoryReport {
    /// The metadata field (e.g. `level`).
    pub field: String,
    /// Its value (e.g. `Level 5`).
    pub value: String,
    /// Records in the category.
    pub records: usize,
    /// Greedy scores.
    pub greedy: Option<ModeScores>,
    /// Sampled scores.
    pub sampled: Option<ModeScores>,
}

/// A completion the verifier did not accept, for inspection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// The record id (`file:line`).
    pub id: String,
    /// `greedy` or `sample`.
    pub mode: String,
    /// The rendered prompt (shortened to [`EvalConfig::max_text_chars`]).
    pub prompt: String,
    /// The gold answer.
    pub gold: String,
    /// The extracted prediction, if any.
    pub prediction: Option<String>,
    /// The verifier's judgement.
    pub outcome: Outcome,
    /// The completion text (shortened to [`EvalConfig::max_text_chars`]).
    pub completion: String,
    /// Why generation ended.
    pub finish: FinishReason,
}

/// Every completion of one record (kept when [`EvalConfig::keep_records`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordResult {
    /// The record id.
    pub id: String,
    /// The gold answer.
    pub gold: String,
    /// The greedy completion's result.
    pub greedy: Option<SampleResult>,
    /// The sampled completions' results, in sample order.
    pub samples: Vec<SampleResult>,
}

/// The evaluation of one dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetReport {
    /// The dataset's name.
    pub name: String,
    /// Its file, if any.
    pub path: Option<String>,
    /// Its format.
    pub format: DataFormat,
    /// Records evaluated (after `limit`).
    pub records: usize,
    /// Greedy (temperature 0) scores: pass@1.
    pub greedy: Option<ModeScores>,
    /// Sampled scores: avg@k, pass@k, maj@k.
    pub sampled: Option<ModeScores>,
    /// Per-category breakdown, by field then value.
    pub categories: Vec<CategoryReport>,
    /// The first failures (greedy ones, or the first sample's when there is no greedy pass).
    pub failures: Vec<Failure>,
    /// Wall-clock time of the whole dataset, seconds.
    pub wall_time_s: f64,
    /// Generated tokens per second of generation time.
    pub tokens_per_s: f64,
    /// Per-record results (only with [`EvalConfig::keep_records`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub record_results: Vec<RecordResult>,
}

/// The result of an evaluation run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// The settings used (verifier options excepted).
    pub config: EvalConfig,
    /// One report per dataset.
    pub datasets: Vec<DatasetReport>,
    /// Wall-clock time of the whole run, seconds.
    pub wall_time_s: f64,
}

fn pct(x: f64) -> String {
    format!("{:.1}", 100.0 * x)
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

impl EvalReport {
    /// The report as pretty JSON.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self)
            .map_err(|e| BridgeError::InvalidInput(format!("serialising the report: {e}")))
    }

    /// Reads a report back from JSON.
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| BridgeError::InvalidInput(format!("reading an eval report: {e}")))
    }

    /// Writes the report as pretty JSON to `path`.
    pub fn write_json(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        std::fs::write(path, self.to_json()? + "\n").map_err(|e| BridgeError::io(path, e))
    }

    /// Writes [`EvalReport::to_markdown`] to `path`.
    pub fn write_markdown(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        std::fs::write(path, self.to_markdown()).map_err(|e| BridgeError::io(path, e))
    }

    /// The report as markdown: a per-dataset table, a per-category table (when any category
    /// field was found) and the first failures.
    pub fn to_markdown(&self) -> String {
        let k = self.config.sampled.as_ref().map(|s| s.k);
        let pass_ks: BTreeSet<usize> = self
            .datasets
            .iter()
            .filter_map(|d| d.sampled.as_ref())
            .flat_map(|s| s.pass_at.iter().map(|p| p.k))
            .collect();
        let greedy = self.datasets.iter().any(|d| d.greedy.is_some());
        let sampled = self.datasets.iter().any(|d| d.sampled.is_some());
        let k_label = k.map_or_else(|| "k".to_owned(), |k| k.to_string());

        let mut head: Vec<String> = vec!["dataset".into(), "records".into()];
        if greedy {
            head.push("pass@1 (greedy)".into());
        }
        if sampled {
            head.push(format!("avg@{k_label}"));
            head.extend(pass_ks.iter().map(|j| format!("pass@{j}")));
            head.push(format!("maj@{k_label}"));
        }
        head.extend(["unparseable", "mean tokens", "truncated", "tokens/s", "wall s"].map(String::from));

        let mut out = String::from("# Evaluation report\n\n");
        push_row(&mut out, &head);
        push_row(&mut out, &head.iter().map(|_| "---".to_owned()).collect::<Vec<_>>());
        let opt = |x: Option<f64>| x.map_or_else(|| "–".to_owned(), pct);
        for d in &self.datasets {
            let mut row = vec![cell(&d.name), d.records.to_string()];
            if greedy {
                row.push(opt(d.greedy.as_ref().map(|g| g.accuracy)));
            }
            if sampled {
                let s = d.sampled.as_ref();
                row.push(opt(s.map(|s| s.accuracy)));
                row.extend(pass_ks.iter().map(|&j| opt(s.and_then(|s| s.pass_at(j)))));
                row.push(opt(s.and_then(|s| s.maj_at_k)));
            }
            // Generation statistics of the greedy pass, or of the samples without one.
            match d.greedy.as_ref().or(d.sampled.as_ref()) {
                Some(m) => {
                    row.push(format!("{}/{}", m.unparseable, m.completions));
                    row.push(format!("{:.1}", m.mean_completion_tokens));
                    row.push(format!("{}%", pct(m.truncation_rate)));
                }
                None => row.extend(["–", "–", "–"].map(String::from)),
            }
            row.push(format!("{:.1}", d.tokens_per_s));
            row.push(format!("{:.1}", d.wall_time_s));
            push_row(&mut out, &row);
        }

        if self.datasets.iter().any(|d| !d.categories.is_empty()) {
            out.push_str("\n## By category\n\n");
            let mut head: Vec<String> = vec!["dataset".into(), "field".into(), "value".into(), "records".into()];
            if greedy {
                head.push("pass@1 (greedy)".into());
            }
            if sampled {
                head.push(format!("avg@{k_label}"));
                head.push(format!("maj@{k_label}"));
            }
            push_row(&mut out, &head);
            push_row(&mut out, &head.iter().map(|_| "---".to_owned()).collect::<Vec<_>>());
            for d in &self.datasets {
                for c in &d.categories {
                    let mut row = vec![cell(&d.name), cell(&c.field), cell(&c.value), c.records.to_string()];
                    if greedy {
                        row.push(opt(c.greedy.as_ref().map(|g| g.accuracy)));
                    }
                    if sampled {
                        row.push(opt(c.sampled.as_ref().map(|s| s.accuracy)));
                        row.push(opt(c.sampled.as_ref().and_then(|s| s.maj_at_k)));
                    }
                    push_row(&mut out, &row);
                }
            }
        }

        if self.datasets.iter().any(|d| !d.failures.is_empty()) {
            out.push_str("\n## First failures\n\n");
            push_row(&mut out, &["id", "mode", "outcome", "gold", "prediction", "finish"].map(String::from));
            push_row(&mut out, &["---"; 6].map(String::from));
            for f in self.datasets.iter().flat_map(|d| &d.failures) {
                let outcome = serde_json::to_value(f.outcome).ok().and_then(|v| v.as_str().map(str::to_owned));
                let finish = match f.finish {
                    FinishReason::Stop => "stop",
                    FinishReason::Length => "length",
                };
                let row = [
                    cell(&f.id),
                    cell(&f.mode),
                    outcome.unwrap_or_default(),
                    format!("`{}`", cell(&f.gold)),
                    f.prediction.as_deref().map_or_else(|| "–".to_owned(), |p| format!("`{}`", cell(p))),
                    finish.to_owned(),
                ];
                push_row(&mut out, &row);
            }
        }
        out
    }
}

fn push_row(out: &mut String, cells: &[String]) {
    let _ = writeln!(out, "| {} |", cells.join(" | "));
}

/// `text` shortened to at most about `max_chars` characters: its start and its end (where the
/// final answer is) around an ellipsis. `0` keeps everything.
pub fn shorten(text: &str, max_chars: usize) -> String {
    let n = text.chars().count();
    if max_chars == 0 || n <= max_chars {
        return text.to_owned();
    }
    let head = max_chars / 2;
    let tail = max_chars - head;
    let start: String = text.chars().take(head).collect();
    let end: String = text.chars().skip(n - tail).collect();
    format!("{start} … {end}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorten_keeps_both_ends() {
        assert_eq!(shorten("abcdef", 0), "abcdef");
        assert_eq!(shorten("abcdef", 6), "abcdef");
        assert_eq!(shorten("abcdefgh", 4), "ab … gh");
        assert_eq!(shorten("ééééé", 2), "é … é");
    }

    #[test]
    fn cells_are_escaped() {
        assert_eq!(cell("a|b\nc"), "a\\|b c");
    }
}
