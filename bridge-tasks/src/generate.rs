//! Seeded generation of the four splits, and their files.

use super::arith::{Expr, Op, Problem};
use super::config::TaskConfig;
use bridge_core::{BridgeError, BridgeRng, Metadata, Result, RlPrompt, SftExample};
use serde::Serialize;
use std::collections::HashSet;
use std::path::Path;

/// Levels whose raw space (shapes × operators × operands) is at most this large are enumerated,
/// so their capacity is known exactly; larger ones are sampled.
const ENUMERATE_LIMIT: u64 = 1 << 20;
/// A sampled level is deemed exhausted after this many draws in a row found no new problem; also
/// the draws allowed to find one admissible problem.
const STALL_DRAWS: u64 = 200_000;

/// The generated data: five splits with pairwise disjoint questions.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskSplits {
    /// Pre-training documents (one string each, possibly several lines, never a blank line):
    /// worked problems of the easy levels, rendered as prompt + solution, and lines of bare
    /// arithmetic facts. Shuffled.
    pub pretrain: Vec<String>,
    /// Worked solutions: prompt, and completion = reasoning lines + `#### N`.
    pub sft: Vec<SftExample>,
    /// RL prompts: reference = the answer, metadata `{"level": k}`.
    pub rl: Vec<RlPrompt>,
    /// Held-out test prompts, like `rl`, balanced across levels.
    pub test: Vec<RlPrompt>,
    /// Held-out validation prompts, like `test` (for choosing hyper-parameters).
    pub val: Vec<RlPrompt>,
    /// The problems behind the splits, in the same order.
    pub problems: SplitProblems,
}

/// The [`Problem`]s of each split, in the order of the split.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SplitProblems {
    /// The worked problems among the pre-training documents (in generation order, by level).
    pub pretrain: Vec<Problem>,
    /// Behind [`TaskSplits::sft`].
    pub sft: Vec<Problem>,
    /// Behind [`TaskSplits::rl`].
    pub rl: Vec<Problem>,
    /// Behind [`TaskSplits::test`].
    pub test: Vec<Problem>,
    /// Behind [`TaskSplits::val`].
    pub val: Vec<Problem>,
}

#[derive(Clone, Debug)]
enum Shape {
    Leaf,
    Node(Box<Shape>, Box<Shape>),
}

/// Every binary tree shape with `n` internal nodes (Catalan(n) of them).
fn shapes(n: u32) -> Vec<Shape> {
    if n == 0 {
        return vec![Shape::Leaf];
    }
    let mut out = Vec::new();
    for i in 0..n {
        for l in shapes(i) {
            for r in shapes(n - 1 - i) {
                out.push(Shape::Node(Box::new(l.clone()), Box::new(r)));
            }
        }
    }
    out
}

/// Fills `shape` in order: operators and leaves left to right as they will be written; a leaf
/// whose `squared` entry is set becomes `leaf^2`.
fn fill(shape: &Shape, ops: &mut impl Iterator<Item = Op>, leaves: &mut impl Iterator<Item = (i64, bool)>) -> Expr {
    match shape {
        Shape::Leaf => match leaves.next().unwrap_or((0, false)) {
            (n, false) => Expr::Num(n),
            (n, true) => Expr::pow(Expr::Num(n), 2),
        },
        Shape::Node(l, r) => {
            let lhs = fill(l, ops, leaves);
            let op = ops.next().unwrap_or(Op::Add);
            let rhs = fill(r, ops, leaves);
            Expr::bin(op, lhs, rhs)
        }
    }
}

/// The problems of one level: expression trees with the level's binary operators and squared
/// operands, filtered by the limits.
struct LevelSpace<'a> {
    cfg: &'a TaskConfig,
    level: u32,
    /// Binary operators per problem.
    n_ops: u32,
    shapes: Vec<Shape>,
    ops: Vec<Op>,
    /// Which operands are squared: every bit mask over the `n_ops + 1` operands with the level's
    /// number of squares set.
    square_masks: Vec<u32>,
    /// Size of the raw space when small enough to enumerate.
    raw: Option<u64>,
}

