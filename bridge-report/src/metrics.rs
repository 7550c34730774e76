//! Training metrics: a JSONL log (`metrics.jsonl`, one JSON object per line) and progress display.
//!
//! * [`MetricsWriter`] appends records and flushes each line, so a crash loses at most the line
//!   being written; [`MetricsWriter::resume`] first cuts the log back to the last checkpoint's step
//!   so a resumed run does not log the same steps twice.
//! * [`read_metrics`] reads a log back, naming the file and line of anything malformed.
//! * [`ProgressReporter`] shows an `indicatif` bar on a terminal and plain `step 10/100 reward=0.41`
//!   lines elsewhere (CI logs, `nohup`, files).
//!
//! ```no_run
//! use bridge_report::metrics::{MetricsWriter, ProgressReporter};
//! # fn main() -> bridge_core::Result<()> {
//! let mut log = MetricsWriter::create("runs/demo")?;
//! let mut progress = ProgressReporter::new(100).log_every(10);
//! for step in 1..=100u64 {
//!     let (reward, sft_loss) = (0.4, 1.2);
//!     log.write_scalars(step, &[("reward", reward), ("sft_loss", sft_loss)])?;
//!     progress.update(step, &[("reward", reward), ("sft_loss", sft_loss)]);
//! }
//! progress.finish();
//! # Ok(())
//! # }
//! ```

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bridge_core::{BridgeError, Result};
use serde::Serialize;
use serde_json::Value;

/// The metrics file name inside a run directory.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// Appends one JSON object per line to a metrics file, writing each line with a single write call.
#[derive(Debug)]
pub struct MetricsWriter {
    path: PathBuf,
    file: File,
}

impl MetricsWriter {
    /// Starts a fresh `run_dir/metrics.jsonl` (creating `run_dir`), discarding any existing log.
    pub fn create(run_dir: impl AsRef<Path>) -> Result<Self> {
        Self::create_file(run_dir.as_ref().join(METRICS_FILE))
    }

    /// Starts a fresh metrics file at `path` (creating its directory), discarding any existing one.
    pub fn create_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        make_parent(&path)?;
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| BridgeError::io(&path, e))?;
        Ok(Self { path, file })
    }

    /// Opens `run_dir/metrics.jsonl` for appending, creating it if missing. If the last line was
    /// cut short (a crash mid-write), a newline is added so new records start on their own line.
    pub fn open_append(run_dir: impl AsRef<Path>) -> Result<Self> {
        Self::append_file(run_dir.as_ref().join(METRICS_FILE))
    }

    /// Opens the metrics file at `path` for appending; see [`MetricsWriter::open_append`].
    pub fn append_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        make_parent(&path)?;
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| BridgeError::io(&path, e))?;
        let len = file.metadata().map_err(|e| BridgeError::io(&path, e))?.len();
        if len > 0 {
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(len - 1)).map_err(|e| BridgeError::io(&path, e))?;
            file.read_exact(&mut last).map_err(|e| BridgeError::io(&path, e))?;
            if last[0] != b'\n' {
                file.write_all(b"\n").map_err(|e| BridgeError::io(&path, e))?;
            }
        }
        Ok(Self { path, file })
    }

    /// Resumes logging in `run_dir` after a checkpoint taken at `step`: drops the records logged
    /// after `step` (see [`truncate_metrics`]), then opens the file for appending.
    pub fn resume(run_dir: impl AsRef<Path>, step: u64) -> Result<Self> {
        let path = run_dir.as_ref().join(METRICS_FILE);
        truncate_metrics(&path, step)?;
        Self::append_file(path)
    }

    /// The metrics file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `record`, which must serialise to a JSON object, as one line. Non-finite floats are
    /// written as `null` (JSON has no NaN).
    pub fn write<T: Serialize + ?Sized>(&mut self, record: &T) -> Result<()> {
        let value = serde_json::to_value(record)
            .map_err(|e| BridgeError::InvalidInput(format!("metrics record does not serialise: {e}")))?;
        if !value.is_object() {
            return Err(BridgeError::InvalidInput(format!("a metrics record must be a JSON object, got {value}")));
        }
        self.write_line(&value)
    }

    /// Appends `{"step": step, name: value, ...}`. A scalar named `step` overrides the step.
    pub fn write_scalars(&mut self, step: u64, scalars: &[(&str, f64)]) -> Result<()> {
        let mut obj = serde_json::Map::with_capacity(scalars.len() + 1);
        obj.insert("step".into(), step.into());
        for &(k, v) in scalars {
            obj.insert(k.to_owned(), serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number));
        }
        self.write_line(&Value::Object(obj))
    }

    fn write_line(&mut self, value: &Value) -> Result<()> {
        let mut line = serde_json::to_string(value)
            .map_err(|e| BridgeError::InvalidInput(format!("metrics record does not serialise: {e}")))?;
        line.push('\n');
        self.file.write_all(line.as_bytes()).map_err(|e| BridgeError::io(&self.path, e))?;
        self.file.flush().map_err(|e| BridgeError::io(&self.path, e))
    }

    /// Forces written lines to disk (e.g. when a checkpoint is saved).
    pub fn sync(&mut self) -> Result<()> {
        self.file.sync_data().map_err(|e| BridgeError::io(&self.path, e))
    }
}

