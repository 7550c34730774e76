//! Running a [`CausalLm`] over a benchmark and scoring its completions.

use super::config::{EvalConfig, SampledEval};
use super::dataset::{EvalDataset, EvalRecord};
use super::report::{
    CategoryReport, DatasetReport, EvalReport, Failure, ModeScores, Outcome, PassAtK, RecordResult, SampleResult,
    shorten,
};
use super::score::{majority_vote, pass_at_k};
use crate::verify::{VerifyOptions, verify};
use bridge_core::{BridgeError, BridgeRng, CausalLm, Completion, FinishReason, Result, SamplingParams, TextCodec};
use std::collections::BTreeMap;
use std::time::Instant;

/// Where an evaluation is, reported after every `sample` call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvalProgress {
    /// The dataset being evaluated.
    pub dataset: String,
    /// `greedy` or `sample`.
    pub mode: &'static str,
    /// Prompts done in this mode.
    pub done: usize,
    /// Prompts in this mode.
    pub total: usize,
}

/// Scores one completion text against a gold answer with the verifier. `tokens` is 0 and
/// `finish` is [`FinishReason::Stop`]: [`evaluate`] fills them for generated text.
pub fn score_completion(completion: &str, gold: &str, opts: &VerifyOptions) -> SampleResult {
    let verdict = verify(completion, gold, opts);
    let pred = verdict.pred();
    SampleResult {
        outcome: Outcome::of(&verdict),
        prediction: pred.map(|p| p.extracted.clone()),
        normalized: pred.map(|p| p.normalized.clone()).filter(|n| !n.is_empty()),
        tokens: 0,
        finish: FinishReason::Stop,
    }
}

/// Evaluates `lm` with weights `base` (+ `adapter`) on one dataset.
pub fn evaluate<L: CausalLm + ?Sized>(
    lm: &L,
    base: &L::Base,
    adapter: Option<&L::Adapter>,
    dataset: &EvalDataset,
    config: &EvalConfig,
) -> Result<EvalReport> {
    evaluate_datasets(lm, base, adapter, std::slice::from_ref(dataset), config, &mut |_| {})
}

/// Evaluates `lm` on several datasets, calling `progress` after every batch.
pub fn evaluate_datasets<L: CausalLm + ?Sized>(
    lm: &L,
    base: &L::Base,
    adapter: Option<&L::Adapter>,
    datasets: &[EvalDataset],
    config: &EvalConfig,
    progress: &mut dyn FnMut(&EvalProgress),
) -> Result<EvalReport> {
    config.validate()?;
    let start = Instant::now();
    let reports = datasets
        .iter()
        .map(|d| evaluate_dataset(lm, base, adapter, d, config, progress))
        .collect::<Result<Vec<_>>>()?;
    Ok(EvalReport { config: config.clone(), datasets: reports, wall_time_s: start.elapsed().as_secs_f64() })
}

/// Samples `params.n` completions for every prompt, `batch_size` prompts per call, handing each
/// prompt's completions (in sample order) to `sink` with the prompt's index. Returns the seconds
/// spent inside `sample`.
#[allow(clippy::too_many_arguments)]
fn generate<L: CausalLm + ?Sized>(
    lm: &L,
    base: &L::Base,
    adapter: Option<&L::Adapter>,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    batch_size: usize,
    rng: &mut BridgeRng,
    mut sink: impl FnMut(usize, Vec<Completion>),
    mut done: impl FnMut(usize),
) -> Result<f64> {
    let mut seconds = 0.0;
    let mut offset = 0;
    for chunk in prompts.chunks(batch_size) {
        let start = Instant::now();
        let out = lm.sample(base, adapter, chunk, params, rng)?;
        seconds += start.elapsed().as_secs_f64();
        let mut slots: Vec<Vec<Option<Completion>>> = vec![vec![None; params.n]; chunk.len()];
        for c in out {
            let slot = slots.get_mut(c.prompt_index).and_then(|s| s.get_mut(c.sample_index)).ok_or_else(|| {
                BridgeError::Model(format!(
                    "sample returned prompt {} sample {} for a batch of {} prompts × {}",
                    c.prompt_index,
                    c.sample_index,
                    chunk.len(),
                    params.n
                ))
            })?;
            if slot.replace(c).is_some() {
                return Err(BridgeError::Model("sample returned the same prompt and sample index twice".into()));
            }
        }
        for (i, row) in slots.into_iter().enumerate() {
            let row: Option<Vec<Completion>> = row.into_iter().collect();
            let row = row.ok_or_else(|| {
                BridgeError::Model(format!("sample returned fewer than {} completions per prompt", params.n))
            })?;
            sink(offset + i, row);
        }
        offset += chunk.len();
        done(offset);
    }
    Ok(seconds)
}

fn scored(c: &Completion, gold: &str, opts: &VerifyOptions) -> SampleResult {
    SampleResult { tokens: c.tokens.len(), finish: c.finish, ..score_completion(&c.text, gold, opts) }
}

