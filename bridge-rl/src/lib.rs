//! bridge-rl
