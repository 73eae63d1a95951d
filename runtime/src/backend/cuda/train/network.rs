//! [`GpuNetwork`]: a [`Head`]'s layers in device memory, with forward (training or inference)
//! and backward in f32, the formulas of the CPU layers (`train::layers`). Parameters and their
//! gradients are device buffers, in the CPU network's order (layer, then `weight` before
//! `bias`); `backward` **writes** every parameter gradient (each parameter is used once per pass,
//! so this equals the CPU's adding into zeroed gradients).

use super::ops::{self, Buf, DeviceArray, NormParams};
use crate::backend::cuda::context::{err, GpuContext};
use crate::backend::cuda::fusion::Act;
use crate::backend::cuda::geometry::{ConvParams, ConvShape, PoolShape};
use crate::backend::cuda::train_plan::{self as tp, ConvGemm, LayerPlan, LinearGemm};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use crate::train::spec::{HeadSpec, LayerSpec, UpsampleMode};
use crate::train::{Head, Network};
use std::sync::Arc;

/// A learnable tensor on the device and its gradient.
pub struct DeviceParam {
    /// `<layer>.<name>`, as in the head's tensors.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its values.
    pub value: Buf,
    /// Its gradient from the last backward pass.
    pub grad: Buf,
}

/// BatchNorm running statistics on the device.
struct Running {
    mean: Buf,
    var: Buf,
    batches: i64,
}

/// What a layer keeps from a training forward pass for its backward.
enum Saved {
    Nothing,
    /// The input (Linear, Conv2d, MaxPool2d, most activations).
    Input(Buf),
    /// The output (sigmoid, tanh).
    Output(Buf),
    /// x̂ and 1/σ (per channel or per row), and whether batch statistics normalised.
    Norm(Buf, Buf, bool),
    /// The dropout mask.
    Mask(Buf),
}

/// How a forward pass runs.
#[derive(Debug, Clone, Copy)]
pub struct Mode {
    /// Training (saves for backward, dropout active, batch statistics).
    pub training: bool,
    /// In training, normalise BatchNorm with the running statistics and leave them unchanged.
    pub frozen_batchnorm: bool,
    /// The run's seed for dropout masks ([`tp::dropout_seed`]).
    pub seed: u64,
    /// The step, for dropout masks.
    pub step: u64,
}

impl Mode {
    /// Inference: no dropout, running statistics.
    pub fn inference() -> Mode {
        Mode { training: false, frozen_batchnorm: true, seed: 0, step: 0 }
    }
}

/// A head's layers on one device.
pub struct GpuNetwork {
    gpu: Arc<GpuContext>,
    spec: HeadSpec,
    /// Per layer, its parameters' indices in `params`.
    owned: Vec<Vec<usize>>,
    params: Vec<DeviceParam>,
    running: Vec<Option<Running>>,
    saved: Vec<Saved>,
    /// The plan of the last training forward pass.
    plan: Option<Vec<LayerPlan>>,
}

impl std::fmt::Debug for GpuNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuNetwork").field("head", &self.spec.name).finish_non_exhaustive()
    }
}

fn f32s(t: &Tensor, name: &str) -> Result<Vec<f32>> {
    t.as_slice::<f32>().map(<[f32]>::to_vec).ok_or_else(|| {
        Error::InvalidModel(format!("tensor `{name}`: expected f32, got {}", t.dtype()))
    })
}

impl GpuNetwork {
    /// Uploads the tensors of `head` (checked as the CPU network checks them).
    pub fn new(gpu: Arc<GpuContext>, head: &Head) -> Result<GpuNetwork> {
        Network::<f32>::new(head)?;
        let spec = head.spec().clone();
        let get = |name: &str| {
            head.tensor(name).ok_or_else(|| {
                Error::InvalidModel(format!("head `{}`: no tensor `{name}`", spec.name))
            })
        };
        let (mut owned, mut params, mut running) = (Vec::new(), Vec::new(), Vec::new());
        for (i, l) in spec.layers.iter().enumerate() {
            let mut mine = Vec::new();
            for p in l.param_names() {
                let name = format!("{i}.{p}");
                let t = get(&name)?;
                let v = f32s(t, &name)?;
                let value = ops::upload(&gpu, t.shape(), &v)?.buf;
                let grad = ops::alloc(&gpu, v.len())?;
                mine.push(params.len());
                params.push(DeviceParam { name, shape: t.shape().to_vec(), value, grad });
            }
            owned.push(mine);
            running.push(if let LayerSpec::BatchNorm2d { .. } = l {
                let mean = f32s(get(&format!("{i}.running_mean"))?, "running_mean")?;
                let var = f32s(get(&format!("{i}.running_var"))?, "running_var")?;
                let batches = get(&format!("{i}.num_batches_tracked"))?
                    .as_slice::<i64>()
                    .and_then(|v| v.first().copied())
                    .unwrap_or(0);
                Some(Running {
                    mean: ops::upload(&gpu, &[mean.len()], &mean)?.buf,
                    var: ops::upload(&gpu, &[var.len()], &var)?.buf,
                    batches,
                })
            } else {
                None
            });
        }
        let saved = spec.layers.iter().map(|_| Saved::Nothing).collect();
        Ok(GpuNetwork { gpu, spec, owned, params, running, saved, plan: None })
    }

