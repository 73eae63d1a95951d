//! The device of a command: `--device`, else `$HYDRANT_DEVICE`, else auto (the runtime's
//! rules), and the trainer it picks for a training job.

use hydrant::backend::device::{self, Probe};
use hydrant::train::{choose_trainer, TrainJob, TrainerChoice};
use hydrant::{Device, Result};

/// The device asked for by the flag value `flag`, else `$HYDRANT_DEVICE`, else auto.
pub fn requested(flag: Option<&str>) -> Result<Device> {
    let explicit = flag.map(str::parse::<Device>).transpose()?;
    device::requested(explicit, std::env::var("HYDRANT_DEVICE").ok().as_deref())
}

/// The trainer of `job` on the device asked for by `flag`; says on stderr why when a usable
/// GPU is left for the CPU trainer.
pub fn trainer(flag: Option<&str>, job: &TrainJob) -> Result<TrainerChoice> {
    let choice = choose_trainer(requested(flag)?, &Probe::detect(), job)?;
    if choice.fell_back {
        eprintln!("training on the CPU instead of the GPU ({})", choice.reason);
    }
    Ok(choice)
}
