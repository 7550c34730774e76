//! A safe, bounds-checked `f32` matrix product over host slices for the CPU engines (the fused
//! training engine and the host decoding engine), on the `gemm` crate's kernels (the ones
//! burn-flex multiplies with).
//!
//! This is the workspace's one module with `unsafe` code of its own (the other `unsafe` is a call,
//! burn's `Graph::replay` in `generate/graph.rs`), for two things:
//! - `gemm::gemm` takes raw pointers and strides. [`matmul`] checks, before the call, that
//!   every element the product reads or writes lies in its slice; the destination is a `&mut`
//!   borrow, so it aliases no input.
//! - [`run_vectorised`] calls a kernel through a `#[target_feature]` function (AVX-512 or
//!   AVX2+FMA) after checking at run time that the CPU has those features, so that the loops
//!   the kernel inlines are compiled for them (the crate is built for baseline x86-64, SSE2).
//!   Rust never contracts `a·b + c` into an FMA on its own, so the results are the same bits
//!   on every path.
#![allow(unsafe_code)]

/// Products of at least this many multiply-adds (`m·n·k`) run on rayon's threads; below it, the
/// hand-off costs more than it saves (measured on the tiny benchmark model, 2 threads).
const PARALLEL_MIN_WORK: usize = 1 << 20;

/// `dst[m, n] (+)= lhs[m, k] · rhs[k, n]`, all row-major; `accumulate` adds to `dst` instead of
/// overwriting it; `parallel` lets a large product use rayon's threads (callers that already
/// run on several threads pass `false`).
///
/// Each output element is one `k`-long dot product in a fixed order whatever the thread count
/// (gemm splits the output into blocks, never the `k` sum), so results do not depend on rayon's
/// pool size.
///
/// # Panics
/// When a slice is shorter than its shape (a bug in the engine, which sizes its own buffers).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    dst: &mut [f32],
    lhs: &[f32],
    rhs: &[f32],
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
    parallel: bool,
) {
    matmul_view(dst, n, View::rows(lhs, k), View::rows(rhs, n), m, k, n, accumulate, 1.0, parallel);
}

/// A read-only strided matrix operand: element `(i, j)` is `data[i·rs + j·cs]`, so that a
/// row-major block of a wider buffer (`rs` = the buffer's width) and a transposed matrix
/// (`rs = 1`, `cs` = its width) go to the kernel without a copy.
#[derive(Clone, Copy, Debug)]
pub(crate) struct View<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) rs: usize,
    pub(crate) cs: usize,
}

impl<'a> View<'a> {
    /// The row-major matrix `data` with `cols` columns (rows `cols` apart).
    pub(crate) fn rows(data: &'a [f32], cols: usize) -> Self {
        Self { data, rs: cols, cs: 1 }
    }

    /// The row-major block that starts at `data[0]` with rows `stride` apart.
    pub(crate) fn strided(data: &'a [f32], stride: usize) -> Self {
        Self { data, rs: stride, cs: 1 }
    }

    /// The transpose of this view (no copy).
    pub(crate) fn t(self) -> Self {
        Self { data: self.data, rs: self.cs, cs: self.rs }
    }

    /// Whether a `rows × cols` matrix read through this view stays inside `data`.
    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// `dst[m, n] (+)= beta · lhs[m, k] · rhs[k, n]` for strided operands ([`View`]); `dst` is
/// row-major with rows `dst_rs ≥ n` apart (a block of a wider buffer). Same ordering guarantees
/// as [`matmul`].
///
/// # Panics
/// When an operand does not fit its slice, or `dst_rs < n` (rows that would overlap).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_view(
    dst: &mut [f32],
    dst_rs: usize,
    lhs: View<'_>,
    rhs: View<'_>,
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
    beta: f32,
    parallel: bool,
) {
    let dst_fits = m == 0 || n == 0 || (dst_rs >= n && (m - 1) * dst_rs + n <= dst.len());
    assert!(
        dst_fits && lhs.fits(m, k) && rhs.fits(k, n),
        "matmul_view operands too short: dst {} ({m}×{n}, rows {dst_rs} apart), lhs {} ({m}×{k}, {}/{}), rhs {} ({k}×{n}, {}/{})",
        dst.len(),
        lhs.data.len(),
        lhs.rs,
        lhs.cs,
        rhs.data.len(),
        rhs.rs,
        rhs.cs
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst.chunks_mut(dst_rs.max(1)).take(m).for_each(|row| row[..n].fill(0.0));
        }
        return;
    }
    let parallelism = if parallel && m * n * k >= PARALLEL_MIN_WORK && rayon::current_num_threads() > 1 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the largest offsets touched are (m−1)·dst_rs + (n−1) < dst.len() in `dst`, and
    // (m−1)·rs + (k−1)·cs, (k−1)·rs + (n−1)·cs in `lhs`, `rhs`; the assertion bounds each by its
    // slice's length. Distinct (i, j) of `dst` are distinct elements because `dst_rs ≥ n`, and
    // `dst` is a unique borrow, so it aliases neither input; the inputs are only read.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0f32,
            beta,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// A computation to compile for the best vector extension the CPU has ([`run_vectorised`]).
/// Implementations mark `run` and everything hot it calls `#[inline(always)]`: only code inlined
/// into the `#[target_feature]` function is compiled for its features.
pub(crate) trait VectorKernel {
    /// What the kernel returns.
    type Output;
    /// The computation.
    fn run(self) -> Self::Output;
}

/// A closure as a [`VectorKernel`]: its body is inlined into the `#[target_feature]` function
/// (it is called exactly once there), so its loops are compiled for the detected features.
struct Closure<F>(F);