    /// The architecture.
    pub fn spec(&self) -> &HeadSpec {
        &self.spec
    }

    /// The device.
    pub fn gpu(&self) -> &Arc<GpuContext> {
        &self.gpu
    }

    /// Parameters, in the CPU network's order.
    pub fn params(&self) -> &[DeviceParam] {
        &self.params
    }

    /// Parameters, mutable (the optimizer updates them in place).
    pub fn params_mut(&mut self) -> &mut [DeviceParam] {
        &mut self.params
    }

    /// Runs every layer on `x`; in training, saves what [`GpuNetwork::backward`] needs.
    pub fn forward(&mut self, x: DeviceArray, mode: Mode) -> Result<DeviceArray> {
        let plan = tp::plan(&self.spec, &x.shape)?;
        let mut x = x;
        for (i, l) in plan.iter().enumerate() {
            x = self.layer_forward(i, l, x, mode).map_err(|e| self.at(i, e))?;
        }
        self.plan = mode.training.then_some(plan);
        Ok(x)
    }

    /// Back-propagates `dy` (∂loss/∂output of the last training forward pass), writing every
    /// parameter gradient; returns ∂loss/∂input when `input_grad`, else stops below the lowest
    /// layer with weights and returns `None`.
    pub fn backward(&mut self, dy: DeviceArray, input_grad: bool) -> Result<Option<DeviceArray>> {
        let plan = self.plan.take().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "head `{}`: backward called without a training forward pass",
                self.spec.name
            ))
        })?;
        let last = plan.last().map(|l| l.output.clone()).unwrap_or_default();
        if dy.shape != last {
            return Err(Error::BadTensor(format!(
                "head `{}`: output gradient has shape {:?}, expected {last:?}",
                self.spec.name, dy.shape
            )));
        }
        let mut g = Some(dy);
        for (i, l) in plan.iter().enumerate().rev() {
            let want_dx = input_grad || l.input_grad;
            if !want_dx && self.owned[i].is_empty() {
                return Ok(None);
            }
            let dy =
                g.take().ok_or_else(|| self.at(i, Error::InvalidArgument("no gradient".into())))?;
            g = self.layer_backward(i, l, dy, want_dx).map_err(|e| self.at(i, e))?;
        }
        Ok(g)
    }

    fn layer_forward(
        &mut self,
        i: usize,
        l: &LayerPlan,
        x: DeviceArray,
        mode: Mode,
    ) -> Result<DeviceArray> {
        let gpu = self.gpu.clone();
        let out = l.output.clone();
        let total = x.len();
        let keep = |s: &mut Saved, v: Saved| {
            if mode.training {
                *s = v;
            }
        };
        let y: Buf = match l.spec {
            LayerSpec::Linear { bias, out_features, .. } => {
                let lg = LinearGemm::new(&l.spec, &l.input)?;
                let rows = lg.rows;
                let p = &self.owned[i];
                let mut y = ops::alloc(&gpu, rows * out_features)?;
                let w = &self.params[p[0]].value;
                ops::gemm(&gpu, &lg.forward(), &x.buf, w, &mut y)?;
                if bias {
                    let b = &self.params[p[1]].value;
                    ops::bias_act(&gpu, &mut y, Some(b), rows, out_features, Act::None)?;
                }
                keep(&mut self.saved[i], Saved::Input(x.buf));
                y
            }
            LayerSpec::Conv2d { bias, .. } => {
                let shape = conv_shape(l)?;
                let p = &self.owned[i];
                let w = &self.params[p[0]].value;
                let b = bias.then(|| &self.params[p[1]].value);
                let y = ops::conv2d(&gpu, &x, w, b, &shape, &out)?.buf;
                keep(&mut self.saved[i], Saved::Input(x.buf));
                y
            }
            LayerSpec::BatchNorm2d { eps, momentum, .. } => {
                let dims = tp::channel_dims(&l.input);
                let batch_stats = mode.training && !mode.frozen_batchnorm;
                if batch_stats && dims.0 * dims.2 < 2 {
                    return Err(Error::BadTensor(format!(
                        "batch_norm: training needs more than one value per channel, got shape {:?}",
                        l.input
                    )));
                }
                let p = &self.owned[i];
                let (gamma, beta) = (&self.params[p[0]].value, &self.params[p[1]].value);
                let run = self.running[i].as_mut().ok_or_else(|| {
                    Error::InvalidModel("batch_norm without running statistics".into())
                })?;
                let mut saved = if mode.training {
                    Some((ops::alloc(&gpu, total)?, ops::alloc(&gpu, dims.1)?))
                } else {
                    None
                };
                let y = ops::batchnorm_forward(
                    &gpu,
                    &x.buf,
                    NormParams { gamma, beta },
                    (&mut run.mean, &mut run.var),
                    saved.as_mut().map(|(a, b)| (a, b)),
                    dims,
                    (eps, momentum),
                    batch_stats,
                )?;
                if batch_stats {
                    run.batches += 1;
                }
                if let Some((xhat, inv)) = saved {
                    self.saved[i] = Saved::Norm(xhat, inv, batch_stats);
                }
                y
            }
            LayerSpec::LayerNorm { eps, .. } => {
                let dims = tp::row_dims(&l.input);
                let p = &self.owned[i];
                let (gamma, beta) = (&self.params[p[0]].value, &self.params[p[1]].value);
                let mut saved = if mode.training {
                    Some((ops::alloc(&gpu, total)?, ops::alloc(&gpu, dims.0)?))
                } else {
                    None
                };
                let y = ops::layernorm_forward(
                    &gpu,
                    &x.buf,
                    NormParams { gamma, beta },
                    saved.as_mut().map(|(a, b)| (a, b)),
                    dims,
                    eps,
                )?;
                if let Some((xhat, inv)) = saved {
                    self.saved[i] = Saved::Norm(xhat, inv, true);
                }
                y
            }
            LayerSpec::Dropout { p } => {
                if !mode.training || p == 0.0 {
                    return Ok(DeviceArray { shape: out, buf: x.buf });
                }
                let seed = tp::dropout_seed(mode.seed, mode.step, i);
                let (y, mask) = ops::dropout_forward(&gpu, &x.buf, total, p, seed)?;
                self.saved[i] = Saved::Mask(mask);
                y
            }
            LayerSpec::Flatten => x.buf,
            LayerSpec::GlobalAvgPool { .. } => {
                let (n, c, plane) = tp::channel_dims(&l.input);
                ops::global_avgpool(&gpu, &x.buf, n * c, plane)?
            }
            LayerSpec::MaxPool2d { .. } => {
                let s = pool_shape(l)?;
                let y = ops::maxpool(&gpu, &x.buf, &s)?;
                keep(&mut self.saved[i], Saved::Input(x.buf));
                y
            }
            LayerSpec::Upsample2x { mode: m } => {
                let (n, c, _) = tp::channel_dims(&l.input);
                ops::upsample2x(
                    &gpu,
                    &x.buf,
                    n * c,
                    (l.input[2], l.input[3]),
                    m == UpsampleMode::Bilinear,
                )?
            }
            LayerSpec::Softmax { dim } => {
                if mode.training {
                    x.buf
                } else {
                    ops::softmax_axis(&gpu, &x.buf, tp::softmax_dims(&l.input, dim)?)?
                }
            }
            ref a => {
                let act = tp::activation(a).ok_or_else(|| {
                    Error::InvalidArgument(format!("layer {} has no GPU kernel", a.kind()))
                })?;
                let y = ops::act_forward(&gpu, &x.buf, total, act)?;
                if mode.training {
                    self.saved[i] = if tp::grad_from_output(act) {
                        Saved::Output(gpu.stream.clone_dtod(&y).map_err(|e| err(gpu.ordinal, e))?)
                    } else {
                        Saved::Input(x.buf)
                    };
                }
                y
            }
        };
        Ok(DeviceArray { shape: out, buf: y })
    }

    fn layer_backward(
        &mut self,
        i: usize,
        l: &LayerPlan,
        dy: DeviceArray,
        want_dx: bool,
    ) -> Result<Option<DeviceArray>> {
        let gpu = self.gpu.clone();
        let saved = std::mem::replace(&mut self.saved[i], Saved::Nothing);
        let missing = || {
            Error::InvalidArgument(format!(
                "{}: backward called without a training forward pass",
                l.spec.kind()
            ))
        };
        let input = l.input.clone();
        let total_in: usize = input.iter().product();
        let dx: Option<Buf> = match l.spec {
            LayerSpec::Linear { bias, out_features, .. } => {
                let Saved::Input(x) = saved else { return Err(missing()) };
                let lg = LinearGemm::new(&l.spec, &input)?;
                let rows = lg.rows;
                let p = self.owned[i].clone();
                ops::gemm(&gpu, &lg.weight_grad(), &dy.buf, &x, &mut self.params[p[0]].grad)?;
                if bias {
                    ops::bias_grad_rows(
                        &gpu,
                        &dy.buf,
                        &mut self.params[p[1]].grad,
                        rows,
                        out_features,
                    )?;
                }
                if want_dx {
                    let mut dx = ops::alloc(&gpu, total_in)?;
                    let w = &self.params[p[0]].value;
                    ops::gemm(&gpu, &lg.input_grad(), &dy.buf, w, &mut dx)?;
                    Some(dx)
                } else {
                    None
                }
            }
            LayerSpec::Conv2d { bias, out_channels, .. } => {
                let Saved::Input(x) = saved else { return Err(missing()) };
                let shape = conv_shape(l)?;
                let g = ConvGemm::new(&l.spec, &input, &l.output)?;
                let p = self.owned[i].clone();
                let spatial = l.output[2] * l.output[3];
                // dy as [O, N·Ho·Wo], the CPU layer's layout of the products.
                let dyt = ops::swap01(&gpu, &dy.buf, input[0], out_channels, spatial)?;
                if bias {
                    ops::bias_grad_channels(
                        &gpu,
                        &dy.buf,
                        &mut self.params[p[1]].grad,
                        (input[0], out_channels, spatial),
                    )?;
                }
                let mut col = ops::alloc(&gpu, g.kg * g.cols)?;
                let mut dx = if want_dx { Some(ops::alloc(&gpu, total_in)?) } else { None };
                let mut dcol = if want_dx { Some(ops::alloc(&gpu, g.kg * g.cols)?) } else { None };
                for grp in 0..g.groups {
                    let gi = grp as i32;
                    ops::im2col(&gpu, &x, &mut col, &shape, gi)?;
                    let dw = &mut self.params[p[0]].grad;
                    ops::gemm(&gpu, &g.weight_grad(grp), &dyt, &col, dw)?;
                    if let (Some(dx), Some(dcol)) = (dx.as_mut(), dcol.as_mut()) {
                        let w = &self.params[p[0]].value;
                        ops::gemm(&gpu, &g.column_grad(grp), w, &dyt, dcol)?;
                        ops::col2im(&gpu, dcol, dx, &shape, gi)?;
                    }
                }
                dx
            }
            LayerSpec::BatchNorm2d { .. } => {
                let Saved::Norm(xhat, inv, batch_stats) = saved else { return Err(missing()) };
                let p = self.owned[i].clone();
                let dims = tp::channel_dims(&input);
                let (a, b) = two_mut(&mut self.params, p[0], p[1]);
                let DeviceParam { value: gamma, grad: dgamma, .. } = a;
                ops::batchnorm_backward(
                    &gpu,
                    &dy.buf,
                    (&xhat, &inv),
                    gamma,
                    (dgamma, &mut b.grad),
                    dims,
                    batch_stats,
                    want_dx,
                )?
            }
            LayerSpec::LayerNorm { .. } => {
                let Saved::Norm(xhat, inv, _) = saved else { return Err(missing()) };
                let p = self.owned[i].clone();
                let dims = tp::row_dims(&input);
                let (a, b) = two_mut(&mut self.params, p[0], p[1]);
                let DeviceParam { value: gamma, grad: dgamma, .. } = a;
                ops::layernorm_backward(
                    &gpu,
                    &dy.buf,
                    (&xhat, &inv),
                    gamma,
                    (dgamma, &mut b.grad),
                    dims,
                    want_dx,
                )?
            }
            LayerSpec::Dropout { .. } => match saved {
                Saved::Mask(mask) => Some(ops::mul(&gpu, &dy.buf, &mask, total_in)?),
                _ => Some(dy.buf),
            },
            LayerSpec::Flatten | LayerSpec::Softmax { .. } => Some(dy.buf),
            LayerSpec::GlobalAvgPool { .. } => {
                let (n, c, plane) = tp::channel_dims(&input);
                Some(ops::global_avgpool_backward(&gpu, &dy.buf, n * c, plane)?)
            }
            LayerSpec::MaxPool2d { .. } => {
                let Saved::Input(x) = saved else { return Err(missing()) };
                Some(ops::maxpool_backward(&gpu, &x, &dy.buf, &pool_shape(l)?)?)
            }
            LayerSpec::Upsample2x { mode } => {
                let (n, c, _) = tp::channel_dims(&input);
                Some(ops::upsample2x_backward(
                    &gpu,
                    &dy.buf,
                    n * c,
                    (input[2], input[3]),
                    mode == UpsampleMode::Bilinear,
                )?)
            }
            ref a => {
                let act = tp::activation(a).ok_or_else(|| {
                    Error::InvalidArgument(format!("layer {} has no GPU kernel", a.kind()))
                })?;
                let dx = match saved {
                    Saved::Input(x) => {
                        ops::act_backward(&gpu, Some(&x), None, &dy.buf, total_in, act)?
                    }
                    Saved::Output(y) => {
                        ops::act_backward(&gpu, None, Some(&y), &dy.buf, total_in, act)?
                    }
                    _ => return Err(missing()),
                };
                Some(dx)
            }
        };
        Ok(dx.map(|buf| DeviceArray { shape: input, buf }))
    }

    /// The current weights, running statistics and batch counters as a [`Head`].
    pub fn to_head(&self) -> Result<Head> {
        let mut tensors = Vec::new();
        for (i, mine) in self.owned.iter().enumerate() {
            for &p in mine {
                let d = &self.params[p];
                let mut v = self.gpu.download_f32(&d.value)?;
                v.truncate(d.shape.iter().product());
                tensors.push((d.name.clone(), Tensor::new::<f32>(&d.shape, v)?));
            }
            if let Some(r) = &self.running[i] {
                let mean = self.gpu.download_f32(&r.mean)?;
                let var = self.gpu.download_f32(&r.var)?;
                tensors
                    .push((format!("{i}.running_mean"), Tensor::new::<f32>(&[mean.len()], mean)?));
                tensors.push((format!("{i}.running_var"), Tensor::new::<f32>(&[var.len()], var)?));
                tensors.push((
                    format!("{i}.num_batches_tracked"),
                    Tensor::new::<i64>(&[], vec![r.batches])?,
                ));
            }
        }
        Head::new(self.spec.clone(), tensors)
    }

    /// The gradients of the last backward pass, by parameter, on the host.
    pub fn grads(&self) -> Result<Vec<(String, Vec<f32>)>> {
        self.params
            .iter()
            .map(|p| {
                let mut v = self.gpu.download_f32(&p.grad)?;
                v.truncate(p.shape.iter().product());
                Ok((p.name.clone(), v))
            })
            .collect()
    }

    fn at(&self, i: usize, e: Error) -> Error {
        let what = format!(
            "head `{}`, layer {i} ({}) on the GPU",
            self.spec.name,
            self.spec.layers[i].kind()
        );
        match e {
            Error::BadTensor(m) => Error::BadTensor(format!("{what}: {m}")),
            Error::InvalidArgument(m) => Error::InvalidArgument(format!("{what}: {m}")),
            e => e,
        }
    }
}

