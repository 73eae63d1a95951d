//! The patching passes: find the convolutions hydrant's ops compute better than tract and
//! replace them, with what they can absorb (a residual `Add`, a ReLU or ReLU6), in a typed
//! model.
//!
//! 1×1 convolutions are matched by [`patch_pointwise`] on the typed model *before* tract's
//! declutter: declutter turns an unpadded stride-1 1×1 `Conv` into an `EinSum` plus a bias
//! `Add` (then a packed matrix product), after which the convolution, its bias and the clamps
//! that follow are separate ops spread over reshapes. Before declutter they are still one `Conv`
//! node followed by the ONNX `Add` and `Clip` (`Max`, `Min`) nodes, the pattern [`patch`] already
//! matches for the other convolutions. Every other convolution is matched by [`patch`] after
//! declutter (which has folded what it can into them).

use super::depthwise::DepthwiseConv;
use super::im2col_conv::{ConvShape, Im2colConv};
use super::maxpool::MaxPool2d;
use super::pointwise::PointwiseConv;
use super::winograd::{choose_tile, WinogradConv};
use super::{Activation, Isa};
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cast::Cast;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, MaxPool, PaddingSpec, PoolSpec};
use tract_onnx::tract_core::ops::math::{Add, Max, Min};
use tract_onnx::tract_core::ops::nn::DataFormat;

/// Fewest input and output channels for which a convolution is worth replacing.
const MIN_CHANNELS: usize = 16;

/// Input channels from which strided 3×3 convolutions stay with tract unless the kernels are
/// AVX-512 (see `conv_patch`).
const STRIDED_3X3_TRACT_CHANNELS: usize = 64;

/// Replaces every eligible convolution of `model` (decluttered, concrete shapes); returns how
/// many were replaced. Ops it does not recognise are left to tract.
pub fn patch(model: &mut TypedModel, isa: Isa) -> TractResult<usize> {
    Ok(patch_nodes::<Conv>(model, isa, conv_patch)?
        + patch_nodes::<MaxPool>(model, isa, maxpool_patch)?)
}

/// A patch replacing 2-D f32 `MaxPool` node `id` (no index output, no dilation, stride 1 or
/// 2) by a [`MaxPool2d`], or `None`.
fn maxpool_patch(model: &TypedModel, id: usize, isa: Isa) -> TractResult<Option<TypedModelPatch>> {
    let node = model.node(id);
    let Some(pool) = node.op_as::<MaxPool>() else { return Ok(None) };
    let spec = &pool.pool_spec;
    let (Some(rank), Some(stride), Some(pads), &[kh, kw]) = (
        plane_rank(spec),
        square_stride(spec),
        explicit_pads(&spec.padding),
        &spec.kernel_shape[..],
    ) else {
        return Ok(None);
    };
    let x = model.outlet_fact(node.inputs[0])?;
    let eligible = pool.with_index_outputs.is_none()
        && pads[0].max(pads[2]) < kh
        && pads[1].max(pads[3]) < kw
        && x.datum_type == f32::datum_type()
        && x.shape.as_concrete().is_some_and(|s| s.len() == rank);
    if !eligible {
        return Ok(None);
    }
    let op = MaxPool2d { kernel: (kh, kw), stride, pads, isa };
    let mut patch = TypedModelPatch::default();
    let input = patch.tap_model(model, node.inputs[0])?;
    let wire = patch.wire_node(format!("{}.hydrant", node.name), op, &[input])?[0];
    patch.shunt_outside(model, OutletId::new(id, 0), wire)?;
    Ok(Some(patch))
}

/// The input rank of a 2-D NCHW or CHW (batch 1, after declutter) pooling or convolution.
fn plane_rank(spec: &PoolSpec) -> Option<usize> {
    match spec.data_format {
        DataFormat::NCHW => Some(4),
        DataFormat::CHW => Some(3),
        _ => None,
    }
}

