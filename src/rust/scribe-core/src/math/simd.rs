//! Runtime dispatch to fused multiply-add vector code for hot loops.
//!
//! The package is built for baseline x86-64 (SSE2, no FMA), which it must
//! run on; where the CPU has AVX2 and FMA, loops written generically over
//! [`Fma`] (as `#[inline(always)]` functions) are instantiated a second
//! time inside a `#[target_feature(enable = "avx2,fma")]` function with
//! [`Fused`] and chosen at run time by [`has_fma`].
//! The two versions round differently in the last bit (a fused
//! multiply-add rounds once), so results are reproducible on one machine,
//! for any number of threads, but not bit-identical across CPUs.

/// How a loop body computes `y + a·x`.
pub trait Fma: Copy {
    fn madd(self, a: f64, x: f64, y: f64) -> f64;
}

/// Multiply, then add (baseline x86-64).
#[derive(Clone, Copy)]
pub struct Plain;

/// One fused multiply-add (only inside functions compiled with FMA).
#[derive(Clone, Copy)]
pub struct Fused;

impl Fma for Plain {
    #[inline(always)]
    fn madd(self, a: f64, x: f64, y: f64) -> f64 {
        y + a * x
    }
}

impl Fma for Fused {
    #[inline(always)]
    fn madd(self, a: f64, x: f64, y: f64) -> f64 {
        a.mul_add(x, y)
    }
}

/// Whether this CPU runs the AVX2 + FMA versions.
#[inline]
pub fn has_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `y += a · x`, element-wise, inside a loop compiled for `m`.
#[inline(always)]
pub fn axpy<M: Fma>(m: M, a: f64, x: &[f64], y: &mut [f64]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi = m.madd(a, *xi, *yi);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_versions_compute_y_plus_ax() {
        let x: Vec<f64> = (0..37).map(|i| i as f64 * 0.25 - 3.0).collect();
        let mut y1: Vec<f64> = (0..37).map(|i| (i as f64).sin()).collect();
        let mut y2 = y1.clone();
        let want: Vec<f64> = y1.iter().zip(&x).map(|(y, x)| y + 1.5 * x).collect();
        axpy(Plain, 1.5, &x, &mut y1);
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn fused(x: &[f64], y: &mut [f64]) {
            axpy(Fused, 1.5, x, y);
        }
        if has_fma() {
            // SAFETY: the CPU has AVX2 and FMA.
            unsafe { fused(&x, &mut y2) }
        } else {
            axpy(Plain, 1.5, &x, &mut y2);
        }
        for ((a, b), w) in y1.iter().zip(&y2).zip(&want) {
            assert!((a - w).abs() < 1e-14 && (b - w).abs() < 1e-14);
        }
    }
}
