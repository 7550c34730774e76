//! Math answer verification: does a model completion reach the reference answer?
//!
//! # Pipeline
//!
//! 1. **Extraction** ([`extract_answer`]). Only an answer that ends in the last
//!    [`ExtractOptions::tail_chars`] characters counts. In order of
//!    priority: the last well-formed `\boxed{…}`/`\fbox{…}` (braces matched, so
//!    when several boxes appear the last one wins), GSM8K's `#### N`, an anchor
//!    ("the answer is", "final answer:", "Answer:"), the last `$…$`/`\(…\)`/`\[…\]`
//!    span, and optionally the last number. The gold side goes through the same
//!    extraction (over the whole text) only when it carries a `####` or a box;
//!    otherwise the whole gold text is the answer.
//! 2. **Normalisation** (string level): math delimiters and boxes unwrapped,
//!    `\text{…}` units, currency, degrees, thousands separators (`1,234` and
//!    `1{,}234`, only when the whole answer is such a number), trailing unit words
//!    (`12 apples`, `5cm`) and a final period removed; `\dfrac`/`\tfrac` → `\frac`;
//!    mixed numbers (`2 1/2`, `2\frac{1}{2}`) rewritten as sums; `x \in S` → `S`.
//! 3. **Parsing** ([`parse_answer`]) into an [`Answer`]: an expression, an
//!    equation, an interval, a tuple, a set, a bare list, a union, a
//!    multiple-choice letter or a text answer (yes/no, names).
//! 4. **Comparison** ([`answers_equivalent`]).
//!
//! # What counts as equal
//!
//! * Numbers are exact rationals over checked `i128` (`0.5 = 1/2 = \frac{2}{4}`,
//!   `4.2 ≠ 42`, `\frac43 ≠ \frac34`); operations that overflow, irrational roots,
//!   `\pi`, `e` and functions fall back to `f64`, compared with a relative tolerance
//!   of `1e-9`. When either side contains a decimal literal, values also match
//!   after rounding both to 6 decimal places (so `0.333333` matches `\frac13` and
//!   `1.414214` matches `\sqrt2`, as in the Python `math_verify` package, but
//!   `0.3333` does not).
//! * `50\%` matches both `50` and `0.5`; currency, units and `\text{…}` are ignored.
//! * Expressions with variables are compared by evaluating both sides at
//!   [`CompareOptions::n_points`] seeded, deterministic, positive rational points
//!   (exact arithmetic where possible): `x^2+2x+1 = (x+1)^2`.
//! * `x = 5` matches `5`; two equations match when their sides match (in either
//!   order) or when `lhs - rhs` are proportional.
//! * Intervals compare ends and open/closed-ness (`[0,1] ≠ [0,1)`); tuples are
//!   ordered (`(1,2) ≠ (2,1)`); sets `\{…\}` and bare lists `1, 2` are unordered;
//!   `(a,b)` matches the open interval `(a,b)`; unions are unordered.
//! * Multiple choice: `B`, `(B)`, `\text{(B)}`, `B)` are the same letter.
//! * Text answers compare case-insensitively with whitespace collapsed.
//! * Scientific notation is exact (`1e5` = `100000`, `2.5E-3` = `0.0025`,
//!   `1e999999998` ≠ `1e999999999`); `e` on its own is Euler's constant (`e^2`, `2 e`), and a
//!   number glued to a lone `e` that starts no exponent (`3e`) is a text answer. Python's
//!   `math_verify` (0.9.0) reads the upper-case forms the same way but `$1e5$` as `1·e·5` and
//!   `3e` as `3·e`; this verifier follows what a model means by `1e5`.
//! * Numbers too long for `i128` rationals (a 5000-digit integer, `1e400`) are compared
//!   exactly as decimals.
//!
//! # Bounded cost
//!
//! Answers longer than [`VerifyOptions::max_answer_len`] bytes are not parsed: the verdict
//! is [`Verdict::TooLong`]. Plain numbers are the exception: they are read at any length the
//! step budget allows (one step per 16 bytes). Beyond that,
//! nesting is limited to [`MAX_DEPTH`], exact powers are capped (larger ones go to
//! `f64` and overflow to "undefined", never to a huge integer), and every parsing,
//! evaluation and comparison step spends from a deterministic step budget
//! ([`VerifyOptions::parse_fuel`], [`CompareOptions::fuel`]) instead of a clock.
//! Running out is reported ([`Verdict::Unparseable`] with
//! [`ParseError::OutOfFuel`], or [`Verdict::Undecided`]), never a hang or a panic.

mod compare;
mod error;
mod extract;
mod fuel;
mod lex;
mod normalize;
mod parse;
mod value;

pub use compare::{CompareError, CompareOptions, answers_equivalent, try_answers_equivalent};
pub use extract::{ExtractMethod, ExtractOptions, Extracted, extract_answer, has_answer_marker, tail};
pub use parse::{Answer, DEFAULT_PARSE_FUEL, Expr, MAX_ANSWER_LEN, MAX_DEPTH, ParseError, parse_answer};