/// The stride of an undilated 2-D window with the same stride (1 or 2) on both axes.
fn square_stride(spec: &PoolSpec) -> Option<usize> {
    let ones = |v: &Option<TVec<usize>>| v.as_ref().is_none_or(|v| v.iter().all(|&x| x == 1));
    let stride = match &spec.strides {
        None => 1,
        Some(s) if s.len() == 2 && s[0] == s[1] => s[0],
        Some(_) => return None,
    };
    (ones(&spec.dilations) && (1..=2).contains(&stride)).then_some(stride)
}

/// Replaces every unpadded stride-1 1×1 convolution of `model` (typed, not yet decluttered,
/// concrete shapes) by a [`PointwiseConv`], with the residual `Add` and clamps that follow it;
/// returns how many were replaced.
pub fn patch_pointwise(model: &mut TypedModel, isa: Isa) -> TractResult<usize> {
    patch_nodes::<Conv>(model, isa, pointwise_patch)
}

/// Applies `patch_for` to every node of `model` whose op is an `O`; returns how many it
/// replaced.
fn patch_nodes<O: Op>(
    model: &mut TypedModel,
    isa: Isa,
    patch_for: impl Fn(&TypedModel, usize, Isa) -> TractResult<Option<TypedModelPatch>>,
) -> TractResult<usize> {
    let nodes: Vec<usize> = model.nodes().iter().filter(|n| n.op_is::<O>()).map(|n| n.id).collect();
    let mut replaced = 0;
    for id in nodes {
        if let Some(p) = patch_for(model, id, isa)? {
            p.apply(model)?;
            replaced += 1;
        }
    }
    if replaced > 0 {
        model.compact()?;
    }
    Ok(replaced)
}

/// A patch replacing 1×1 conv node `id` (stride 1, no padding, with a bias) and a following
/// residual `Add` and clamps by a [`PointwiseConv`], or `None`.
fn pointwise_patch(
    model: &TypedModel,
    id: usize,
    isa: Isa,
) -> TractResult<Option<TypedModelPatch>> {
    let node = model.node(id);
    let Some(conv) = node.op_as::<Conv>() else { return Ok(None) };
    let Some(shape) = plain_conv(conv) else { return Ok(None) };
    let ConvShape { cin, cout, kernel: kernel_hw, stride, pads } = shape;
    if kernel_hw != (1, 1) || stride != (1, 1) || pads != [0; 4] || node.inputs.len() != 3 {
        return Ok(None);
    }
    let x = model.outlet_fact(node.inputs[0])?;
    let Some(&[_, _, _, _]) = x.shape.as_concrete() else { return Ok(None) };
    if x.datum_type != f32::datum_type() {
        return Ok(None);
    }
    let (Some(kernel), Some(bias)) = (konst(model, node.inputs[1]), konst(model, node.inputs[2]))
    else {
        return Ok(None);
    };
    if kernel.shape() != [cout, cin, 1, 1] {
        return Ok(None);
    }
    let Some(bias) = bias_values(&bias, cout)? else { return Ok(None) };
    let (residual, last) = residual_add(model, id)?;
    let (act, last) = take_clamp(&clamps(model, last)?, last, |_| true);
    let kernel = kernel.try_as_plain_ram()?;
    let kernel = kernel.as_slice::<f32>()?;
    let op = PointwiseConv::new(cin, cout, kernel, Some(&bias), residual.is_some(), act, isa)?;
    let mut patch = TypedModelPatch::default();
    let mut inputs = tvec![patch.tap_model(model, node.inputs[0])?];
    if let Some(r) = residual {
        inputs.push(patch.tap_model(model, r)?);
    }
    let wire = patch.wire_node(format!("{}.hydrant", node.name), op, &inputs)?[0];
    patch.shunt_outside(model, last, wire)?;
    Ok(Some(patch))
}

