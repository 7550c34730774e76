//! bridge-models
