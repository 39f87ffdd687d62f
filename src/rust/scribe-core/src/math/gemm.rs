//! Dense row-major matrix products on faer's GEMM, shared by the batched
//! Laplace algebra and the neural networks of `nn`.

use faer::{Accum, MatMut, MatRef, Par};

/// The first `rows · cols` values of `s` as a row-major `rows × cols` matrix.
pub fn view(s: &[f64], rows: usize, cols: usize) -> MatRef<'_, f64> {
    MatRef::from_row_major_slice(&s[..rows * cols], rows, cols)
}

/// `dst = alpha · a b` (or `dst += alpha · a b` with `add`), row-major.
pub fn gemm(dst: &mut [f64], a: MatRef<'_, f64>, b: MatRef<'_, f64>, add: bool, alpha: f64) {
    let (m, n) = (a.nrows(), b.ncols());
    if m == 0 || n == 0 {
        return;
    }
    let d = MatMut::from_row_major_slice_mut(&mut dst[..m * n], m, n);
    let beta = if add { Accum::Add } else { Accum::Replace };
    faer::linalg::matmul::matmul(d, beta, a, b, alpha, Par::Seq);
    clear_upper_simd_state();
}

/// GEMM's AVX kernels return with the upper halves of the YMM registers in
/// use; the SSE code that follows (glibc's `log` and `exp`, our own loops
/// built for baseline x86-64) then pays a state-transition penalty on every
/// instruction: measured 15x slower logs after one product. VZEROUPPER
/// clears that state.
#[inline]
pub fn clear_upper_simd_state() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX, which is all VZEROUPPER needs; no value
        // lives in the upper register halves between Rust statements.
        unsafe { std::arch::x86_64::_mm256_zeroupper() }
    }
}
