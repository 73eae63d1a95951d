//! The shell shared by ops that map every channel plane of an NCHW f32 tensor (or CHW: batch
//! 1, as tract's declutter leaves it) to an output plane: shape checks, the output tensor and
//! the output fact.

use tract_onnx::tract_core::internal::*;

/// Output plane size for an input plane size, `None` when empty.
pub(super) type OutHw<'a> = &'a dyn Fn(usize, usize) -> Option<(usize, usize)>;

/// Checks that `x` is NCHW or CHW (with `channels` channels when given), allocates the output
/// (planes of `out_hw(h, w)`, same rank) and calls `run((h, w), (n, c), input, output)`, which
/// must write every output value.
pub(super) fn eval(
    name: &str,
    x: &TValue,
    channels: Option<usize>,
    out_hw: OutHw,
    run: impl FnOnce((usize, usize), (usize, usize), &[f32], &mut [f32]),
) -> TractResult<TVec<TValue>> {
    let rank = x.rank();
    let (n, c, h, w) = match *x.shape() {
        [n, c, h, w] => (n, c, h, w),
        [c, h, w] => (1, c, h, w),
        _ => bail!("{name}: input is neither NCHW nor CHW: {:?}", x.shape()),
    };
    if let Some(expected) = channels {
        ensure!(c == expected, "{name}: {c} channels, expected {expected}");
    }
    let (oh, ow) = out_hw(h, w).with_context(|| format!("{name}: empty output for {h}×{w}"))?;
    let x = x.try_as_plain_ram()?;
    let x = x.as_slice::<f32>()?;
    let shape: &[usize] = &[n, c, oh, ow];
    // SAFETY: `run` writes every value before the tensor is read.
    let mut out = unsafe { Tensor::uninitialized::<f32>(&shape[4 - rank..])? };
    let mut view = out.try_as_plain_ram_mut()?;
    run((h, w), (n, c), x, view.as_slice_mut::<f32>()?);
    Ok(tvec!(out.into_tvalue()))
}

/// The output fact: the input's shape with `channels` channels (when given) and planes of
/// `out_hw(h, w)`.
pub(super) fn output_facts(
    name: &str,
    input: &TypedFact,
    channels: Option<usize>,
    out_hw: OutHw,
) -> TractResult<TVec<TypedFact>> {
    let s = &input.shape;
    ensure!(matches!(s.rank(), 3 | 4), "{name}: input is neither NCHW nor CHW");
    let r = s.rank();
    let (h, w) = (s[r - 2].to_usize()?, s[r - 1].to_usize()?);
    let (oh, ow) = out_hw(h, w).with_context(|| format!("{name}: empty output"))?;
    let mut out: TVec<TDim> = s.iter().cloned().collect();
    if let Some(c) = channels {
        out[r - 3] = c.to_dim();
    }
    (out[r - 2], out[r - 1]) = (oh.to_dim(), ow.to_dim());
    Ok(tvec!(f32::fact(out)))
}