impl<R, F: FnOnce() -> R> VectorKernel for Closure<F> {
    type Output = R;
    #[inline(always)]
    fn run(self) -> R {
        (self.0)()
    }
}

/// Runs `f` compiled for the best vector extension the CPU has (see [`run_vectorised`]); mark
/// the helpers its loops call `#[inline(always)]`.
pub(crate) fn vectorised<R>(f: impl FnOnce() -> R) -> R {
    run_vectorised(Closure(f))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,bmi1,bmi2,lzcnt,popcnt,f16c")]
fn run_x86_v4<K: VectorKernel>(kernel: K) -> K::Output {
    kernel.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,bmi1,bmi2,lzcnt,popcnt,f16c")]
fn run_x86_v3<K: VectorKernel>(kernel: K) -> K::Output {
    kernel.run()
}

/// Runs `kernel` compiled for AVX-512 when the CPU has it, else for AVX2+FMA when it has those,
/// else for the build's baseline.
pub(crate) fn run_vectorised<K: VectorKernel>(kernel: K) -> K::Output {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let v3 = has!("avx2")
            && has!("fma")
            && has!("bmi1")
            && has!("bmi2")
            && has!("lzcnt")
            && has!("popcnt")
            && has!("f16c");
        if v3 && has!("avx512f") && has!("avx512vl") && has!("avx512bw") && has!("avx512dq") {
            // SAFETY: every feature `run_x86_v4` is compiled for was detected on this CPU.
            return unsafe { run_x86_v4(kernel) };
        }
        if v3 {
            // SAFETY: every feature `run_x86_v3` is compiled for was detected on this CPU.
            return unsafe { run_x86_v3(kernel) };
        }
    }
    kernel.run()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(lhs: &[f32], rhs: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| lhs[i * k + p] * rhs[p * n + j]).sum();
            }
        }
        out
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len).map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0).collect()
    }

    #[test]
    fn matches_the_naive_product_and_accumulates() {
        for &(m, k, n) in &[(1, 1, 1), (3, 5, 7), (64, 128, 384), (17, 33, 9), (128, 128, 1024)] {
            let (a, b) = (values(m * k, 1), values(k * n, 2));
            let want = naive(&a, &b, m, k, n);
            for parallel in [false, true] {
                let mut got = vec![f32::NAN; m * n];
                matmul(&mut got, &a, &b, m, k, n, false, parallel);
                let err = got.iter().zip(&want).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
                assert!(err <= 1e-4 * k as f32, "{m}×{k}×{n}: {err}");
                // accumulate: dst + product
                let mut acc = vec![1.5f32; m * n];
                matmul(&mut acc, &a, &b, m, k, n, true, parallel);
                let err = acc.iter().zip(&want).map(|(x, y)| (x - 1.5 - y).abs()).fold(0.0f32, f32::max);
                assert!(err <= 1e-4 * k as f32, "accumulate {m}×{k}×{n}: {err}");
            }
        }
    }

    #[test]
    fn strided_views_match_the_naive_product() {
        // lhs: the transpose of a [k, m] matrix; rhs: a [k, n] block of a [k, n + 3] buffer;
        // dst: an [m, n] block of an [m, n + 5] buffer, whose other columns must stay untouched.
        for &(m, k, n) in &[(1, 1, 1), (5, 3, 4), (64, 32, 64), (33, 128, 17)] {
            let a_t = values(k * m, 5); // [k, m]
            let a: Vec<f32> = (0..m * k).map(|i| a_t[(i % k) * m + i / k]).collect(); // [m, k]
            let wide = n + 3;
            let b_wide = values(k * wide, 6);
            let b: Vec<f32> = (0..k * n).map(|i| b_wide[(i / n) * wide + i % n]).collect();
            let want = naive(&a, &b, m, k, n);
            let dst_rs = n + 5;
            for (accumulate, beta) in [(false, 1.0f32), (true, 0.5)] {
                let mut dst = vec![2.0f32; m * dst_rs];
                matmul_view(
                    &mut dst,
                    dst_rs,
                    View::rows(&a_t, m).t(),
                    View::strided(&b_wide, wide),
                    m,
                    k,
                    n,
                    accumulate,
                    beta,
                    true,
                );
                for i in 0..m {
                    for j in 0..dst_rs {
                        let got = dst[i * dst_rs + j];
                        let expect = if j < n {
                            if accumulate { 2.0 + beta * want[i * n + j] } else { want[i * n + j] }
                        } else {
                            2.0
                        };
                        assert!((got - expect).abs() <= 1e-4 * k as f32, "{m}×{k}×{n} ({i},{j}): {got} vs {expect}");
                    }
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "too short")]
    fn overlapping_destination_rows_are_refused() {
        let mut dst = vec![0.0f32; 8];
        matmul_view(&mut dst, 1, View::rows(&[1.0; 4], 2), View::rows(&[1.0; 4], 2), 2, 2, 2, false, 1.0, false);
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let (m, k, n) = (128, 128, 1024); // above the parallel threshold
        let (a, b) = (values(m * k, 3), values(k * n, 4));
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let mut out = vec![0.0f32; m * n];
                matmul(&mut out, &a, &b, m, k, n, false, true);
                out
            })
        };
        assert_eq!(run(1), run(3));
    }

    #[test]
    #[should_panic(expected = "too short")]
    fn short_operands_are_refused_before_the_kernel_runs() {
        let mut dst = vec![0.0f32; 4];
        matmul(&mut dst, &[1.0; 6], &[1.0; 5], 2, 3, 2, false, false);
    }
}
