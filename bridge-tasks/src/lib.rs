//! # bridge-tasks
//!
//! The quickstart's embedded reasoning task: multi-step integer arithmetic with worked solutions.
//!
//! A task family small enough that the whole comparison (base, SFT, RL-zero, cold start,
//! alternating, BRIDGE) runs in minutes on a CPU with a tiny transformer trained from scratch
//! with a character tokenizer: every text is written in the 22-character [`ALPHABET`], and with
//! the default [`TaskConfig`] every example (prompt + worked solution) is at most 70 characters
//! ([`TaskConfig::max_chars`]).
//!
//! # The problems
//!
//! A level-`k` question is an expression with `k` operations over `+ - *`, operands `0..=20`,
//! written with the usual precedence and only the parentheses it needs. The worked solution, in
//! GSM8K form, has one line per operation, evaluated bottom-up and left subtree first, then the
//! answer. No intermediate result is negative or above `max_value` (99), and both factors of a
//! multiplication are at most `max_factor` (9, the times table):
//!
//! ```text
//! Q: 3+4*2-5
//! A: 4*2=8
//! 3+8=11
//! 11-5=6
//! #### 6
//! ```
//!
//! # The splits ([`generate`])
//!
//! 1. **Pre-training text** for the base model. It teaches the *format* and the *arithmetic*,
//!    not the harder multi-step procedure: worked problems of levels 1 and 2 only
//!    ([`TaskConfig::pretrain_problems`]), and documents of bare arithmetic facts
//!    (`12+7=19 3*4=12 …`), drawn from the reasoning lines of random problems of every level so
//!    that every fact a solution needs is known. A model pre-trained on it, like the paper's base
//!    models, knows the format and the arithmetic but has never seen how a 3- or 4-step problem
//!    is worked out (deeper chaining, parentheses): it should do well on levels 1–2 and poorly on
//!    3–4. RL from it alone then has few rewarded samples on the hard levels to learn from, while
//!    the demonstrations of the SFT split show the procedure directly.
//! 2. **SFT**: worked solutions of every level ([`SftExample`](bridge_core::SftExample):
//!    prompt = the question in the prompt template, completion = reasoning lines + `#### N`).
//! 3. **RL**: prompts with answers only ([`RlPrompt`](bridge_core::RlPrompt): reference `N`,
//!    metadata `{"level": k}`), every level.
//! 4. **Test**: held-out prompts like RL, balanced across levels.
//!
//! No question appears in two splits (the arithmetic facts of the pre-training text are
//! reasoning lines, not questions, so a level-1 test question `3+4` may well be known as the fact
//! `3+4=7`: level 1 is the easy level the base model is meant to solve). Every split is spread
//! evenly over the levels unless [`TaskConfig::sft_per_level`], [`TaskConfig::rl_per_level`] or
//! [`TaskConfig::test_per_level`] give their counts per level (e.g. few questions of level 1, whose
//! space is small, and many of the harder levels); the pre-training problems' counts per level are
//! always given.
//!
//! Everything is seeded: the same config gives the same splits. [`TaskSplits::write_jsonl`]
//! writes them as `sft.jsonl`, `rl.jsonl`, `test.jsonl` (GSM8K records plus `level`) and
//! `pretrain.txt`.
//!
//! ```
//! use bridge_tasks::{TaskConfig, generate};
//! let cfg = TaskConfig { n_pretrain: 50, pretrain_problems: vec![5, 10], n_sft: 8, n_rl: 20, n_test: 8, ..Default::default() };
//! let splits = generate(&cfg).unwrap();
//! assert_eq!(splits.test.len(), 8);
//! assert!(splits.sft[0].completion.contains("#### "));
//! ```

mod alphabet;
mod arith;
mod config;
mod generate;
#[cfg(test)]
mod tests;

pub use alphabet::{ALPHABET, QUESTION_PLACEHOLDER};
pub use arith::{Expr, MAX_EXPONENT, MAX_PAREN_DEPTH, MAX_QUESTION_LEN, Op, Problem, Step};
pub use config::{LevelCounts, MAX_FACTS_PER_DOC, MAX_LEVEL, MAX_SPLIT_LEN, MAX_VALUE_LIMIT, TaskConfig};
pub use generate::{SplitProblems, TaskSplits, generate, read_pretrain};
