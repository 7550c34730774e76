//! Kernel launches counted where the backend can tell: on cubecl backends (the `cuda` build),
//! through cubecl's launch observer (`cubecl_runtime::logging::LaunchObservation`), which is
//! told of every kernel the process issues, on the issuing thread, before it is submitted.
//!
//! A replayed CUDA graph issues no kernel through cubecl: its kernels were observed once, when
//! the capture recorded them, and each replay is one `cuGraphLaunch`. The GPU benchmark
//! (`bench::decode_launches`) therefore counts three things per decode step: the eager tensor
//! engine's launches, the graph engine's step run eagerly (= the kernels one replay runs), and
//! what the graph engine still issues per step around its replay (input refreshes).
//!
//! On other backends (flex: no kernels, each tensor operation runs as host code) nothing is
//! counted and [`LaunchCounter::start`] returns `None`.

/// Counts kernel launches while it lives (one process-wide observer; see the [module docs](self)).
#[derive(Debug)]
pub struct LaunchCounter {
    #[cfg(feature = "cuda")]
    counts: std::sync::Arc<cubecl_observer::Counts>,
    #[cfg(feature = "cuda")]
    _observation: cubecl_runtime::logging::LaunchObservation,
}

impl LaunchCounter {
    /// Starts counting the kernel launches of `device`'s backend, or `None` when the backend
    /// cannot tell (anything but a cubecl device in a `cuda` build).
    pub fn start(device: &burn::tensor::Device) -> Option<Self> {
        #[cfg(feature = "cuda")]
        {
            if format!("{device:?}").to_lowercase().contains("cuda") {
                let counts = std::sync::Arc::new(cubecl_observer::Counts::default());
                let _observation = cubecl_runtime::logging::LaunchObservation::new(counts.clone());
                return Some(Self { counts, _observation });
            }
            None
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = device;
            None
        }
    }

    /// Launches counted so far.
    pub fn total(&self) -> u64 {
        #[cfg(feature = "cuda")]
        {
            self.counts.total()
        }
        #[cfg(not(feature = "cuda"))]
        {
            0
        }
    }

    /// The `n` most launched kernels so far, as `(name, launches)`, most first.
    pub fn top(&self, n: usize) -> Vec<(String, u64)> {
        #[cfg(feature = "cuda")]
        {
            self.counts.top(n)
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = n;
            Vec::new()
        }
    }
}

#[cfg(feature = "cuda")]
mod cubecl_observer;

#[cfg(test)]
mod tests {
    use super::*;

    /// flex runs no kernels: nothing to count, said as `None` rather than a zero.
    #[test]
    fn flex_has_no_launch_counter() {
        assert!(LaunchCounter::start(&burn::tensor::Device::flex()).is_none());
    }
}
