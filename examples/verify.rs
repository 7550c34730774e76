//! Judge model completions against gold answers.
//!
//! Reads JSONL from stdin, one `{"prediction": "...", "gold": "..."}` per line,
//! and writes one JSON line per input line:
//! `{"correct": bool, "outcome": "...", "pred": "...", "gold": "..."}`.
//! A malformed line yields `"outcome": "error"` with a message naming the line
//! number; processing goes on. Blank lines are skipped. A summary goes to stderr.
//!
//! ```text
//! echo '{"prediction": "so \\boxed{4}", "gold": "#### 4"}' | cargo run --release --example verify
//! ```

#[path = "cli/verify.rs"]
mod cli;

use clap::Parser;
use std::io::{self, BufRead, BufWriter, Write};

use bridge_eval::verify::{VerifyOptions, verify};
use serde_json::{Value, json};

fn judge_line(line: &str, lineno: usize, opts: &VerifyOptions) -> Value {
    let error = |msg: String| {
        json!({"correct": false, "outcome": "error", "pred": null, "gold": null,
               "message": format!("line {lineno}: {msg}")})
    };
    let rec: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return error(format!("invalid JSON: {e}")),
    };
    let field = |k: &str| rec.get(k).and_then(Value::as_str);
    let (Some(prediction), Some(gold)) = (field("prediction"), field("gold")) else {
        return error("expected string fields \"prediction\" and \"gold\"".to_string());
    };
    let v = verify(prediction, gold, opts);
    let mut out = json!({
        "correct": v.is_correct(),
        "outcome": v.label(),
        "pred": v.pred().map(|p| p.normalized.clone()),
        "gold": v.gold().map(|g| g.normalized.clone()),
    });
    let message = match &v {
        bridge_eval::verify::Verdict::Unparseable { reason, .. } => Some(reason.clone()),
        bridge_eval::verify::Verdict::TooLong { limit, .. } => Some(format!("answer too long (limit {limit})")),
        _ => None,
    };
    if let (Some(m), Some(obj)) = (message, out.as_object_mut()) {
        obj.insert("message".to_string(), Value::String(m));
    }
    out
}

fn main() -> io::Result<()> {
    cli::Args::parse();
    let opts = VerifyOptions::default();
    let stdin = io::stdin();
    let mut out = BufWriter::new(io::stdout().lock());
    let (mut total, mut correct) = (0usize, 0usize);
    for (i, line) in stdin.lock().split(b'\n').enumerate() {
        let lineno = i + 1;
        let bytes = line?;
        let text = String::from_utf8_lossy(&bytes);
        if text.trim().is_empty() {
            continue;
        }
        let v = judge_line(&text, lineno, &opts);
        total += 1;
        if v.get("correct").and_then(Value::as_bool) == Some(true) {
            correct += 1;
        }
        writeln!(out, "{v}")?;
    }
    out.flush()?;
    eprintln!("{correct}/{total} correct");
    Ok(())
}
