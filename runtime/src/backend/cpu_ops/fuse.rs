//! The patching pass: finds the convolutions hydrant's ops compute better than tract and
//! replaces them, with what they can absorb (a residual `Add`, a `Relu`), in a typed model.
//! 1×1 convolutions are left to tract (they are plain matrix products there).

use super::im2col_conv::{ConvShape, Im2colConv};
use super::winograd::WinogradConv;
use super::Isa;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec};
use tract_onnx::tract_core::ops::math::{Add, Max};
use tract_onnx::tract_core::ops::nn::DataFormat;

/// Fewest input and output channels for which a convolution is worth replacing.
const MIN_CHANNELS: usize = 16;

/// Replaces every eligible convolution of `model` (decluttered, concrete shapes); returns how
/// many were replaced. Ops it does not recognise are left to tract.
pub fn patch(model: &mut TypedModel, isa: Isa) -> TractResult<usize> {
    let convs: Vec<usize> =
        model.nodes().iter().filter(|n| n.op_is::<Conv>()).map(|n| n.id).collect();
    let mut replaced = 0;
    for id in convs {
        if let Some(p) = conv_patch(model, id, isa)? {
            p.apply(model)?;
            replaced += 1;
        }
    }
    if replaced > 0 {
        model.compact()?;
    }
    Ok(replaced)
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

/// The f32 values of a constant outlet.
fn konst(model: &TypedModel, outlet: OutletId) -> Option<Arc<Tensor>> {
    let fact = model.outlet_fact(outlet).ok()?;
    fact.konst.clone().filter(|k| k.datum_type() == f32::datum_type())
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

/// A patch replacing conv node `id` (and a following residual `Add` and `Relu`) by a
/// [`WinogradConv`] (stride-1 3×3) or an [`Im2colConv`] (other kernels and strides), or `None`
/// when the node is not eligible.
fn conv_patch(model: &TypedModel, id: usize, isa: Isa) -> TractResult<Option<TypedModelPatch>> {
    let node = model.node(id);
    let Some(conv) = node.op_as::<Conv>() else { return Ok(None) };
    let Some(shape) = plain_conv(conv) else { return Ok(None) };
    let ConvShape { cin, cout, kernel: kernel_hw, stride: strides, pads } = shape;
    let winograd = kernel_hw == (3, 3) && strides == (1, 1) && cin >= MIN_CHANNELS;
    let im2col =
        !winograd && kernel_hw != (1, 1) && cin * kernel_hw.0 * kernel_hw.1 >= MIN_CHANNELS;
    if !(winograd || im2col) || cout < MIN_CHANNELS || node.inputs.len() != 3 {
        return Ok(None);
    }
    let x = model.outlet_fact(node.inputs[0])?;
    let out = model.outlet_fact(OutletId::new(id, 0))?;
    if x.datum_type != f32::datum_type() || x.shape.as_concrete().is_none_or(|s| s.len() != 4) {
        return Ok(None);
    }
    let (Some(kernel), Some(bias)) = (konst(model, node.inputs[1]), konst(model, node.inputs[2]))
    else {
        return Ok(None);
    };
    if kernel.shape() != [cout, cin, kernel_hw.0, kernel_hw.1] {
        return Ok(None);
    }
    let bias: Option<Vec<f32>> = match bias.len() {
        1 => Some(vec![bias.cast_to_scalar::<f32>()?; cout]),
        n if n == cout => Some(bias.try_as_plain_ram()?.as_slice::<f32>()?.to_vec()),
        _ => return Ok(None),
    };
    let mut last = OutletId::new(id, 0);
    let mut residual = None;
    if let Some((add, slot)) = sole_successor(model, last) {
        let other = add.inputs.get(1 - slot.min(1)).copied();
        if bin_op_is::<Add>(add) && add.inputs.len() == 2 {
            if let Some(r) = other {
                let rf = model.outlet_fact(r)?;
                if rf.datum_type == f32::datum_type() && rf.shape == out.shape {
                    residual = Some(r);
                    last = OutletId::new(add.id, 0);
                }
            }
        }
    }
    let mut relu = false;
    if let Some((max, slot)) = sole_successor(model, last) {
        let zero = max.inputs.get(1 - slot.min(1)).and_then(|&o| konst(model, o));
        let zero =
            zero.is_some_and(|z| z.len() == 1 && z.cast_to_scalar::<f32>().is_ok_and(|v| v == 0.0));
        let same = model.outlet_fact(OutletId::new(max.id, 0))?.shape == out.shape;
        if bin_op_is::<Max>(max) && max.inputs.len() == 2 && zero && same {
            relu = true;
            last = OutletId::new(max.id, 0);
        }
    }
    let kernel = kernel.try_as_plain_ram()?;
    let kernel = kernel.as_slice::<f32>()?;
    let fused = residual.is_some();
    let op: Box<dyn TypedOp> = if winograd {
        Box::new(WinogradConv::new(kernel, bias.as_deref(), cin, cout, pads, fused, relu, isa)?)
    } else {
        Box::new(Im2colConv::new(shape, kernel, bias.as_deref(), fused, relu, isa)?)
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
