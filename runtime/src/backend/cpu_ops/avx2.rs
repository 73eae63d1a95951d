//! Small AVX2 pieces the ops' kernels share: the mask of a row's last, partial vector and the
//! split of 16 consecutive values into their even and odd columns (stride-2 sweeps).

use std::arch::x86_64::*;

/// Lanes `i < n` on (all 8 for `n ≥ 8`), as a mask for `maskload` / `maskstore`.
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
#[inline]
pub unsafe fn mask(n: usize) -> __m256i {
    let n = n.min(8) as i32;
    _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
}

/// Values `2i` and `2i + 1` (`i < 8`) of the 16 values `a ‖ b`: in-lane shuffles give
/// `[a0 a2 b0 b2 | a4 a6 b4 b6]`, then a permute puts the 64-bit lanes in the order 0, 2, 1, 3.
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
#[inline]
pub unsafe fn even_odd(a: __m256, b: __m256) -> (__m256, __m256) {
    let even = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
    let odd = _mm256_shuffle_ps::<0b11_01_11_01>(a, b);
    (lanes_0213(even), lanes_0213(odd))
}

/// The 64-bit lanes of `x` in the order 0, 2, 1, 3.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn lanes_0213(x: __m256) -> __m256 {
    _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(x)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_even_odd_splits() {
        if !(is_x86_feature_detected!("avx2")) {
            return;
        }
        let x: [f32; 16] = std::array::from_fn(|i| i as f32);
        // SAFETY: AVX2 is there (checked above); the loads read 16 values of `x`.
        let (even, odd, masks) = unsafe {
            let (e, o) = even_odd(_mm256_loadu_ps(x.as_ptr()), _mm256_loadu_ps(x.as_ptr().add(8)));
            let (mut even, mut odd) = ([0f32; 8], [0f32; 8]);
            _mm256_storeu_ps(even.as_mut_ptr(), e);
            _mm256_storeu_ps(odd.as_mut_ptr(), o);
            let masks: Vec<[i32; 8]> = (0..10)
                .map(|n| {
                    let mut m = [0i32; 8];
                    _mm256_storeu_si256(m.as_mut_ptr().cast(), mask(n));
                    m
                })
                .collect();
            (even, odd, masks)
        };
        assert_eq!(even, std::array::from_fn(|i| (2 * i) as f32));
        assert_eq!(odd, std::array::from_fn(|i| (2 * i + 1) as f32));
        for (n, m) in masks.iter().enumerate() {
            let want: [i32; 8] = std::array::from_fn(|i| if i < n { -1 } else { 0 });
            assert_eq!(*m, want, "mask({n})");
        }
    }
}
