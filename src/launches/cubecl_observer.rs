//! cubecl's launch observer: counts every kernel launch of the process (`cuda` builds only).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Launches, in all and by kernel name.
#[derive(Debug, Default)]
pub(super) struct Counts {
    total: AtomicU64,
    by_kernel: Mutex<HashMap<&'static str, u64>>,
}

impl Counts {
    pub(super) fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    pub(super) fn top(&self, n: usize) -> Vec<(String, u64)> {
        let by_kernel = self.by_kernel.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<(String, u64)> = by_kernel
            .iter()
            .map(|(k, &c)| {
                (cubecl_runtime::config::type_name_format(k, cubecl_runtime::config::TypeNameFormatLevel::Short), c)
            })
            .collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }
}

impl cubecl_runtime::logging::LaunchObserver for Counts {
    fn launched(&self, kernel: &'static str) {
        self.total.fetch_add(1, Ordering::Relaxed);
        *self.by_kernel.lock().unwrap_or_else(|e| e.into_inner()).entry(kernel).or_default() += 1;
    }
}
