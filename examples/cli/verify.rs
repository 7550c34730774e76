//! The flags of `examples/verify.rs` (none besides `--help`).

use clap::Parser;

/// Judge model completions against gold answers: JSONL on stdin, one
/// `{"prediction": "...", "gold": "..."}` per line; one JSON verdict per line on stdout, a
/// summary on stderr.
#[derive(Parser, Debug)]
#[command(name = "verify")]
pub struct Args {}
