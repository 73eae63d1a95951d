//! Copies and zero fills of short rows without a `memcpy` or `memset` call.
//!
//! The ops copy many rows of a few dozen values (padded scratch rows, output rows of small
//! planes). A `copy_from_slice` of unknown length is a call into the C library, whose set-up
//! costs as much as the copy at these lengths; fixed-size chunks compile to vector moves.

/// `dst.copy_from_slice(src)` (of any `Copy` values) as fixed-size (vector) moves: 16-value chunks, the last chunk
/// overlapping the previous one, and 8-, 4- or single-value moves below 16.
///
/// Panics if the lengths differ.
#[inline(always)]
pub(crate) fn copy_row<T: Copy>(dst: &mut [T], src: &[T]) {
    assert_eq!(dst.len(), src.len(), "copy_row: lengths differ");
    let n = src.len();
    if n >= 16 {
        for (d, s) in dst.chunks_exact_mut(16).zip(src.chunks_exact(16)) {
            chunk::<16, T>(d, s);
        }
        if !n.is_multiple_of(16) {
            chunk::<16, T>(&mut dst[n - 16..], &src[n - 16..]);
        }
    } else if n >= 8 {
        chunk::<8, T>(dst, src);
        chunk::<8, T>(&mut dst[n - 8..], &src[n - 8..]);
    } else if n >= 4 {
        chunk::<4, T>(dst, src);
        chunk::<4, T>(&mut dst[n - 4..], &src[n - 4..]);
    } else {
        // Written out: a loop would be turned back into a `memcpy` call.
        if n > 0 {
            dst[0] = src[0];
        }
        if n > 1 {
            dst[1] = src[1];
        }
        if n > 2 {
            dst[2] = src[2];
        }
    }
}

/// `dst.fill(0.0)` as fixed-size (vector) stores, as in [`copy_row`].
#[inline(always)]
pub(crate) fn zero_row(dst: &mut [f32]) {
    let n = dst.len();
    if n >= 16 {
        for d in dst.chunks_exact_mut(16) {
            zero::<16>(d);
        }
        zero::<16>(&mut dst[n - 16..]);
    } else if n >= 8 {
        zero::<8>(dst);
        zero::<8>(&mut dst[n - 8..]);
    } else if n >= 4 {
        zero::<4>(dst);
        zero::<4>(&mut dst[n - 4..]);
    } else {
        // Written out: a loop would be turned back into a `memset` call.
        if n > 0 {
            dst[0] = 0.0;
        }
        if n > 1 {
            dst[1] = 0.0;
        }
        if n > 2 {
            dst[2] = 0.0;
        }
    }
}

/// The first `N` values of `dst` set to zero.
#[inline(always)]
fn zero<const N: usize>(dst: &mut [f32]) {
    let d: &mut [f32; N] = (&mut dst[..N]).try_into().expect("N values");
    *d = [0.0; N];
}

/// The first `N` values of `src` into the first `N` of `dst`.
#[inline(always)]
fn chunk<const N: usize, T: Copy>(dst: &mut [T], src: &[T]) {
    let s: &[T; N] = src[..N].try_into().expect("N values");
    let d: &mut [T; N] = (&mut dst[..N]).try_into().expect("N values");
    *d = *s;
}

/// `dst[i] = src[2i]` (`src` holds at least `2·dst.len() - 1` values): pairs, which vectorise
/// as shuffles, and the last value alone.
#[inline(always)]
pub(crate) fn every_other(dst: &mut [f32], src: &[f32]) {
    let pairs = (src.len() / 2).min(dst.len());
    for (d, pair) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *d = pair[0];
    }
    if let Some(d) = dst.get_mut(pairs) {
        *d = src[2 * pairs];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_and_zeroes_every_length_exactly_and_nothing_else() {
        for n in 0..80 {
            let src: Vec<f32> = (0..n).map(|i| i as f32 + 0.5).collect();
            let mut dst = vec![-1f32; n + 2];
            copy_row(&mut dst[1..n + 1], &src);
            assert_eq!(&dst[1..n + 1], &src[..], "length {n}");
            assert_eq!((dst[0], dst[n + 1]), (-1.0, -1.0), "length {n} wrote outside");
            zero_row(&mut dst[1..n + 1]);
            assert!(dst[1..n + 1].iter().all(|&x| x == 0.0), "length {n} not zeroed");
            assert_eq!((dst[0], dst[n + 1]), (-1.0, -1.0), "length {n} zeroed outside");
        }
    }

    #[test]
    fn every_other_takes_the_even_values_from_exact_and_longer_sources() {
        for n in 1..40 {
            for extra in 0..3 {
                let src: Vec<f32> = (0..2 * n - 1 + extra).map(|i| i as f32).collect();
                let mut dst = vec![-1f32; n + 1];
                every_other(&mut dst[..n], &src);
                let want: Vec<f32> = (0..n).map(|i| 2.0 * i as f32).collect();
                assert_eq!(&dst[..n], &want[..], "length {n}, {extra} extra");
                assert_eq!(dst[n], -1.0, "length {n} wrote outside");
            }
        }
    }
}