/// The other input of an `Add` that is the sole consumer of conv node `id`'s output, when it
/// has the output's type and shape, and the outlet the fused chain ends at so far.
fn residual_add(model: &TypedModel, id: usize) -> TractResult<(Option<OutletId>, OutletId)> {
    let conv_out = OutletId::new(id, 0);
    let out = model.outlet_fact(conv_out)?;
    if let Some((add, slot)) = sole_successor(model, conv_out) {
        let other = add.inputs.get(1 - slot.min(1)).copied();
        if bin_op_is::<Add>(add) && add.inputs.len() == 2 {
            if let Some(r) = other {
                let rf = model.outlet_fact(r)?;
                if rf.datum_type == f32::datum_type() && rf.shape == out.shape {
                    return Ok((Some(r), OutletId::new(add.id, 0)));
                }
            }
        }
    }
    Ok((None, conv_out))
}

/// The shape of an ungrouped, undilated NCHW convolution with an OIHW float kernel, or `None`.
fn plain_conv(conv: &Conv) -> Option<ConvShape> {
    let spec = &conv.pool_spec;
    let ones = |v: &Option<TVec<usize>>| v.as_ref().is_none_or(|v| v.iter().all(|&x| x == 1));
    let plain = spec.data_format == DataFormat::NCHW
        && spec.kernel_shape.len() == 2
        && ones(&spec.dilations)
        && conv.group == 1
        && conv.q_params.is_none()
        && conv.kernel_fmt == KernelFormat::OIHW;
    let pads = match &spec.padding {
        _ if !plain => return None,
        PaddingSpec::Valid => [0; 4],
        PaddingSpec::Explicit(b, a) if b.len() == 2 && a.len() == 2 => [b[0], b[1], a[0], a[1]],
        _ => return None,
    };
    let strides = spec.strides.as_ref().map_or((1, 1), |s| (s[0], s[1]));
    if pads[0] >= spec.kernel_shape[0] || pads[1] >= spec.kernel_shape[1] {
        return None;
    }
    Some(ConvShape {
        cin: conv.input_channels(),
        cout: conv.output_channels(),
        kernel: (spec.kernel_shape[0], spec.kernel_shape[1]),
        stride: strides,
        pads,
    })
}

/// The f32 values of a constant outlet, looking through casts to f32 (before declutter, the
/// bias of an ONNX `Conv` arrives through one, its fact not yet folded to a constant).
fn konst(model: &TypedModel, outlet: OutletId) -> Option<Arc<Tensor>> {
    let fact = model.outlet_fact(outlet).ok()?;
    if let Some(k) = &fact.konst {
        return Some(k.clone()).filter(|k| k.datum_type() == f32::datum_type());
    }
    let node = model.node(outlet.node);
    match (node.op_as::<Cast>(), node.inputs.as_slice()) {
        (Some(cast), &[input]) if cast.to == f32::datum_type() => konst(model, input),
        _ => None,
    }
}

/// The single consumer of `outlet`, when it has exactly one and is not a model output.
fn sole_successor(model: &TypedModel, outlet: OutletId) -> Option<(&TypedNode, usize)> {
    if model.output_outlets().ok()?.contains(&outlet) {
        return None;
    }
    let [s] = model.outlet_successors(outlet) else { return None };
    Some((model.node(s.node), s.slot))
}

fn bin_op_is<B: tract_onnx::tract_core::ops::binary::BinMiniOp>(node: &TypedNode) -> bool {
    node.op_as::<TypedBinOp>().is_some_and(|b| b.0.is::<B>())
}

/// The clamps that follow `outlet`, each the sole consumer of the value before it: up to two
/// `Max` or `Min` with a scalar constant (ReLU, ReLU6 = ONNX `Clip`), each step with the clamp
/// so far and the outlet it ends at.
fn clamps(model: &TypedModel, mut last: OutletId) -> TractResult<Vec<(Activation, OutletId)>> {
    let shape = model.outlet_fact(last)?.shape.clone();
    let mut act = Activation::NONE;
    let mut steps = vec![];
    while steps.len() < 2 {
        let Some((node, slot)) = sole_successor(model, last) else { break };
        let bound = node.inputs.get(1 - slot.min(1)).and_then(|&o| konst(model, o));
        let Some(bound) = bound.filter(|b| b.len() == 1 && node.inputs.len() == 2) else { break };
        let bound = bound.cast_to_scalar::<f32>()?;
        if model.outlet_fact(OutletId::new(node.id, 0))?.shape != shape || bound.is_nan() {
            break;
        }
        if bin_op_is::<Max>(node) {
            act.lo = act.lo.max(bound);
        } else if bin_op_is::<Min>(node) {
            act.hi = act.hi.min(bound);
        } else {
            break;
        }
        if act.lo > act.hi {
            break;
        }
        last = OutletId::new(node.id, 0);
        steps.push((act, last));
    }
    Ok(steps)
}