use fuel::Fuel;

/// Options for [`verify`].
#[derive(Clone, Debug, PartialEq)]
pub struct VerifyOptions {
    /// How the prediction's answer is found.
    pub extract: ExtractOptions,
    /// How answers are compared.
    pub compare: CompareOptions,
    /// Step budget for parsing each side.
    pub parse_fuel: u64,
    /// Longest answer (bytes, as extracted) that is judged; a longer one is
    /// [`Verdict::TooLong`], unless it is a plain number (read at any length the step budget
    /// allows).
    pub max_answer_len: usize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            extract: ExtractOptions::default(),
            compare: CompareOptions::default(),
            parse_fuel: DEFAULT_PARSE_FUEL,
            max_answer_len: 1000,
        }
    }
}

/// Which side could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The model's completion.
    Prediction,
    /// The reference answer.
    Gold,
    /// Both.
    Both,
}

/// One side's answer as found and as normalised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnswerText {
    /// The answer as extracted from the text.
    pub extracted: String,
    /// The answer after string normalisation (what was parsed).
    pub normalized: String,
}

/// The outcome of [`verify`].
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// The prediction's answer is equivalent to the gold answer.
    Correct {
        /// Prediction side.
        pred: AnswerText,
        /// Gold side.
        gold: AnswerText,
    },
    /// Both answers parsed, and they differ.
    Incorrect {
        /// Prediction side.
        pred: AnswerText,
        /// Gold side.
        gold: AnswerText,
    },
    /// No answer could be found or parsed on `side`.
    Unparseable {
        /// Which side failed.
        side: Side,
        /// Prediction side, when an answer was extracted.
        pred: Option<AnswerText>,
        /// Gold side, when an answer was extracted.
        gold: Option<AnswerText>,
        /// Why (first failure, prediction first).
        reason: String,
    },
    /// Both parsed, but the comparison ran out of its step budget.
    Undecided {
        /// Prediction side.
        pred: AnswerText,
        /// Gold side.
        gold: AnswerText,
    },
    /// The answer on `side` is longer than [`VerifyOptions::max_answer_len`] (and not a plain
    /// number), so it was not judged.
    TooLong {
        /// Which side is too long (`Both` also when the other side is unusable).
        side: Side,
        /// Prediction side, when an answer was extracted (`normalized` is empty when too long).
        pred: Option<AnswerText>,
        /// Gold side, when an answer was extracted (`normalized` is empty when too long).
        gold: Option<AnswerText>,
        /// The limit exceeded: [`VerifyOptions::max_answer_len`] bytes, or the parser's token
        /// limit.
        limit: usize,
    },
}

impl Verdict {
    /// `true` only for [`Verdict::Correct`].
    pub fn is_correct(&self) -> bool {
        matches!(self, Verdict::Correct { .. })
    }

    /// A short label: `correct`, `incorrect`, `unparseable_prediction`,
    /// `unparseable_gold`, `unparseable_both`, `undecided`, `too_long_prediction`,
    /// `too_long_gold` or `too_long_both`.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Correct { .. } => "correct",
            Verdict::Incorrect { .. } => "incorrect",
            Verdict::Unparseable { side: Side::Prediction, .. } => "unparseable_prediction",
            Verdict::Unparseable { side: Side::Gold, .. } => "unparseable_gold",
            Verdict::Unparseable { side: Side::Both, .. } => "unparseable_both",
            Verdict::Undecided { .. } => "undecided",
            Verdict::TooLong { side: Side::Prediction, .. } => "too_long_prediction",
            Verdict::TooLong { side: Side::Gold, .. } => "too_long_gold",
            Verdict::TooLong { side: Side::Both, .. } => "too_long_both",
        }
    }

    /// Reward in {0, 1}: 1 only when correct.
    pub fn binary_reward(&self) -> f32 {
        if self.is_correct() { 1.0 } else { 0.0 }
    }

    /// Reward in {-1, +1}, or `None` ("skip this sample") when the gold answer is
    /// unusable or the comparison was undecided. An unparseable or too long prediction is -1.
    pub fn signed_reward(&self) -> Option<f32> {
        match self {
            Verdict::Correct { .. } => Some(1.0),
            Verdict::Incorrect { .. }
            | Verdict::Unparseable { side: Side::Prediction, .. }
            | Verdict::TooLong { side: Side::Prediction, .. } => Some(-1.0),
            _ => None,
        }
    }

    /// The prediction's answer, when one was extracted.
    pub fn pred(&self) -> Option<&AnswerText> {
        match self {
            Verdict::Correct { pred, .. } | Verdict::Incorrect { pred, .. } | Verdict::Undecided { pred, .. } => {
                Some(pred)
            }
            Verdict::Unparseable { pred, .. } | Verdict::TooLong { pred, .. } => pred.as_ref(),
        }
    }

    /// The gold answer, when one was extracted.
    pub fn gold(&self) -> Option<&AnswerText> {
        match self {
            Verdict::Correct { gold, .. } | Verdict::Incorrect { gold, .. } | Verdict::Undecided { gold, .. } => {
                Some(gold)
            }
            Verdict::Unparseable { gold, .. } | Verdict::TooLong { gold, .. } => gold.as_ref(),
        }
    }
}