fn make_parent(path: &Path) -> Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir).map_err(|e| BridgeError::io(dir, e)),
        None => Ok(()),
    }
}

/// One parsed line: its 1-based number, its text and its value.
struct Line<'a> {
    number: usize,
    text: &'a str,
    value: Value,
}

/// Parses the non-blank lines of a metrics file. A last line without a trailing newline that does
/// not parse is taken as a torn write (a crash, or a writer mid-line) and skipped.
fn parse_lines<'a>(path: &Path, bytes: &'a [u8]) -> Result<Vec<Line<'a>>> {
    let ends_with_newline = bytes.last() == Some(&b'\n');
    let raw: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    let n = raw.len();
    let mut out = Vec::new();
    for (i, line) in raw.into_iter().enumerate() {
        let number = i + 1;
        let torn_tail = i + 1 == n && !ends_with_newline;
        let text = match std::str::from_utf8(line) {
            Ok(t) => t,
            Err(_) if torn_tail => continue,
            Err(e) => return Err(BridgeError::data(path, number, None, format!("not UTF-8: {e}"))),
        };
        let text = text.strip_suffix('\r').unwrap_or(text);
        if text.trim().is_empty() {
            continue;
        }
        let value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(_) if torn_tail => continue,
            Err(e) => return Err(BridgeError::data(path, number, None, format!("malformed JSON: {e}"))),
        };
        if !value.is_object() {
            return Err(BridgeError::data(path, number, None, "expected a JSON object"));
        }
        out.push(Line { number, text, value });
    }
    Ok(out)
}

/// Reads every record of the JSONL metrics file at `path`.
///
/// Blank lines are ignored, as is a final line cut short by a crash or a concurrent writer
/// (no trailing newline and not valid JSON). Any other line that is not a JSON object is a
/// [`BridgeError::Data`] naming the file and line.
pub fn read_metrics(path: impl AsRef<Path>) -> Result<Vec<Value>> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| BridgeError::io(path, e))?;
    Ok(parse_lines(path, &bytes)?.into_iter().map(|l| l.value).collect())
}

/// Cuts the metrics file at `path` back to the records logged up to and including `step`, so a
/// run resumed from a checkpoint at `step` does not duplicate the lines written after it.
///
/// Records whose `"step"` is greater than `step` are dropped; records without a `"step"` are kept
/// if they come before the first dropped record, and dropped after it. A torn last line is dropped.
/// The kept lines are written, unchanged, to a temporary file beside `path` which then replaces it
/// by rename, so a crash leaves either the old or the new file. A missing file is left missing.
/// Returns the number of records kept.
///
/// Errors: an unreadable file, a malformed line, or a `"step"` that is not a non-negative number.
pub fn truncate_metrics(path: impl AsRef<Path>, step: u64) -> Result<usize> {
    let path = path.as_ref();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(BridgeError::io(path, e)),
    };
    let lines = parse_lines(path, &bytes)?;
    let mut kept = String::with_capacity(bytes.len());
    let mut count = 0;
    let mut cut = false;
    for line in &lines {
        let keep = match line.value.get("step") {
            None => !cut,
            Some(s) => {
                let after = if let Some(u) = s.as_u64() {
                    u > step
                } else {
                    match s.as_f64() {
                        Some(f) if f >= 0.0 => f > step as f64,
                        _ => {
                            return Err(BridgeError::data(
                                path,
                                line.number,
                                Some("step"),
                                format!("expected a non-negative number, got {s}"),
                            ));
                        }
                    }
                };
                cut |= after;
                !after
            }
        };
        if keep {
            kept.push_str(line.text);
            kept.push('\n');
            count += 1;
        }
    }
    if kept.len() != bytes.len() || kept.as_bytes() != bytes.as_slice() {
        bridge_core::fs::write_atomic(path, kept.as_bytes())?;
        sync_dir(path);
    }
    Ok(count)
}

/// Best effort: make a rename in `path`'s directory durable.
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
}

/// How a [`ProgressReporter`] shows progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, log lines otherwise.
    #[default]
    Auto,
    /// An `indicatif` progress bar on stderr.
    Bar,
    /// A plain line on stderr every N steps.
    Log,
    /// Nothing.
    Hidden,
}

enum Sink {
    Bar(indicatif::ProgressBar),
    Log(Box<dyn Write + Send>),
    Hidden,
}

/// Shows training progress: an `indicatif` bar on a terminal, and plain lines such as
/// `step 10/100 reward=0.41 sft_loss=1.23 [12s, 1.20 s/step, eta 1m48s]` every N steps otherwise.
pub struct ProgressReporter {
    total: u64,
    every: u64,
    start_step: u64,
    started: Instant,
    sink: Sink,
    finished: bool,
}

impl std::fmt::Debug for ProgressReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match self.sink {
            Sink::Bar(_) => "bar",
            Sink::Log(_) => "log",
            Sink::Hidden => "hidden",
        };
        f.debug_struct("ProgressReporter").field("total", &self.total).field("mode", &mode).finish()
    }
}