/// The longest prefix of `steps` whose clamp `accept` takes: the clamp and where it ends
/// (`from` when none is taken).
fn take_clamp(
    steps: &[(Activation, OutletId)],
    from: OutletId,
    accept: impl Fn(Activation) -> bool,
) -> (Activation, OutletId) {
    steps.iter().rev().find(|(a, _)| accept(*a)).copied().unwrap_or((Activation::NONE, from))
}

/// A patch replacing depthwise conv node `id` (3×3, stride 1 or 2, with a bias) and the clamps
/// after it by a [`DepthwiseConv`], or `None`.
fn depthwise_patch(
    model: &TypedModel,
    id: usize,
    conv: &Conv,
    isa: Isa,
) -> TractResult<Option<TypedModelPatch>> {
    let node = model.node(id);
    let spec = &conv.pool_spec;
    let c = conv.input_channels();
    // Batch-1 convolutions come out of tract's declutter as CHW (batch axis removed).
    let (Some(rank), Some(stride)) = (plane_rank(spec), square_stride(spec)) else {
        return Ok(None);
    };
    let eligible = spec.kernel_shape.as_slice() == [3, 3]
        && conv.group == c
        && conv.output_channels() == c
        && c > 1
        && conv.q_params.is_none()
        && conv.kernel_fmt == KernelFormat::OIHW
        && node.inputs.len() == 3;
    let Some(pads) = explicit_pads(&spec.padding).filter(|_| eligible) else { return Ok(None) };
    let x = model.outlet_fact(node.inputs[0])?;
    if pads.iter().any(|&p| p > 2)
        || x.datum_type != f32::datum_type()
        || x.shape.as_concrete().is_none_or(|s| s.len() != rank)
    {
        return Ok(None);
    }
    let (Some(kernel), Some(bias)) = (konst(model, node.inputs[1]), konst(model, node.inputs[2]))
    else {
        return Ok(None);
    };
    if kernel.shape() != [c, 1, 3, 3] {
        return Ok(None);
    }
    let Some(bias) = bias_values(&bias, c)? else { return Ok(None) };
    let conv_out = OutletId::new(id, 0);
    let (act, last) = take_clamp(&clamps(model, conv_out)?, conv_out, |_| true);
    let kernel = kernel.try_as_plain_ram()?;
    let op = DepthwiseConv::new(kernel.as_slice::<f32>()?, Some(&bias), c, stride, pads, act, isa)?;
    let mut patch = TypedModelPatch::default();
    let input = patch.tap_model(model, node.inputs[0])?;
    let wire = patch.wire_node(format!("{}.hydrant", node.name), op, &[input])?[0];
    patch.shunt_outside(model, last, wire)?;
    Ok(Some(patch))
}

/// 2-D padding as top, left, bottom, right, when given explicitly (or none).
fn explicit_pads(padding: &PaddingSpec) -> Option<[usize; 4]> {
    match padding {
        PaddingSpec::Valid => Some([0; 4]),
        PaddingSpec::Explicit(b, a) if b.len() == 2 && a.len() == 2 => {
            Some([b[0], b[1], a[0], a[1]])
        }
        _ => None,
    }
}

/// A bias constant of one or `n` values, as `n` values.
fn bias_values(bias: &Tensor, n: usize) -> TractResult<Option<Vec<f32>>> {
    Ok(match bias.len() {
        1 => Some(vec![bias.cast_to_scalar::<f32>()?; n]),
        len if len == n => Some(bias.try_as_plain_ram()?.as_slice::<f32>()?.to_vec()),
        _ => None,
    })
}

