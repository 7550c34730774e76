use super::*;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

fn scratch(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "bridge-metrics-test-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[derive(Serialize)]
struct Record {
    step: u64,
    reward: f64,
    phase: &'static str,
}

#[test]
fn jsonl_round_trip() {
    let dir = scratch("roundtrip");
    let mut w = MetricsWriter::create(dir.join("run")).unwrap();
    assert_eq!(w.path(), dir.join("run").join(METRICS_FILE));
    w.write(&json!({"step": 0, "reward": 0.25, "note": "start"})).unwrap();
    w.write(&Record { step: 1, reward: 0.5, phase: "rl" }).unwrap();
    w.write_scalars(2, &[("reward", 0.75), ("sft_loss", f64::NAN)]).unwrap();
    // Each line is on disk as soon as it is written, without dropping or syncing the writer.
    let text = std::fs::read_to_string(w.path()).unwrap();
    assert_eq!(text.lines().count(), 3);
    assert!(text.ends_with('\n'));
    let records = read_metrics(w.path()).unwrap();
    assert_eq!(
        records,
        [
            json!({"step": 0, "reward": 0.25, "note": "start"}),
            json!({"step": 1, "reward": 0.5, "phase": "rl"}),
            json!({"step": 2, "reward": 0.75, "sft_loss": null}),
        ]
    );
    // Only objects are records.
    assert!(matches!(w.write(&[1, 2, 3]), Err(BridgeError::InvalidInput(_))));
    assert!(matches!(w.write(&3.5), Err(BridgeError::InvalidInput(_))));
    // `create` starts over; `open_append` continues.
    drop(w);
    let mut w = MetricsWriter::open_append(dir.join("run")).unwrap();
    w.write_scalars(3, &[("reward", 1.0)]).unwrap();
    assert_eq!(read_metrics(w.path()).unwrap().len(), 4);
    let w = MetricsWriter::create(dir.join("run")).unwrap();
    assert!(read_metrics(w.path()).unwrap().is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn malformed_lines_name_file_and_line() {
    let dir = scratch("malformed");
    let path = dir.join(METRICS_FILE);
    std::fs::write(&path, "{\"step\": 1}\n\n{\"step\": 2,}\n{\"step\": 3}\n").unwrap();
    let err = read_metrics(&path).unwrap_err();
    match &err {
        BridgeError::Data { path: p, line, .. } => {
            assert_eq!(p, &path);
            assert_eq!(*line, 3);
        }
        other => panic!("expected a Data error, got {other}"),
    }
    assert!(err.to_string().starts_with(&format!("{}:3: malformed JSON", path.display())), "{err}");

    std::fs::write(&path, "{\"step\": 1}\n[1, 2]\n").unwrap();
    assert!(matches!(read_metrics(&path), Err(BridgeError::Data { line: 2, .. })));
    std::fs::write(&path, b"{\"step\": 1}\n\xff\xfe\n").unwrap();
    assert!(matches!(read_metrics(&path), Err(BridgeError::Data { line: 2, .. })));
    assert!(matches!(read_metrics(dir.join("absent.jsonl")), Err(BridgeError::Io { .. })));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn torn_last_line_is_ignored_when_reading_and_repaired_when_appending() {
    let dir = scratch("torn");
    let path = dir.join(METRICS_FILE);
    std::fs::write(&path, "{\"step\": 1}\n{\"step\": 2, \"rew").unwrap();
    assert_eq!(read_metrics(&path).unwrap(), [json!({"step": 1})]);
    let mut w = MetricsWriter::open_append(&dir).unwrap();
    w.write_scalars(2, &[("reward", 0.5)]).unwrap();
    // The torn line is now terminated and so is reported, while the new record stands on its own line.
    assert!(matches!(read_metrics(&path), Err(BridgeError::Data { line: 2, .. })));
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().nth(2), Some("{\"reward\":0.5,\"step\":2}"));
    // A complete last line without newline is a record.
    std::fs::write(&path, "{\"step\": 1}\n{\"step\": 2}").unwrap();
    assert_eq!(read_metrics(&path).unwrap().len(), 2);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn resume_truncates_to_checkpoint_step() {
    let dir = scratch("resume");
    let mut w = MetricsWriter::create(&dir).unwrap();
    w.write(&json!({"event": "start", "config": "a"})).unwrap();
    for step in 1..=10u64 {
        w.write_scalars(step, &[("reward", step as f64 / 10.0)]).unwrap();
        if step % 5 == 0 {
            w.write(&json!({"step": step, "eval_accuracy": 0.5})).unwrap();
        }
    }
    w.write(&json!({"event": "crash"})).unwrap();
    drop(w);
    let path = dir.join(METRICS_FILE);
    let before = std::fs::read_to_string(&path).unwrap();

    // Resuming from the checkpoint at step 5: steps 6..=10 and the later step-less line go.
    let mut w = MetricsWriter::resume(&dir, 5).unwrap();
    let kept = read_metrics(&path).unwrap();
    assert_eq!(kept.len(), 1 + 5 + 1);
    assert_eq!(kept[0], json!({"event": "start", "config": "a"}));
    assert!(kept.iter().all(|r| r.get("step").and_then(Value::as_u64).is_none_or(|s| s <= 5)));
    assert_eq!(kept.last().unwrap(), &json!({"step": 5, "eval_accuracy": 0.5}));
    // Kept lines are byte-for-byte the originals.
    let after = std::fs::read_to_string(&path).unwrap();
    assert!(before.starts_with(&after));
    for step in 6..=7u64 {
        w.write_scalars(step, &[("reward", 0.0)]).unwrap();
    }
    let steps: Vec<u64> = read_metrics(&path).unwrap().iter().filter_map(|r| r["step"].as_u64()).collect();
    assert_eq!(steps, [1, 2, 3, 4, 5, 5, 6, 7]);
    drop(w);

    // No temporary file left; resuming beyond the last step changes nothing.
    let snapshot = std::fs::read(&path).unwrap();
    assert_eq!(truncate_metrics(&path, 100).unwrap(), 9);
    assert_eq!(std::fs::read(&path).unwrap(), snapshot);
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, [std::ffi::OsString::from(METRICS_FILE)]);
    assert_eq!(truncate_metrics(&path, 0).unwrap(), 1);

    // Resuming where no log exists yet just starts one.
    let fresh = dir.join("fresh");
    assert_eq!(truncate_metrics(fresh.join(METRICS_FILE), 3).unwrap(), 0);
    let w = MetricsWriter::resume(&fresh, 3).unwrap();
    assert!(read_metrics(w.path()).unwrap().is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn truncation_rejects_bad_steps_and_malformed_lines_without_touching_the_file() {
    let dir = scratch("badstep");
    let path = dir.join(METRICS_FILE);
    let text = "{\"step\": 1}\n{\"step\": \"two\"}\n{\"step\": 3}\n";
    std::fs::write(&path, text).unwrap();
    let err = truncate_metrics(&path, 1).unwrap_err();
    assert!(matches!(&err, BridgeError::Data { line: 2, field: Some(f), .. } if f == "step"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    std::fs::write(&path, "{\"step\": 1}\nnot json\n").unwrap();
    assert!(matches!(MetricsWriter::resume(&dir, 1), Err(BridgeError::Data { line: 2, .. })));
    // Fractional steps compare numerically.
    std::fs::write(&path, "{\"step\": 1.5}\n{\"step\": 2.5}\n").unwrap();
    assert_eq!(truncate_metrics(&path, 2).unwrap(), 1);
    let _ = std::fs::remove_dir_all(dir);
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn progress_logs_every_n_steps_and_the_last() {
    let out = Shared::default();
    let mut p = ProgressReporter::to_writer(25, out.clone()).log_every(10);
    assert!(!p.is_bar());
    for step in 1..=25u64 {
        p.update(step, &[("reward", 0.41), ("sft_loss", 1.23456), ("kl", 2.5e-5)]);
    }
    p.message("checkpoint saved");
    p.finish();
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].starts_with("step 10/25 reward=0.41 sft_loss=1.235 kl=2.500e-5 ["), "{}", lines[0]);
    assert!(lines[1].starts_with("step 20/25 "));
    assert!(lines[2].starts_with("step 25/25 "));
    assert_eq!(lines[3], "checkpoint saved");
}

#[test]
fn progress_modes_never_panic() {
    for mode in [ProgressMode::Hidden, ProgressMode::Bar, ProgressMode::Log, ProgressMode::Auto] {
        let mut p = ProgressReporter::with_mode(3, mode).resume_from(1).log_every(0);
        p.update(2, &[("x", f64::NAN)]);
        p.update(3, &[]);
        p.message("done");
        p.finish();
    }
    assert!(ProgressReporter::with_mode(1, ProgressMode::Bar).is_bar());
    // Dropped unfinished: the bar is abandoned, not left in a broken state.
    drop(ProgressReporter::with_mode(5, ProgressMode::Bar));
}

#[test]
fn value_and_duration_formatting() {
    assert_eq!(format_value(0.41), "0.41");
    assert_eq!(format_value(1.23456), "1.235");
    assert_eq!(format_value(-12.0), "-12");
    assert_eq!(format_value(0.0), "0");
    assert_eq!(format_value(123456.0), "1.235e5");
    assert_eq!(format_value(f64::NAN), "NaN");
    assert_eq!(format_duration(45.2), "45s");
    assert_eq!(format_duration(187.0), "3m07s");
    assert_eq!(format_duration(7500.0), "2h05m");
    let line = log_line(50, 100, &[("reward", 0.5)], 0, Duration::from_secs(100));
    assert_eq!(line, "step 50/100 reward=0.5 [1m40s, 2.00 s/step, eta 1m40s]");
    let line = log_line(10, 100, &[], 10, Duration::from_millis(10));
    assert_eq!(line, "step 10/100 [0s]");
}
