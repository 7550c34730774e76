//! Files written so that a reader, or a run killed mid-write, never sees half of one.

use crate::error::{BridgeError, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically: into `NAME.tmp` beside it (parent directories created),
/// synced, then renamed over `path`. A reader sees the old file or the complete new one; a kill
/// leaves at most the `.tmp` file, which the next write replaces (checkpoint pruning also
/// removes it). On error the temporary file is removed and the error names the path.
///
/// The one implementation used by checkpoints, HF/PEFT weights, metrics, charts and results.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| BridgeError::io(dir, e))?;
    }
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(|e| BridgeError::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| BridgeError::io(&tmp, e))?;
        f.sync_all().map_err(|e| BridgeError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| BridgeError::io(path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `NAME.tmp` beside `path` (the temporary file of [`write_atomic`]).
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!("{name}.tmp"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_whole_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("bridge-core-fs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("nested/out.json");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second, longer").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second, longer");
        assert!(!temp_path(&path).exists());
        // A directory in the way: an error naming the path, and no temporary left behind.
        let blocked = dir.join("blocked");
        std::fs::create_dir_all(blocked.join("x")).unwrap();
        let e = write_atomic(&blocked, b"x").unwrap_err().to_string();
        assert!(e.contains("blocked"), "{e}");
        assert!(!temp_path(&blocked).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