impl ProgressReporter {
    /// A reporter for a run of `total` steps, choosing a bar or log lines from whether stderr is a
    /// terminal. Logs every 10 steps until [`ProgressReporter::log_every`] says otherwise.
    pub fn new(total: u64) -> Self {
        Self::with_mode(total, ProgressMode::Auto)
    }

    /// A reporter for `total` steps in the given mode.
    pub fn with_mode(total: u64, mode: ProgressMode) -> Self {
        let mode = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Bar,
            ProgressMode::Auto => ProgressMode::Log,
            m => m,
        };
        let sink = match mode {
            ProgressMode::Bar => Sink::Bar(make_bar(total)),
            ProgressMode::Log | ProgressMode::Auto => Sink::Log(Box::new(std::io::stderr())),
            ProgressMode::Hidden => Sink::Hidden,
        };
        Self { total, every: 10, start_step: 0, started: Instant::now(), sink, finished: false }
    }

    /// A reporter that writes log lines to `out` (a log file, or a buffer in tests).
    pub fn to_writer(total: u64, out: impl Write + Send + 'static) -> Self {
        Self {
            total,
            every: 10,
            start_step: 0,
            started: Instant::now(),
            sink: Sink::Log(Box::new(out)),
            finished: false,
        }
    }

    /// Writes a log line every `n` steps (and at the last step); `0` is taken as 1. No effect on a bar.
    pub fn log_every(mut self, n: u64) -> Self {
        self.every = n.max(1);
        self
    }

    /// Starts counting from `step` (a resumed run), so rates and ETAs cover only the new steps.
    pub fn resume_from(mut self, step: u64) -> Self {
        self.start_step = step;
        self.started = Instant::now();
        if let Sink::Bar(bar) = &self.sink {
            bar.set_position(step);
            bar.reset_eta();
        }
        self
    }

    /// Whether progress shows as a bar.
    pub fn is_bar(&self) -> bool {
        matches!(self.sink, Sink::Bar(_))
    }

    /// Reports that `step` is done with these metric values.
    pub fn update(&mut self, step: u64, metrics: &[(&str, f64)]) {
        match &mut self.sink {
            Sink::Bar(bar) => {
                bar.set_position(step);
                bar.set_message(format_metrics(metrics));
            }
            Sink::Log(out) => {
                if step.is_multiple_of(self.every) || step == self.total {
                    let line = log_line(step, self.total, metrics, self.start_step, self.started.elapsed());
                    // Progress output is advisory: a closed stderr must not stop training.
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                }
            }
            Sink::Hidden => {}
        }
    }

    /// Prints `msg` on its own line (above the bar, when there is one).
    pub fn message(&mut self, msg: &str) {
        match &mut self.sink {
            Sink::Bar(bar) => bar.println(msg),
            Sink::Log(out) => {
                let _ = writeln!(out, "{msg}");
                let _ = out.flush();
            }
            Sink::Hidden => {}
        }
    }

    /// Marks the run complete: the bar stays drawn at its last state.
    pub fn finish(&mut self) {
        self.finished = true;
        if let Sink::Bar(bar) = &self.sink {
            bar.finish();
        }
    }
}

impl Drop for ProgressReporter {
    fn drop(&mut self) {
        if !self.finished
            && let Sink::Bar(bar) = &self.sink
        {
            bar.abandon();
        }
    }
}

fn make_bar(total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30.cyan/blue}] {pos}/{len} (eta {eta}) {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// `step 10/100 reward=0.41 sft_loss=1.23 [12s, 1.20 s/step, eta 1m48s]`.
fn log_line(step: u64, total: u64, metrics: &[(&str, f64)], start_step: u64, elapsed: Duration) -> String {
    let mut line = format!("step {step}/{total}");
    let m = format_metrics(metrics);
    if !m.is_empty() {
        line.push(' ');
        line.push_str(&m);
    }
    let done = step.saturating_sub(start_step);
    let secs = elapsed.as_secs_f64();
    line.push_str(&format!(" [{}", format_duration(secs)));
    if done > 0 && secs > 0.0 {
        let per = secs / done as f64;
        let rate = if per >= 1.0 { format!("{per:.2} s/step") } else { format!("{:.1} steps/s", 1.0 / per) };
        line.push_str(&format!(", {rate}, eta {}", format_duration(per * total.saturating_sub(step) as f64)));
    }
    line.push(']');
    line
}

/// `reward=0.41 sft_loss=1.23`.
fn format_metrics(metrics: &[(&str, f64)]) -> String {
    metrics.iter().map(|(k, v)| format!("{k}={}", format_value(*v))).collect::<Vec<_>>().join(" ")
}

/// Four significant digits, trailing zeros trimmed; scientific notation for very large or small values.
fn format_value(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        return format!("{v:.3e}");
    }
    let decimals = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_owned() } else { s }
}

/// `45s`, `3m07s`, `2h05m`.
fn format_duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "?".into();
    }
    let s = secs.round() as u64;
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

#[cfg(test)]
mod tests;