/// Two distinct elements of a slice, mutably.
fn two_mut<T>(v: &mut [T], a: usize, b: usize) -> (&mut T, &mut T) {
    debug_assert!(a < b);
    let (lo, hi) = v.split_at_mut(b);
    (&mut lo[a], &mut hi[0])
}

fn conv_shape(l: &LayerPlan) -> Result<ConvShape> {
    let LayerSpec::Conv2d {
        kernel_size: k,
        stride: s,
        padding: p,
        dilation: d,
        groups,
        out_channels,
        ..
    } = l.spec
    else {
        return Err(Error::InvalidArgument("conv2d plan of another layer".into()));
    };
    let input: [usize; 4] = l
        .input
        .as_slice()
        .try_into()
        .map_err(|_| Error::BadTensor(format!("conv2d input {:?}", l.input)))?;
    ConvShape::new(
        input,
        out_channels,
        &ConvParams { kernel: (k, k), stride: (s, s), pad: (p, p), dilation: (d, d), groups },
    )
}

fn pool_shape(l: &LayerPlan) -> Result<PoolShape> {
    let LayerSpec::MaxPool2d { kernel_size: k, stride, padding: p } = l.spec else {
        return Err(Error::InvalidArgument("max_pool2d plan of another layer".into()));
    };
    let s = stride.unwrap_or(k);
    let input: [usize; 4] = l
        .input
        .as_slice()
        .try_into()
        .map_err(|_| Error::BadTensor(format!("max_pool2d input {:?}", l.input)))?;
    PoolShape::new(
        input,
        &ConvParams { kernel: (k, k), stride: (s, s), pad: (p, p), dilation: (1, 1), groups: 1 },
        false,
    )
}
