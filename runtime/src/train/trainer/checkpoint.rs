//! Checkpoints: everything a [`Trainer`] needs to continue exactly where it stopped — heads,
//! optimizer state (every slot, uncertainty weights included), weighting state, epoch and step,
//! the random stream, early-stopping state and history — in one head file (safetensors), saved
//! atomically. A run resumed from a checkpoint gives the same result as an uninterrupted one.
//!
//! The cached features are not saved: the resumed trainer is given the same samples again
//! (checked by count).

use super::{EpochReport, Trainer};
use crate::error::{Error, Result};
use crate::heads::HeadSet;
use crate::tensor::Tensor;
use crate::train::network::Network;
use crate::train::optim::SlotState;
use crate::train::weighting::WeightState;
use crate::train::{Head, HeadSpec};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Metadata key of the trainer state.
const STATE_KEY: &str = "hydrant.checkpoint";
const SLOT_PREFIX: &str = "hydrant.checkpoint.slot.";
const BEST_PREFIX: &str = "hydrant.checkpoint.best.";
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct State {
    version: u32,
    epoch: usize,
    step: usize,
    samples: usize,
    rng_seed: Vec<u8>,
    rng_stream: u64,
    /// The stream position, as a decimal string (u128 does not fit JSON numbers).
    rng_word_pos: String,
    weighting: WeightState,
    optimizer_steps: u64,
    slot_steps: Vec<u64>,
    best_loss: Option<f64>,
    best_heads: Vec<HeadSpec>,
    stale_epochs: usize,
    history: Vec<EpochReport>,
}

fn json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v)
        .map_err(|e| Error::InvalidArgument(format!("cannot encode checkpoint: {e}")))
}

impl Trainer {
    /// The trainer's whole state as a head file's contents.
    pub fn checkpoint(&mut self) -> Result<HeadSet> {
        let mut set = self.head_set(false)?;
        let slots = &self.optimizer.slots;
        for (k, slot) in slots.iter().enumerate() {
            for (kind, v) in [("first", &slot.first), ("second", &slot.second)] {
                if !v.is_empty() {
                    set.extra_tensors.push((
                        format!("{SLOT_PREFIX}{k}.{kind}"),
                        Tensor::new(&[v.len()], v.clone())?,
                    ));
                }
            }
        }
        let mut best_heads = Vec::new();
        if let Some((_, heads)) = &self.best {
            for h in heads {
                best_heads.push(h.spec().clone());
                for (n, t) in h.tensors() {
                    set.extra_tensors.push((format!("{BEST_PREFIX}{}.{n}", h.name()), t.clone()));
                }
            }
        }
        let state = State {
            version: VERSION,
            epoch: self.epoch,
            step: self.step,
            samples: self.cache.rows(),
            rng_seed: self.rng.get_seed().to_vec(),
            rng_stream: self.rng.get_stream(),
            rng_word_pos: self.rng.get_word_pos().to_string(),
            weighting: self.weighting.clone(),
            optimizer_steps: self.optimizer.steps,
            slot_steps: slots.iter().map(|s| s.steps).collect(),
            best_loss: self.best.as_ref().map(|(l, _)| *l),
            best_heads,
            stale_epochs: self.stale_epochs,
            history: self.history.clone(),
        };
        set.extra_metadata.push((STATE_KEY.to_string(), json(&state)?));
        set.extra_tensors.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(set)
    }

    /// Saves [`Trainer::checkpoint`] to `path` atomically.
    pub fn save_checkpoint(&mut self, path: impl AsRef<Path>) -> Result<()> {
        self.checkpoint()?.save(path)
    }

    /// A trainer continuing from a checkpoint file, with the same `options` as the run that
    /// wrote it. Add the same samples again (features or model inputs) before training.
    pub fn resume(path: impl AsRef<Path>, options: super::TrainOptions) -> Result<Trainer> {
        Trainer::from_checkpoint(&HeadSet::load(path)?, options)
    }

    /// [`Trainer::resume`] from a checkpoint already read.
    pub fn from_checkpoint(set: &HeadSet, options: super::TrainOptions) -> Result<Trainer> {
        let bad = |m: String| Error::InvalidModel(format!("checkpoint: {m}"));
        let json =
            set.extra_metadata.iter().find(|(k, _)| k == STATE_KEY).map(|(_, v)| v).ok_or_else(
                || bad(format!("no `{STATE_KEY}` entry: a head file, not a checkpoint")),
            )?;
        let state: State = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
        if state.version != VERSION {
            return Err(bad(format!("version {} (this build reads {VERSION})", state.version)));
        }
        if state.weighting.kind != options.weighting {
            return Err(bad(format!(
                "it was written with weighting {:?}, the options ask for {:?}",
                state.weighting.kind, options.weighting
            )));
        }
        let mut t = Trainer::new(set.heads.clone(), options)?;
        if state.slot_steps.len() != t.optimizer.slots.len() {
            return Err(bad(format!(
                "{} optimizer slots for {} parameter tensors",
                state.slot_steps.len(),
                t.optimizer.slots.len()
            )));
        }
        let tensor = |name: &str| set.extra_tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t);
        for (k, slot) in t.optimizer.slots.iter_mut().enumerate() {
            let mut restored = SlotState { steps: state.slot_steps[k], ..SlotState::default() };
            for (kind, dst) in [("first", &mut restored.first), ("second", &mut restored.second)] {
                if let Some(v) = tensor(&format!("{SLOT_PREFIX}{k}.{kind}")) {
                    *dst = v.clone().into_vec::<f32>().map_err(|e| bad(e.to_string()))?;
                }
            }
            *slot = restored;
        }
        t.optimizer.steps = state.optimizer_steps;
        let seed: [u8; 32] = state
            .rng_seed
            .as_slice()
            .try_into()
            .map_err(|_| bad("random seed is not 32 bytes".into()))?;
        let mut rng: ChaCha8Rng = rand::SeedableRng::from_seed(seed);
        rng.set_stream(state.rng_stream);
        rng.set_word_pos(
            state.rng_word_pos.parse().map_err(|_| bad("bad random stream position".into()))?,
        );
        t.rng = rng;
        if state.weighting.weights.len() != t.tasks.len() {
            return Err(bad("weighting state does not match the heads".into()));
        }
        t.weighting = state.weighting;
        if let Some(loss) = state.best_loss {
            let mut best = Vec::with_capacity(state.best_heads.len());
            for spec in state.best_heads {
                let prefix = format!("{BEST_PREFIX}{}.", spec.name);
                let tensors = set
                    .extra_tensors
                    .iter()
                    .filter_map(|(n, t)| {
                        n.strip_prefix(&prefix).map(|r| (r.to_string(), t.clone()))
                    })
                    .collect();
                best.push(Head::new(spec, tensors)?);
            }
            // Check the best heads build before accepting them.
            for h in &best {
                Network::<f32>::new(h)?;
            }
            t.best = Some((loss, best));
        }
        t.epoch = state.epoch;
        t.step = state.step;
        t.stale_epochs = state.stale_epochs;
        t.history = state.history;
        t.resumed_samples = Some(state.samples);
        Ok(t)
    }

    /// Checks, before training resumes, that the trainer holds as many samples as when the
    /// checkpoint was taken.
    pub(super) fn check_resumed(&self) -> Result<()> {
        match self.resumed_samples {
            Some(n) if n != self.cache.rows() => Err(Error::InvalidArgument(format!(
                "the checkpoint was taken with {n} samples, the trainer holds {}: add the same samples",
                self.cache.rows()
            ))),
            _ => Ok(()),
        }
    }
}
