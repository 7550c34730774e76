//! A pool of `f32` buffers reused from one training step to the next.
//!
//! One forward+backward allocates tens of megabytes of activations even for a small model.
//! Fresh allocations of that size are new pages from the kernel on every step: measured on the
//! benchmark model, page faults, zeroing and the TLB shootdowns of freeing them took about a
//! quarter of the step. Buffers taken from the pool keep their pages.
//!
//! [`take`] returns a buffer of the asked length whose contents are unspecified (the values of
//! an earlier use, or zeros): callers overwrite every element. [`take_zeroed`] zero-fills.
//! [`give`] returns a buffer. The pool keeps at most [`MAX_POOLED`] values; what exceeds it is
//! freed.

use std::sync::Mutex;

/// The most values (4 bytes each) the pool keeps: 1 GiB.
const MAX_POOLED: usize = 1 << 28;

struct Pool {
    free: Vec<Vec<f32>>,
    values: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool { free: Vec::new(), values: 0 });

/// A buffer of `len` values with unspecified contents.
pub(crate) fn take(len: usize) -> Vec<f32> {
    let found = POOL.lock().ok().and_then(|mut pool| {
        // best fit: the smallest buffer that holds `len`
        let best = (0..pool.free.len())
            .filter(|&i| pool.free[i].capacity() >= len)
            .min_by_key(|&i| pool.free[i].capacity())?;
        let v = pool.free.swap_remove(best);
        pool.values -= v.capacity();
        Some(v)
    });
    match found {
        Some(mut v) => {
            if v.len() >= len {
                v.truncate(len);
            } else {
                v.resize(len, 0.0);
            }
            v
        }
        None => vec![0.0; len],
    }
}

/// A buffer of `len` zeros.
pub(crate) fn take_zeroed(len: usize) -> Vec<f32> {
    let mut v = take(len);
    v.fill(0.0);
    v
}

/// A copy of `values` in a pooled buffer.
pub(crate) fn copy_of(values: &[f32]) -> Vec<f32> {
    let mut v = take(values.len());
    v.copy_from_slice(values);
    v
}

/// Returns `v` to the pool (or frees it when the pool is full).
pub(crate) fn give(v: Vec<f32>) {
    if v.capacity() == 0 {
        return;
    }
    if let Ok(mut pool) = POOL.lock()
        && pool.values + v.capacity() <= MAX_POOLED
    {
        pool.values += v.capacity();
        pool.free.push(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_have_the_asked_length_and_are_reused() {
        let v = take_zeroed(1000);
        assert_eq!(v.len(), 1000);
        assert!(v.iter().all(|&x| x == 0.0));
        let ptr = v.as_ptr();
        give(v);
        // a smaller request reuses the buffer (other tests may share the pool: look for ours)
        let mut got = Vec::new();
        let mut reused = false;
        for _ in 0..64 {
            let w = take(600);
            assert_eq!(w.len(), 600);
            reused |= w.as_ptr() == ptr;
            got.push(w);
            if reused {
                break;
            }
        }
        assert!(reused, "the returned buffer was not reused");
        let z = take_zeroed(700);
        assert!(z.iter().all(|&x| x == 0.0));
        assert_eq!(copy_of(&[1.0, 2.0]), vec![1.0, 2.0]);
        got.into_iter().for_each(give);
    }
}