/// A patch replacing conv node `id` (and a following residual `Add` and clamps) by a
/// [`WinogradConv`] (stride-1 3×3), an [`Im2colConv`] (other kernels and strides) or a
/// [`DepthwiseConv`], or `None` when the node is not eligible.
fn conv_patch(model: &TypedModel, id: usize, isa: Isa) -> TractResult<Option<TypedModelPatch>> {
    let node = model.node(id);
    let Some(conv) = node.op_as::<Conv>() else { return Ok(None) };
    if conv.group > 1 {
        return depthwise_patch(model, id, conv, isa);
    }
    let Some(shape) = plain_conv(conv) else { return Ok(None) };
    let ConvShape { cin, cout, kernel: kernel_hw, stride: strides, pads: _ } = shape;
    let winograd = kernel_hw == (3, 3) && strides == (1, 1) && cin >= MIN_CHANNELS;
    // 1×1 convolutions are `patch_pointwise`'s (those it leaves, strided or padded, stay
    // with tract). Every other convolution is ours with AVX-512: since the panel kernel
    // prefetches its weights, it beats tract's product on ResNet-18's strided 3×3 convolutions
    // also on one thread (`bench-ops --only 3x3/2`, Xeon: 0.55× tract's time for 256 input
    // channels, 0.79× for 64, 1.07× for 128; the whole model at batch 1 takes 26 → 24.5 ms).
    // With AVX2 tract's product wins on those (64–256 input channels: 1.13–1.30× ours slower,
    // Zen 3), so they stay with tract there; ours still wins on the 7×7 stem (0.90×) and on
    // MobileNet-V2's 3-channel strided 3×3 stem (0.33×).
    let strided_3x3_to_tract =
        isa != Isa::Avx512 && kernel_hw == (3, 3) && cin >= STRIDED_3X3_TRACT_CHANNELS;
    let im2col = !winograd
        && !strided_3x3_to_tract
        && kernel_hw != (1, 1)
        && cin * kernel_hw.0 * kernel_hw.1 >= MIN_CHANNELS;
    if !(winograd || im2col) || cout < MIN_CHANNELS || node.inputs.len() != 3 {
        return Ok(None);
    }
    let x = model.outlet_fact(node.inputs[0])?;
    let Some(&[n, _, h, w]) = x.shape.as_concrete() else { return Ok(None) };
    if x.datum_type != f32::datum_type() {
        return Ok(None);
    }
    let (Some(kernel), Some(bias)) = (konst(model, node.inputs[1]), konst(model, node.inputs[2]))
    else {
        return Ok(None);
    };
    if kernel.shape() != [cout, cin, kernel_hw.0, kernel_hw.1] {
        return Ok(None);
    }
    let Some(bias) = bias_values(&bias, cout)? else { return Ok(None) };
    let (residual, mut last) = residual_add(model, id)?;
    let steps = clamps(model, last)?;
    let kernel = kernel.try_as_plain_ram()?;
    let kernel = kernel.as_slice::<f32>()?;
    let fused = residual.is_some();
    let op: Box<dyn TypedOp> = if winograd {
        let relu_only = |a: Activation| a == Activation::RELU;
        let (act, end) = take_clamp(&steps, last, relu_only);
        last = end;
        let relu = act == Activation::RELU;
        let tile = choose_tile(cin, n, h, w, shape.pads);
        let bias = Some(bias.as_slice());
        Box::new(WinogradConv::new(tile, kernel, bias, cin, cout, shape.pads, fused, relu, isa)?)
    } else {
        let (act, end) = take_clamp(&steps, last, |_| true);
        last = end;
        Box::new(Im2colConv::new(shape, kernel, Some(&bias), fused, act, isa)?)
    };
    let mut patch = TypedModelPatch::default();
    let mut inputs = tvec![patch.tap_model(model, node.inputs[0])?];
    if let Some(r) = residual {
        inputs.push(patch.tap_model(model, r)?);
    }
    let wire = patch.wire_node(format!("{}.hydrant", node.name), op, &inputs)?[0];
    patch.shunt_outside(model, last, wire)?;
    Ok(Some(patch))
}