impl<'a> LevelSpace<'a> {
    fn new(cfg: &'a TaskConfig, level: u32) -> Result<Self> {
        let n_ops = cfg.ops(level);
        let shapes = shapes(n_ops);
        let ops = cfg.operators()?;
        let square_masks: Vec<u32> =
            (0u32..1 << (n_ops + 1)).filter(|m| m.count_ones() == cfg.squares(level)).collect();
        let n_leaf = (cfg.max_operand + 1) as u128;
        let raw = (shapes.len() as u128)
            .checked_mul((ops.len() as u128).checked_pow(n_ops).unwrap_or(u128::MAX))
            .and_then(|x| x.checked_mul(square_masks.len() as u128))
            .and_then(|x| x.checked_mul(n_leaf.checked_pow(n_ops + 1)?))
            .filter(|&x| x <= u128::from(ENUMERATE_LIMIT))
            .map(|x| x as u64);
        Ok(LevelSpace { cfg, level, n_ops, shapes, ops, square_masks, raw })
    }

    fn build(&self, mut pick: impl FnMut(u64) -> u64) -> Expr {
        let shape = &self.shapes[pick(self.shapes.len() as u64) as usize];
        let ops: Vec<Op> = (0..self.n_ops).map(|_| self.ops[pick(self.ops.len() as u64) as usize]).collect();
        let mask = self.square_masks[pick(self.square_masks.len() as u64) as usize];
        let n_leaf = (self.cfg.max_operand + 1) as u64;
        let leaves: Vec<(i64, bool)> = (0..=self.n_ops).map(|i| (pick(n_leaf) as i64, mask & (1 << i) != 0)).collect();
        fill(shape, &mut ops.into_iter(), &mut leaves.into_iter())
    }

    /// The expression at `index` of the raw space (mixed radix).
    fn decode(&self, mut index: u64) -> Expr {
        self.build(|radix| {
            let digit = index % radix;
            index /= radix;
            digit
        })
    }

    /// A uniformly random expression of the raw space.
    fn random(&self, rng: &mut BridgeRng) -> Expr {
        self.build(|radix| rng.below(radix))
    }

    /// The problem of `e` if it respects the limits.
    fn accept(&self, e: &Expr) -> Option<Problem> {
        let cfg = self.cfg;
        if !cfg.parentheses && e.needs_parentheses() {
            return None;
        }
        if !squares_at_least_two(e) {
            return None;
        }
        let (steps, _) = e.solve().ok()?;
        let ok = steps.iter().all(|s| {
            (0..=cfg.max_value).contains(&s.result) && (s.op != Op::Mul || s.lhs.max(s.rhs) <= cfg.max_factor)
        });
        if !ok {
            return None;
        }
        let mut problem = Problem::from_expr(e, e.render()).ok()?;
        problem.level = self.level;
        Some(problem)
    }

    /// `needed` distinct problems in a seeded order; an error if the level has fewer.
    fn distinct(&self, rng: &mut BridgeRng, needed: usize, breakdown: &str) -> Result<Vec<Problem>> {
        if needed == 0 {
            return Ok(Vec::new());
        }
        let short = |found: String| {
            BridgeError::config(
                "tasks",
                format!(
                    "level {} ({} operations, {} squares) has {found} distinct problems with max_operand={}, \
                     max_factor={}, max_value={}, operators={:?}, parentheses={}, but the splits need {needed} \
                     ({breakdown}); lower the counts or widen the limits",
                    self.level,
                    self.n_ops,
                    self.cfg.squares(self.level),
                    self.cfg.max_operand,
                    self.cfg.max_factor,
                    self.cfg.max_value,
                    self.cfg.operators,
                    self.cfg.parentheses
                ),
            )
        };
        let mut seen = HashSet::new();
        if let Some(raw) = self.raw {
            let mut all: Vec<Problem> = (0..raw)
                .filter_map(|i| self.accept(&self.decode(i)))
                .filter(|p| seen.insert(p.question.clone()))
                .collect();
            if all.len() < needed {
                return Err(short(format!("only {}", all.len())));
            }
            rng.shuffle(&mut all);
            all.truncate(needed);
            return Ok(all);
        }
        // Sampling: stop when `needed` are found, or after STALL_DRAWS draws in a row found
        // nothing new (the level is, in practice, exhausted).
        let mut out = Vec::new();
        let mut stalled = 0;
        while stalled < STALL_DRAWS {
            match self.accept(&self.random(rng)) {
                Some(p) if seen.insert(p.question.clone()) => {
                    out.push(p);
                    if out.len() == needed {
                        return Ok(out);
                    }
                    stalled = 0;
                }
                _ => stalled += 1,
            }
        }
        Err(short(format!("too few (only {} found before {STALL_DRAWS} draws in a row found no new one)", out.len())))
    }

