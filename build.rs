//! Records the commit the crate is built from (`BRIDGE_BUILD_COMMIT`, e.g. `89de6d3256fd` or
//! `89de6d3256fd+dirty`; `unknown` outside a git checkout, as in a packaged crate), so that a
//! results file names the code that produced it rather than whatever the checkout holds when
//! the binary runs (`bridge::quickstart::source_commit`).
//!
//! Written by hand rather than with `vergen`: three git calls do not justify its dependency tree.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).filter(|c| !c.is_empty());
    let value = match commit {
        Some(c) => {
            let dirty = git(&["--no-optional-locks", "status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty { format!("{c}+dirty") } else { c }
        }
        None => "unknown".into(),
    };
    println!("cargo:rustc-env=BRIDGE_BUILD_COMMIT={value}");
    // Re-run when HEAD moves (checkout, commit), when the index changes (add, commit) and when a
    // tracked source changes (dirty or clean again). Only paths that exist are named: cargo
    // re-runs a build script on every build while a named path is missing.
    let mut watch: Vec<String> = ["Cargo.toml", "Cargo.lock", "src", "examples"].map(String::from).to_vec();
    if let Ok(dirs) = std::fs::read_dir(".") {
        for d in dirs.flatten() {
            let name = d.file_name().to_string_lossy().into_owned();
            if name.starts_with("bridge-") && d.path().is_dir() {
                watch.push(name);
            }
        }
    }
    for p in ["HEAD", "index", "packed-refs"] {
        watch.extend(git(&["rev-parse", "--git-path", p]));
    }
    if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch.extend(git(&["rev-parse", "--git-path", &head_ref]));
    }
    for p in watch {
        if std::path::Path::new(&p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
}
