//! Per-thread scratch buffers of the ops: grown on demand, kept between calls.

/// The first `n` values of `buf`, grown (with zeros) when it is shorter.
pub(crate) fn grow(buf: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if buf.len() < n {
        buf.resize(n, 0.0);
    }
    &mut buf[..n]
}
