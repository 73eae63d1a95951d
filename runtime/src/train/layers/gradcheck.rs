//! Finite-difference gradient checks (f64) shared by the layer tests.

use super::{Layer, Pass};
use crate::train::array::Array;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const EPS: f64 = 1e-6;
const TOL: f64 = 1e-6;
/// Most coordinates checked per tensor (chosen at random beyond that).
const MAX_PROBES: usize = 48;

fn random(shape: &[usize], rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> Array<f64> {
    let n = shape.iter().product();
    Array::new(shape, (0..n).map(|_| rng.random_range(lo..hi)).collect()).unwrap()
}

/// `Σ r·layer(x)` with a fresh, fixed dropout stream (so every evaluation draws the same mask).
fn objective(layer: &mut dyn Layer<f64>, x: &Array<f64>, r: &Array<f64>, frozen: bool) -> f64 {
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let mut pass = Pass { training: true, frozen_batchnorm: frozen, rng: &mut rng };
    let y = layer.forward(x.clone(), &mut pass).unwrap();
    y.data().iter().zip(r.data()).map(|(a, b)| a * b).sum()
}

fn probes(n: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    if n <= MAX_PROBES {
        (0..n).collect()
    } else {
        (0..MAX_PROBES).map(|_| rng.random_range(0..n)).collect()
    }
}

fn assert_close(what: &str, analytic: f64, numeric: f64) {
    let err = (analytic - numeric).abs() / (1.0 + numeric.abs());
    assert!(err < TOL, "{what}: analytic {analytic:e} vs finite difference {numeric:e}");
}

/// Checks the input and parameter gradients of `layer` on a random input of `shape`, in
/// training mode (batch statistics for BatchNorm).
pub fn check_layer(layer: Box<dyn Layer<f64>>, shape: &[usize]) {
    check_layer_mode(layer, shape, false)
}

/// [`check_layer`] with BatchNorm's running statistics frozen when `frozen`.
pub fn check_layer_mode(mut layer: Box<dyn Layer<f64>>, shape: &[usize], frozen: bool) {
    let mut rng = ChaCha8Rng::seed_from_u64(shape.iter().product::<usize>() as u64);
    for (_, p) in layer.params() {
        p.value = random(p.value.shape(), &mut rng, -1.0, 1.0);
    }
    for (name, b) in layer.buffers() {
        let (lo, hi) = if name == "running_var" { (0.5, 1.5) } else { (-0.5, 0.5) };
        *b = random(b.shape(), &mut rng, lo, hi);
    }
    let x = random(shape, &mut rng, -2.0, 2.0);
    let out_shape = layer.output_shape(shape).unwrap();
    let r = random(&out_shape, &mut rng, -1.0, 1.0);

    let _ = objective(layer.as_mut(), &x, &r, frozen);
    for (_, p) in layer.params() {
        p.grad = p.value.zeros_like();
    }
    let dx = layer.backward(r.clone()).unwrap();
    assert_eq!(dx.shape(), shape, "input gradient shape");

    for i in probes(x.len(), &mut rng) {
        let mut xp = x.clone();
        xp.data_mut()[i] += EPS;
        let up = objective(layer.as_mut(), &xp, &r, frozen);
        xp.data_mut()[i] -= 2.0 * EPS;
        let down = objective(layer.as_mut(), &xp, &r, frozen);
        assert_close(&format!("d/dx[{i}]"), dx.data()[i], (up - down) / (2.0 * EPS));
    }
    let names: Vec<&'static str> = layer.params().iter().map(|(n, _)| *n).collect();
    for (k, name) in names.iter().enumerate() {
        let (analytic, len) = {
            let params = layer.params();
            (params[k].1.grad.clone(), params[k].1.value.len())
        };
        for i in probes(len, &mut rng) {
            let nudge = |layer: &mut dyn Layer<f64>, d: f64| {
                layer.params()[k].1.value.data_mut()[i] += d;
            };
            nudge(layer.as_mut(), EPS);
            let up = objective(layer.as_mut(), &x, &r, frozen);
            nudge(layer.as_mut(), -2.0 * EPS);
            let down = objective(layer.as_mut(), &x, &r, frozen);
            nudge(layer.as_mut(), EPS);
            assert_close(&format!("d/d{name}[{i}]"), analytic.data()[i], (up - down) / (2.0 * EPS));
        }
    }
}

/// Checks that `single` (f32, on hydrant's own f32 kernels where the layer has them) computes
/// what `double` (the same layer in f64, on the general products) does: output, input
/// gradient and parameter gradients within `1e-5` of each tensor's largest magnitude, on a
/// random input of `shape`.
pub fn check_f32_matches_f64(
    mut single: Box<dyn Layer<f32>>,
    mut double: Box<dyn Layer<f64>>,
    shape: &[usize],
) {
    let mut rng = ChaCha8Rng::seed_from_u64(7 + shape.iter().product::<usize>() as u64);
    for ((_, p32), (_, p64)) in single.params().into_iter().zip(double.params()) {
        p64.value = random(p64.value.shape(), &mut rng, -1.0, 1.0).cast::<f32>().cast();
        p32.value = p64.value.cast();
    }
    let x = random(shape, &mut rng, -2.0, 2.0).cast::<f32>();
    let out_shape = double.output_shape(shape).unwrap();
    let r = random(&out_shape, &mut rng, -1.0, 1.0).cast::<f32>();
    let close = |what: &str, got: &Array<f32>, want: &Array<f64>| {
        assert_eq!(got.shape(), want.shape(), "{what} shape");
        let scale = want.data().iter().fold(1e-30f64, |m, v| m.max(v.abs()));
        for (i, (&g, &w)) in got.data().iter().zip(want.data()).enumerate() {
            let err = (g as f64 - w).abs() / scale;
            assert!(err < 1e-5, "{what}[{i}]: f32 {g:e} vs f64 {w:e} (scale {scale:e})");
        }
    };
    let mut seeds = (ChaCha8Rng::seed_from_u64(1), ChaCha8Rng::seed_from_u64(1));
    let mut pass32 = Pass { training: true, frozen_batchnorm: false, rng: &mut seeds.0 };
    let y32 = single.forward(x.clone(), &mut pass32).unwrap();
    let mut pass64 = Pass { training: true, frozen_batchnorm: false, rng: &mut seeds.1 };
    let y64 = double.forward(x.cast(), &mut pass64).unwrap();
    close("output", &y32, &y64);
    let dx32 = single.backward(r.clone()).unwrap();
    let dx64 = double.backward(r.cast()).unwrap();
    close("input gradient", &dx32, &dx64);
    for ((name, p32), (_, p64)) in single.params().into_iter().zip(double.params()) {
        close(&format!("{name} gradient"), &p32.grad, &p64.grad);
    }
}
