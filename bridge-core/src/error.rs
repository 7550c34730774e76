//! The error type shared by every crate of the workspace.
//!
//! Library code returns [`BridgeError`] for anything a user can get wrong (a file, a line, a
//! config field, a weight file, a non-finite loss) and never panics on user input. Each variant
//! names *where* the problem is, so that the message alone is enough to fix it.

use std::path::{Path, PathBuf};

/// Result alias used across the workspace.
pub type Result<T, E = BridgeError> = std::result::Result<T, E>;

/// Every error a `bridge` crate reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A record of a data file is malformed (bad JSON, missing or mistyped field).
    #[error("{}:{line}: {}{message}", path.display(), field_prefix(field.as_deref()))]
    Data {
        /// The data file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The offending field, when one is to blame.
        field: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// A configuration value is invalid (unknown key, out-of-range value, bad combination).
    #[error("config `{field}`: {message}")]
    Config {
        /// Dotted path of the field, e.g. `rl.epsilon_low`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A weight file is truncated, mismatched or of an unsupported kind.
    #[error("weights {}: {message}", path.display())]
    Weights {
        /// The weight file or model directory.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A checkpoint could not be written or read back.
    #[error("checkpoint {}: {message}", path.display())]
    Checkpoint {
        /// The checkpoint directory.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A model is used in a way its configuration does not allow (shape, vocabulary, architecture).
    #[error("model: {0}")]
    Model(String),
    /// Tokenisation or detokenisation failed, or a tokenizer does not fit the model.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A loss, reward or gradient became NaN or infinite.
    #[error("non-finite {quantity} ({value}) at step {step}")]
    NonFinite {
        /// What went non-finite, e.g. `sft_loss`.
        quantity: String,
        /// The offending value.
        value: f64,
        /// The training step.
        step: u64,
    },
    /// An argument handed to a library function is invalid.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The requested device or backend is not available in this build or on this machine.
    #[error("device: {0}")]
    Device(String),
    /// A data-parallel group failed: a rank stopped, or the ranks disagree (see
    /// [`crate::parallel`]).
    #[error("data parallel: {0}")]
    Parallel(String),
}

fn field_prefix(field: Option<&str>) -> String {
    field.map(|f| format!("field `{f}`: ")).unwrap_or_default()
}

impl BridgeError {
    /// An I/O error on `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Self::Io { path: path.as_ref().to_path_buf(), source }
    }

    /// A malformed record at `path:line`, optionally blaming `field`.
    pub fn data(path: impl AsRef<Path>, line: usize, field: Option<&str>, message: impl Into<String>) -> Self {
        Self::Data { path: path.as_ref().to_path_buf(), line, field: field.map(str::to_owned), message: message.into() }
    }

    /// An invalid configuration `field`.
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Config { field: field.into(), message: message.into() }
    }

    /// A problem with the weight file or directory at `path`.
    pub fn weights(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Self::Weights { path: path.as_ref().to_path_buf(), message: message.into() }
    }

    /// A problem with the checkpoint at `path`.
    pub fn checkpoint(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Self::Checkpoint { path: path.as_ref().to_path_buf(), message: message.into() }
    }
}

/// Returns `value` if it is finite, else [`BridgeError::NonFinite`] naming `quantity` and `step`.
///
/// Trainers call this on every scalar they are about to act on (losses, rewards, gradient norms)
/// so that a NaN stops the run before it reaches the weights or a checkpoint.
pub fn ensure_finite(quantity: &str, value: f64, step: u64) -> Result<f64> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(BridgeError::NonFinite { quantity: quantity.to_owned(), value, step })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_error_names_file_line_and_field() {
        let e = BridgeError::data("train.jsonl", 17, Some("answer"), "missing");
        assert_eq!(e.to_string(), "train.jsonl:17: field `answer`: missing");
        let e = BridgeError::data("train.jsonl", 3, None, "expected value at column 1");
        assert_eq!(e.to_string(), "train.jsonl:3: expected value at column 1");
    }

    #[test]
    fn non_finite_is_rejected() {
        assert_eq!(ensure_finite("loss", 1.5, 0).unwrap(), 1.5);
        let e = ensure_finite("sft_loss", f64::NAN, 12).unwrap_err();
        assert!(e.to_string().contains("sft_loss") && e.to_string().contains("step 12"));
        assert!(ensure_finite("x", f64::INFINITY, 0).is_err());
    }

    #[test]
    fn io_error_names_path() {
        let e = BridgeError::io("/nope/config.toml", std::io::Error::from(std::io::ErrorKind::NotFound));
        assert!(e.to_string().starts_with("/nope/config.toml: "));
    }
}
