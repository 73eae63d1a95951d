//! Small AVX-512F pieces the ops' kernels share: the mask of a row's last, partial vector and
//! the split of 32 consecutive values into their even and odd columns (stride-2 sweeps).

use std::arch::x86_64::*;

/// The first `n` lanes of a 16-lane mask (all of them from 16 up).
#[inline]
pub fn mask(n: usize) -> __mmask16 {
    ((1u32 << n.min(16)) - 1) as __mmask16
}

/// Values `2i` and `2i + 1` (`i < 16`) of the 32 values `a ‖ b`: one two-register permute each.
///
/// # Safety
/// The CPU must have AVX-512F.
#[target_feature(enable = "avx512f")]
#[inline]
pub unsafe fn even_odd(a: __m512, b: __m512) -> (__m512, __m512) {
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    (_mm512_permutex2var_ps(a, even, b), _mm512_permutex2var_ps(a, odd, b))
}