/// Greedy and sampled results of one record.
struct RecordRun<'a> {
    record: &'a EvalRecord,
    greedy: Option<SampleResult>,
    samples: Vec<SampleResult>,
    /// The text of the completion a failure would show (greedy, else the first sample).
    shown: Option<String>,
}

/// Aggregates the results of one mode over a set of records (`results[i]`: record i's samples).
fn tally(results: &[&[SampleResult]], sampled: Option<&SampledEval>) -> Result<ModeScores> {
    let records = results.len();
    let all = || results.iter().flat_map(|r| r.iter());
    let completions = all().count();
    let correct = all().filter(|s| s.is_correct()).count();
    let generated_tokens: usize = all().map(|s| s.tokens).sum();
    let frac = |x: usize| if completions == 0 { 0.0 } else { x as f64 / completions as f64 };
    let mean_over_records = |f: &dyn Fn(&[SampleResult]) -> Result<f64>| -> Result<f64> {
        if records == 0 {
            return Ok(0.0);
        }
        let mut sum = 0.0;
        for r in results {
            sum += f(r)?;
        }
        Ok(sum / records as f64)
    };
    let (accuracy, pass_at, maj_at_k) = match sampled {
        None => (frac(correct), Vec::new(), None),
        Some(s) => {
            let count = |r: &[SampleResult]| (r.len(), r.iter().filter(|x| x.is_correct()).count());
            let avg = mean_over_records(&|r| {
                let (n, c) = count(r);
                Ok(if n == 0 { 0.0 } else { c as f64 / n as f64 })
            })?;
            let mut pass_at = Vec::new();
            for k in s.pass_ks() {
                let value = mean_over_records(&|r| {
                    let (n, c) = count(r);
                    pass_at_k(n, c, k)
                })?;
                pass_at.push(PassAtK { k, value });
            }
            let maj = mean_over_records(&|r| {
                let answers: Vec<Option<&str>> = r.iter().map(|x| x.normalized.as_deref()).collect();
                Ok(majority_vote(&answers).map_or(0.0, |v| r[v.index].outcome.score()))
            })?;
            (avg, pass_at, Some(maj))
        }
    };
    Ok(ModeScores {
        records,
        samples_per_record: sampled.map_or(1, |s| s.k),
        completions,
        correct,
        accuracy,
        pass_at,
        maj_at_k,
        unparseable: all().filter(|s| s.outcome.prediction_unparseable()).count(),
        gold_unparseable: all().filter(|s| s.outcome.gold_unparseable()).count(),
        undecided: all().filter(|s| s.outcome == Outcome::Undecided).count(),
        mean_completion_tokens: frac(generated_tokens),
        truncation_rate: frac(all().filter(|s| s.truncated()).count()),
        generated_tokens,
    })
}