/// Extracts the gold answer: through [`extract_answer`] (over the whole text) when `gold`
/// carries a `####` or a box, otherwise the whole trimmed string. A reference is never cut to
/// [`ExtractOptions::tail_chars`].
pub fn extract_gold(gold: &str, opts: &ExtractOptions) -> Option<Extracted> {
    if has_answer_marker(gold)
        && let Some(e) = extract_answer(gold, &ExtractOptions { tail_chars: usize::MAX, ..opts.clone() })
    {
        return Some(e);
    }
    let t = gold.trim();
    if t.is_empty() { None } else { Some(Extracted { text: t.to_string(), method: ExtractMethod::Whole }) }
}

/// Why one side has no parsed answer.
enum Failure {
    /// Nothing was extracted.
    Missing,
    /// Longer than the limit (bytes, or tokens: [`ParseError::TooLong`]).
    TooLong(usize),
    /// Extracted, but not parsed.
    Parse(ParseError),
}

impl Failure {
    fn reason(&self) -> String {
        match self {
            Failure::Missing => "no answer found".to_string(),
            Failure::TooLong(limit) => ParseError::TooLong { max: *limit }.to_string(),
            Failure::Parse(e) => e.to_string(),
        }
    }
}

/// Judges a model completion against a gold answer (bare, or a full GSM8K/MATH
/// solution with `####` or `\boxed`).
pub fn verify(prediction: &str, gold: &str, opts: &VerifyOptions) -> Verdict {
    let pred_ex = extract_answer(prediction, &opts.extract);
    let gold_ex = extract_gold(gold, &opts.extract);
    let side_parse = |ex: &Option<Extracted>| -> (Option<AnswerText>, Result<Answer, Failure>) {
        let Some(e) = ex else { return (None, Err(Failure::Missing)) };
        let mut fuel = Fuel::new(opts.parse_fuel);
        match parse::parse_with_fuel(&e.text, &mut fuel, opts.max_answer_len) {
            Ok((a, norm)) => (Some(AnswerText { extracted: e.text.clone(), normalized: norm }), Ok(a)),
            Err(ParseError::TooLong { max }) => {
                (Some(AnswerText { extracted: e.text.clone(), normalized: String::new() }), Err(Failure::TooLong(max)))
            }
            Err(err) => {
                let norm =
                    if e.text.len() <= opts.max_answer_len { normalize::normalize(&e.text) } else { String::new() };
                (Some(AnswerText { extracted: e.text.clone(), normalized: norm }), Err(Failure::Parse(err)))
            }
        }
    };
    let (pred_txt, pred_ans) = side_parse(&pred_ex);
    let (gold_txt, gold_ans) = side_parse(&gold_ex);
    match (pred_ans, gold_ans, pred_txt, gold_txt) {
        (Ok(p), Ok(g), Some(pt), Some(gt)) => {
            if pt.normalized == gt.normalized {
                return Verdict::Correct { pred: pt, gold: gt };
            }
            match try_answers_equivalent(&p, &g, &opts.compare) {
                Ok(true) => Verdict::Correct { pred: pt, gold: gt },
                Ok(false) => Verdict::Incorrect { pred: pt, gold: gt },
                Err(_) => Verdict::Undecided { pred: pt, gold: gt },
            }
        }
        (p, g, pt, gt) => {
            // Identical non-empty normalised strings are equal even if unparsed.
            if let (Some(a), Some(b)) = (&pt, &gt)
                && !a.normalized.is_empty()
                && a.normalized == b.normalized
            {
                return Verdict::Correct { pred: a.clone(), gold: b.clone() };
            }
            let side = match (&p, &g) {
                (Err(_), Err(_)) => Side::Both,
                (Err(_), _) => Side::Prediction,
                _ => Side::Gold,
            };
            // Too long when the gold is, or when the prediction is and the gold is fine.
            let too_long = match (&p, &g) {
                (_, Err(Failure::TooLong(limit))) | (Err(Failure::TooLong(limit)), Ok(_)) => Some(*limit),
                _ => None,
            };
            if let Some(limit) = too_long {
                return Verdict::TooLong { side, pred: pt, gold: gt, limit };
            }
            let reason = match (p, g) {
                (Err(e), _) => format!("prediction: {}", e.reason()),
                (_, Err(e)) => format!("gold: {}", e.reason()),
                _ => "missing answer".to_string(),
            };
            Verdict::Unparseable { side, pred: pt, gold: gt, reason }
        }
    }
}
