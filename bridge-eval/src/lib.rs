//! bridge-eval

pub mod verify;
