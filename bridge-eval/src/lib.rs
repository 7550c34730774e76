//! # bridge-eval
//!
//! Everything that measures: the math answer verifier ([`verify`]), the verifiable rewards built
//! on it ([`reward`]) and the benchmark runner ([`runner`]). The quickstart's task generator is
//! `bridge-tasks`; metrics logs and charts are `bridge-report`.

pub mod reward;
pub mod runner;
pub mod verify;
