//! BatchNormalization folded into the convolution before it, on the host:
//! `bn(conv(x, w) + b) = conv(x, w·s) + (b - mean)·s + beta` with `s = gamma / sqrt(var + eps)`
//! per output channel.

use crate::error::{Error, Result};

/// A frozen BatchNormalization's parameters, one value per channel.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNorm {
    /// Scale (gamma).
    pub gamma: Vec<f32>,
    /// Shift (beta).
    pub beta: Vec<f32>,
    /// Running mean.
    pub mean: Vec<f32>,
    /// Running variance.
    pub var: Vec<f32>,
    /// Added to the variance.
    pub eps: f32,
}

/// Folds `bn` into a convolution's `weight` (`[oc, …]`, `oc` blocks of equal length) and
/// optional `bias`; returns the new weight and bias.
pub fn fold(weight: &[f32], bias: Option<&[f32]>, bn: &BatchNorm) -> Result<(Vec<f32>, Vec<f32>)> {
    let oc = bn.gamma.len();
    let lens = [bn.beta.len(), bn.mean.len(), bn.var.len(), bias.map_or(oc, <[f32]>::len)];
    if oc == 0 || lens.iter().any(|&l| l != oc) || !weight.len().is_multiple_of(oc) {
        return Err(Error::InvalidModel(format!(
            "BatchNormalization of {oc} channels after a convolution of {} weights and bias \
             {:?}: sizes disagree",
            weight.len(),
            bias.map(<[f32]>::len)
        )));
    }
    let per = weight.len() / oc;
    let scale: Vec<f32> =
        bn.gamma.iter().zip(&bn.var).map(|(g, v)| g / (v + bn.eps).sqrt()).collect();
    let w = weight
        .chunks(per)
        .zip(&scale)
        .flat_map(|(row, s)| row.iter().map(move |x| x * s))
        .collect();
    let b = (0..oc)
        .map(|c| (bias.map_or(0.0, |b| b[c]) - bn.mean[c]) * scale[c] + bn.beta[c])
        .collect();
    Ok((w, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1×1 convolution over 3 input channels at one pixel, followed by BN, against the folded
    /// form, computed separately.
    #[test]
    fn folded_convolution_equals_convolution_then_batch_norm() {
        let x = [0.5f32, -1.0, 2.0];
        let w = [0.1f32, 0.2, 0.3, -0.4, 0.5, -0.6];
        let b = [0.05f32, -0.1];
        let bn = BatchNorm {
            gamma: vec![1.5, 0.5],
            beta: vec![0.1, -0.2],
            mean: vec![0.3, -0.4],
            var: vec![0.25, 4.0],
            eps: 1e-5,
        };
        let (fw, fb) = fold(&w, Some(&b), &bn).unwrap();
        for c in 0..2 {
            let conv: f32 = (0..3).map(|i| w[c * 3 + i] * x[i]).sum::<f32>() + b[c];
            let expected =
                (conv - bn.mean[c]) / (bn.var[c] + bn.eps).sqrt() * bn.gamma[c] + bn.beta[c];
            let folded: f32 = (0..3).map(|i| fw[c * 3 + i] * x[i]).sum::<f32>() + fb[c];
            assert!((expected - folded).abs() < 1e-6, "{c}: {expected} vs {folded}");
        }
        let (_, nb) = fold(&w, None, &bn).unwrap();
        assert!((nb[0] - ((0.0 - 0.3) * 1.5 / (0.25f32 + 1e-5).sqrt() + 0.1)).abs() < 1e-6);
    }

    #[test]
    fn mismatched_sizes_are_an_error() {
        let bn = BatchNorm {
            gamma: vec![1.0; 2],
            beta: vec![0.0; 2],
            mean: vec![0.0; 2],
            var: vec![1.0; 3],
            eps: 1e-5,
        };
        assert!(fold(&[1.0; 6], None, &bn).is_err());
        let bn = BatchNorm { var: vec![1.0; 2], ..bn };
        assert!(fold(&[1.0; 5], None, &bn).is_err());
        assert!(fold(&[1.0; 6], Some(&[0.0; 3]), &bn).is_err());
    }
}
