//! bridge-eval
