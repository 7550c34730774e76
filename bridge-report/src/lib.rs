//! # bridge-report
//!
//! Run reporting, apart from what is measured (`bridge-eval`): the metrics log of a training run
//! with its progress display ([`metrics`]) and the line charts drawn from it ([`plot`]).

pub mod metrics;
pub mod plot;
