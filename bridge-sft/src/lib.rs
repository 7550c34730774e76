//! bridge-sft