    /// One random admissible problem (repeats allowed).
    fn any(&self, rng: &mut BridgeRng) -> Result<Problem> {
        for _ in 0..STALL_DRAWS {
            if let Some(p) = self.accept(&self.random(rng)) {
                return Ok(p);
            }
        }
        Err(BridgeError::config(
            "tasks",
            format!("no admissible level-{} problem found in {STALL_DRAWS} random draws; widen the limits", self.level),
        ))
    }
}

/// Whether every squared operand is at least 2: `0^2` and `1^2` equal their base, so a model
/// that ignores the exponent would answer them right without the skill the level is about.
fn squares_at_least_two(e: &Expr) -> bool {
    match e {
        Expr::Num(_) => true,
        Expr::Bin { lhs, rhs, .. } => squares_at_least_two(lhs) && squares_at_least_two(rhs),
        Expr::Pow { base, .. } => !matches!(**base, Expr::Num(0 | 1)) && squares_at_least_two(base),
    }
}

fn level_metadata(level: u32) -> Metadata {
    let mut m = Metadata::new();
    m.insert("level".into(), serde_json::Value::from(level));
    m
}

/// Generates the five splits of `cfg` (see the [module docs](super) for the design).
///
/// Deterministic in `cfg`. Each level draws its distinct questions from its own stream
/// (`tasks/level/{k}`) and deals them out in the order test, validation, SFT, RL, pre-training,
/// so the test set does not change when only the other counts do. Errors: an invalid config, or a
/// level with fewer distinct problems than its splits need.
pub fn generate(cfg: &TaskConfig) -> Result<TaskSplits> {
    cfg.validate()?;
    let template = cfg.prompt_template.as_str();
    let spaces: Vec<LevelSpace<'_>> = (1..=cfg.levels).map(|l| LevelSpace::new(cfg, l)).collect::<Result<_>>()?;
    let mut problems = SplitProblems::default();
    for space in &spaces {
        let level = space.level;
        let n = cfg.level_counts(level);
        let n_pre = cfg.pretrain_count(level);
        let breakdown = format!("test {}, val {}, sft {}, rl {}, pretrain {n_pre}", n.test, n.val, n.sft, n.rl);
        let mut rng = BridgeRng::for_stream(cfg.seed, &format!("tasks/level/{level}"));
        let needed = n.test + n.val + n.sft + n.rl + n_pre;
        let (n_test, n_val, n_sft, n_rl) = (n.test, n.val, n.sft, n.rl);
        let mut pool = space.distinct(&mut rng, needed, &breakdown)?.into_iter();
        problems.test.extend(pool.by_ref().take(n_test));
        problems.val.extend(pool.by_ref().take(n_val));
        problems.sft.extend(pool.by_ref().take(n_sft));
        problems.rl.extend(pool.by_ref().take(n_rl));
        problems.pretrain.extend(pool);
    }
    BridgeRng::for_stream(cfg.seed, "tasks/order/test").shuffle(&mut problems.test);
    BridgeRng::for_stream(cfg.seed, "tasks/order/val").shuffle(&mut problems.val);
    BridgeRng::for_stream(cfg.seed, "tasks/order/sft").shuffle(&mut problems.sft);
    BridgeRng::for_stream(cfg.seed, "tasks/order/rl").shuffle(&mut problems.rl);

    let mut pretrain: Vec<String> = problems.pretrain.iter().map(|p| p.document(template)).collect();
    let n_fact_docs = cfg.n_pretrain - problems.pretrain.len();
    let mut rng = BridgeRng::for_stream(cfg.seed, "tasks/pretrain/facts");
    for _ in 0..n_fact_docs {
        let mut facts = Vec::with_capacity(cfg.facts_per_doc);
        for _ in 0..cfg.facts_per_doc {
            let space = &spaces[rng.below(spaces.len() as u64) as usize];
            let p = space.any(&mut rng)?;
            facts.push(p.steps[rng.below(p.steps.len() as u64) as usize].to_string());
        }
        pretrain.push(facts.join(" "));
    }
    BridgeRng::for_stream(cfg.seed, "tasks/order/pretrain").shuffle(&mut pretrain);

    let sft = problems
        .sft
        .iter()
        .enumerate()
        .map(|(i, p)| SftExample { id: format!("sft-{i:05}"), prompt: p.prompt(template), completion: p.solution() })
        .collect();
    // RL prompts carry their worked solution (LUFFY's off-policy demonstration); evaluation
    // prompts do not.
    let prompts = |split: &str, ps: &[Problem], demonstrations: bool| -> Vec<RlPrompt> {
        ps.iter()
            .enumerate()
            .map(|(i, p)| RlPrompt {
                id: format!("{split}-{i:05}"),
                prompt: p.prompt(template),
                reference: p.answer.to_string(),
                metadata: level_metadata(p.level),
                demonstration: demonstrations.then(|| p.solution()),
            })
            .collect()
    };
    let rl = prompts("rl", &problems.rl, true);
    let test = prompts("test", &problems.test, false);
    let val = prompts("val", &problems.val, false);
    Ok(TaskSplits { pretrain, sft, rl, test, val, problems })
}

