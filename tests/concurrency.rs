//! Torn-free head swaps: 8 threads run inference on one model while another thread fine-tunes a
//! head (one epoch at a time on cached features) and swaps it in after every epoch, 100 times.
//! Every output observed must equal, bit for bit, the output of one head version that was
//! current at some moment during that call — computed single-threaded afterwards.

use hydrant::train::{Head, Init, OptimizerSpec};
use hydrant::{HeadSet, HeadSpec, Labels, LayerSpec, LoadOptions, Model, TaskSpec, Tensor};
use hydrant::{TrainOptions, Trainer};
use hydrant_tests::{fixture, npy};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

const PENULTIMATE: &str = "/trunk/trunk.8/Relu_output_0";
const READERS: usize = 8;
const SWAPS: usize = 100;

/// An observation: input index, output bits, and the version counter before and after the call.
type Seen = (usize, Vec<u32>, usize, usize);

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_f32().as_slice::<f32>().unwrap().iter().map(|x| x.to_bits()).collect()
}

#[test]
fn every_output_during_swaps_is_exactly_one_head_version() {
    let model = Model::load(fixture("digits.onnx"), LoadOptions::new().threads(1)).unwrap();
    let images = npy("digits_images.npy");
    let labels = npy("digits_labels.npy").into_vec::<i64>().unwrap();
    let n = 256;
    let x = images.slice_rows(0, n).unwrap();
    let y = Tensor::new(&[n], labels[..n].iter().map(|&v| v % 2).collect()).unwrap();
    let inputs: Vec<Tensor> =
        (0..4).map(|i| images.slice_rows(300 + 2 * i, 302 + 2 * i).unwrap()).collect();
    let layers = vec![
        LayerSpec::Flatten,
        LayerSpec::Linear { in_features: 64, out_features: 2, bias: true },
    ];
    let spec = HeadSpec::new("odd", PENULTIMATE, layers, TaskSpec::from_loss_name("ce", 2).ok());
    let first = Head::init(spec, Init::PyTorch, 3).unwrap();
    model.add_head(&first).unwrap();
    let options = TrainOptions {
        batch_size: 32,
        lr: 0.002,
        validation_fraction: 0.0,
        optimizer: OptimizerSpec::sgd(0.0, 0.0),
        threads: 1,
        ..TrainOptions::default()
    };
    let mut trainer = Trainer::new(vec![first.clone()], options).unwrap();
    trainer.add_samples(&model, &[("image", &x)], &[("odd", Labels::new(y))], 128).unwrap();

    // Version k is the head current after k swaps (0: the first head).
    let versions = Mutex::new(vec![first]);
    let swapped = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    let seen: Vec<Seen> = std::thread::scope(|s| {
        let readers: Vec<_> = (0..READERS)
            .map(|r| {
                let (model, inputs, swapped, done) = (&model, &inputs, &swapped, &done);
                s.spawn(move || {
                    let mut seen = Vec::new();
                    let mut i = r;
                    while !done.load(Ordering::SeqCst) {
                        let k = i % inputs.len();
                        let before = swapped.load(Ordering::SeqCst);
                        let out = model.run(&[("image", &inputs[k])], &["odd"]).unwrap();
                        let after = swapped.load(Ordering::SeqCst);
                        seen.push((k, bits(out.get("odd").unwrap()), before, after));
                        i += 1;
                    }
                    seen
                })
            })
            .collect();
        for swap in 1..=SWAPS {
            trainer.fit(Some(1), |_| ControlFlow::Continue(())).unwrap();
            let head = trainer.heads().unwrap().remove(0);
            // Record the version before it can be observed.
            versions.lock().unwrap().push(head.clone());
            if swap % 2 == 0 {
                model.swap_head("odd", &head).unwrap();
            } else {
                model.set_heads(&HeadSet::new(vec![head])).unwrap();
            }
            swapped.store(swap, Ordering::SeqCst);
        }
        done.store(true, Ordering::SeqCst);
        readers.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });

    // Each version's outputs, single-threaded.
    let versions = versions.into_inner().unwrap();
    let expected: Vec<Vec<Vec<u32>>> = versions
        .iter()
        .map(|h| {
            model.swap_head("odd", h).unwrap();
            inputs
                .iter()
                .map(|x| bits(model.run(&[("image", x)], &["odd"]).unwrap().get("odd").unwrap()))
                .collect()
        })
        .collect();
    let distinct = expected.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(distinct > SWAPS / 2, "training changed the outputs only {distinct} times");
    let mut observed_versions = std::collections::BTreeSet::new();
    for (k, out, before, after) in &seen {
        // The call began after `before` swaps had finished and ended before `after + 2` had.
        let window = *before..=(*after + 1).min(SWAPS);
        let matched = window.clone().find(|&v| expected[v][*k] == *out);
        let v = matched.unwrap_or_else(|| {
            let any = (0..=SWAPS).find(|&v| expected[v][*k] == *out);
            panic!("input {k}: output matches no version in {window:?} (any version: {any:?})")
        });
        observed_versions.insert(v);
    }
    eprintln!(
        "{SWAPS} swaps, {} outputs from {READERS} threads, {} head versions observed",
        seen.len(),
        observed_versions.len()
    );
    assert!(seen.len() >= SWAPS, "only {} outputs observed", seen.len());
    assert!(observed_versions.len() > 10, "only {} versions observed", observed_versions.len());
}
