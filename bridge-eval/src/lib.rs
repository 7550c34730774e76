//! # bridge-eval
//!
//! Everything that measures: the math answer verifier ([`verify`]), the verifiable rewards built
//! on it ([`reward`]), the benchmark runner ([`runner`]), the embedded quickstart task
//! ([`tasks`] when present), and run reporting — metrics JSONL with a progress display
//! ([`metrics`]) and PNG charts ([`plot`]).

pub mod metrics;
pub mod plot;
pub mod reward;
pub mod runner;
pub mod tasks;
pub mod verify;