fn mode_scores(runs: &[&RecordRun<'_>], config: &EvalConfig) -> Result<(Option<ModeScores>, Option<ModeScores>)> {
    let greedy = if config.greedy {
        let results: Vec<&[SampleResult]> = runs.iter().map(|r| r.greedy.as_slice()).collect();
        Some(tally(&results, None)?)
    } else {
        None
    };
    let sampled = match &config.sampled {
        Some(s) => {
            let results: Vec<&[SampleResult]> = runs.iter().map(|r| r.samples.as_slice()).collect();
            Some(tally(&results, Some(s))?)
        }
        None => None,
    };
    Ok((greedy, sampled))
}

/// The prompts of the records `config` evaluates (the first `limit`), rendered with
/// `config.prompt` and encoded with `codec`: `(texts, token ids)`. Everything an evaluation can
/// reject before generating is checked here (a run checks its evaluation sets with it before
/// training): no record to evaluate, a prompt that does not render or encode, or encodes to no
/// token; the error names the dataset's file and the record (`file:line`).
pub fn encode_prompts(
    dataset: &EvalDataset,
    config: &EvalConfig,
    codec: &dyn TextCodec,
) -> Result<(Vec<String>, Vec<Vec<u32>>)> {
    let source = dataset.path.as_ref().map_or_else(|| dataset.name.clone(), |p| p.display().to_string());
    let records = &dataset.records[..config.limit.map_or(dataset.len(), |n| n.min(dataset.len()))];
    if records.is_empty() {
        return Err(BridgeError::InvalidInput(format!("evaluation set {source}: no records to evaluate")));
    }
    let mut texts = Vec::with_capacity(records.len());
    let mut prompts = Vec::with_capacity(records.len());
    for r in records {
        let at = || format!("evaluation set {source}, record {}", r.id);
        let bad = |what: String| BridgeError::InvalidInput(format!("{}: {what}", at()));
        let text = config.prompt.render_question(&r.question, codec).map_err(|e| bad(format!("the prompt: {e}")))?;
        let ids = codec.encode(&text).map_err(|e| match e {
            BridgeError::Tokenizer(m) => BridgeError::Tokenizer(format!("{}: the prompt does not encode: {m}", at())),
            e => bad(format!("the prompt does not encode: {e}")),
        })?;
        if ids.is_empty() {
            return Err(bad("the prompt encodes to no tokens".into()));
        }
        texts.push(text);
        prompts.push(ids);
    }
    Ok((texts, prompts))
}

/// Evaluates one dataset (see [`evaluate`]).
pub fn evaluate_dataset<L: CausalLm + ?Sized>(
    lm: &L,
    base: &L::Base,
    adapter: Option<&L::Adapter>,
    dataset: &EvalDataset,
    config: &EvalConfig,
    progress: &mut dyn FnMut(&EvalProgress),
) -> Result<DatasetReport> {
    config.validate()?;
    let start = Instant::now();
    let (texts, prompts) = encode_prompts(dataset, config, lm.codec())?;
    let records = &dataset.records[..texts.len()];
    let total = records.len();
    let mut runs: Vec<RecordRun<'_>> =
        records.iter().map(|record| RecordRun { record, greedy: None, samples: Vec::new(), shown: None }).collect();
    let mut seconds = 0.0;
    let opts = &config.verify;
    if config.greedy {
        let params = SamplingParams {
            stop_strings: config.stop_strings.clone(),
            ..SamplingParams::greedy(config.max_new_tokens)
        };
        let mut rng = BridgeRng::for_stream(config.seed, &format!("eval/{}/greedy", dataset.name));
        seconds += generate(
            lm,
            base,
            adapter,
            &prompts,
            &params,
            config.batch_size,
            &mut rng,
            |i, mut cs| {
                let run = &mut runs[i];
                if let Some(c) = cs.pop() {
                    run.greedy = Some(scored(&c, &run.record.gold, opts));
                    run.shown = Some(c.text);
                }
            },
            |done| progress(&EvalProgress { dataset: dataset.name.clone(), mode: "greedy", done, total }),
        )?;
    }
    if let Some(s) = &config.sampled {
        let params = SamplingParams {
            max_new_tokens: config.max_new_tokens,
            temperature: s.temperature,
            top_k: s.top_k,
            top_p: s.top_p,
            n: s.k,
            stop_token_ids: Vec::new(),
            stop_strings: config.stop_strings.clone(),
            ..SamplingParams::default()
        };
        let mut rng = BridgeRng::for_stream(config.seed, &format!("eval/{}/sampled", dataset.name));
        seconds += generate(
            lm,
            base,
            adapter,
            &prompts,
            &params,
            config.batch_size,
            &mut rng,
            |i, cs| {
                let run = &mut runs[i];
                run.samples = cs.iter().map(|c| scored(c, &run.record.gold, opts)).collect();
                if run.shown.is_none() {
                    run.shown = cs.into_iter().next().map(|c| c.text);
                }
            },
            |done| progress(&EvalProgress { dataset: dataset.name.clone(), mode: "sample", done, total }),
        )?;
    }

    let all: Vec<&RecordRun<'_>> = runs.iter().collect();
    let (greedy, sampled) = mode_scores(&all, config)?;

    let mut categories = Vec::new();
    for field in &config.category_fields {
        let mut groups: BTreeMap<String, Vec<&RecordRun<'_>>> = BTreeMap::new();
        for run in &runs {
            if let Some(value) = run.record.category(field) {
                groups.entry(value).or_default().push(run);
            }
        }
        for (value, members) in groups {
            let (greedy, sampled) = mode_scores(&members, config)?;
            categories.push(CategoryReport { field: field.clone(), value, records: members.len(), greedy, sampled });
        }
    }

    let mut failures = Vec::new();
    for (run, prompt) in runs.iter().zip(&texts) {
        if failures.len() >= config.max_failures {
            break;
        }
        let (mode, result) = match (&run.greedy, run.samples.first()) {
            (Some(r), _) => ("greedy", r),
            (None, Some(r)) => ("sample", r),
            (None, None) => continue,
        };
        if !result.is_correct() {
            failures.push(Failure {
                id: run.record.id.clone(),
                mode: mode.to_owned(),
                prompt: shorten(prompt, config.max_text_chars),
                gold: run.record.gold.clone(),
                prediction: result.prediction.clone(),
                outcome: result.outcome,
                completion: shorten(run.shown.as_deref().unwrap_or_default(), config.max_text_chars),
                finish: result.finish,
            });
        }
    }

    let generated: usize = [&greedy, &sampled].into_iter().flatten().map(|m| m.generated_tokens).sum();
    let record_results = if config.keep_records {
        runs.iter()
            .map(|r| RecordResult {
                id: r.record.id.clone(),
                gold: r.record.gold.clone(),
                greedy: r.greedy.clone(),
                samples: r.samples.clone(),
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(DatasetReport {
        name: dataset.name.clone(),
        path: dataset.path.as_ref().map(|p| p.display().to_string()),
        format: dataset.format,
        records: records.len(),
        greedy,
        sampled,
        categories,
        failures,
        wall_time_s: start.elapsed().as_secs_f64(),
        tokens_per_s: if seconds > 0.0 { generated as f64 / seconds } else { 0.0 },
        record_results,
    })
}