/// One line of `sft.jsonl`, `rl.jsonl` or `test.jsonl` (GSM8K form plus `level`).
#[derive(Serialize)]
struct Record<'a> {
    id: &'a str,
    question: &'a str,
    answer: String,
    level: u32,
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| BridgeError::io(path, e))
}

fn jsonl(ids: impl Iterator<Item = String>, problems: &[Problem], worked: bool) -> Result<String> {
    let mut out = String::new();
    for (id, p) in ids.zip(problems) {
        let answer = if worked { p.solution() } else { format!("#### {}", p.answer) };
        let rec = Record { id: &id, question: &p.question, answer, level: p.level };
        out.push_str(&serde_json::to_string(&rec).map_err(|e| BridgeError::InvalidInput(e.to_string()))?);
        out.push('\n');
    }
    Ok(out)
}

impl TaskSplits {
    /// Writes the splits to `dir` (created if needed):
    ///
    /// * `sft.jsonl`: `{"id", "question", "answer", "level"}`, `answer` the worked solution
    ///   ending in `#### N` (GSM8K form);
    /// * `rl.jsonl`, `test.jsonl`, `val.jsonl`: the same keys, `answer` just `#### N`;
    /// * `pretrain.txt`: the documents, separated by one blank line (read back with
    ///   [`read_pretrain`]).
    ///
    /// Questions are stored bare; render them with the config's `prompt_template` (a `plain`
    /// prompt template) to get the prompts of [`TaskSplits::sft`] and friends.
    pub fn write_jsonl(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| BridgeError::io(dir, e))?;
        let p = &self.problems;
        write_file(&dir.join("sft.jsonl"), &jsonl(self.sft.iter().map(|e| e.id.clone()), &p.sft, true)?)?;
        write_file(&dir.join("rl.jsonl"), &jsonl(self.rl.iter().map(|e| e.id.clone()), &p.rl, false)?)?;
        write_file(&dir.join("test.jsonl"), &jsonl(self.test.iter().map(|e| e.id.clone()), &p.test, false)?)?;
        write_file(&dir.join("val.jsonl"), &jsonl(self.val.iter().map(|e| e.id.clone()), &p.val, false)?)?;
        let mut text = self.pretrain.join("\n\n");
        text.push('\n');
        write_file(&dir.join("pretrain.txt"), &text)
    }
}

/// Reads a `pretrain.txt` written by [`TaskSplits::write_jsonl`]: documents separated by blank lines.
pub fn read_pretrain(path: impl AsRef<Path>) -> Result<Vec<String>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| BridgeError::io(path, e))?;
    Ok(text.split("\n\n").map(|d| d.trim_matches('\n').to_owned()).filter(|d| !d.is_empty()).collect())
}
