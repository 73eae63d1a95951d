//! Choosing the device a model runs on: what was asked for ([`Device`]), what this build and
//! machine offer ([`Probe`]), and why the choice fell where it did.

use crate::error::{Error, Result};
use crate::model::Device;

/// What the machine offers for CUDA, as seen by this build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// hydrant was built without the `cuda` feature.
    NotBuilt,
    /// No CUDA driver library (libcuda) could be loaded.
    NoDriver,
    /// The driver loaded but failed (initialisation or device count), with its message.
    DriverError(String),
    /// The driver works and sees this many devices.
    Devices(usize),
}

impl Probe {
    /// Probes this build and machine. Never panics: the driver library's presence is checked
    /// before any driver call.
    pub fn detect() -> Probe {
        #[cfg(feature = "cuda")]
        {
            super::cuda::probe()
        }
        #[cfg(not(feature = "cuda"))]
        {
            Probe::NotBuilt
        }
    }

    fn why_not(&self) -> Option<String> {
        match self {
            Probe::NotBuilt => Some("hydrant was built without the `cuda` feature".into()),
            Probe::NoDriver => Some("no CUDA driver (libcuda) found".into()),
            Probe::DriverError(e) => Some(format!("the CUDA driver failed: {e}")),
            Probe::Devices(0) => Some("the CUDA driver sees no device".into()),
            Probe::Devices(_) => None,
        }
    }
}

/// The device chosen for a model and the reason, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// Never [`Device::Auto`].
    pub device: Device,
    /// Why this device (shown by `hydrant inspect`).
    pub reason: String,
}

/// Decides where a model asked to run on `requested` runs, given what `probe` found. An explicit
/// CUDA device that is not usable is an error; `Auto` falls back to the CPU and says why.
pub fn choose(requested: Device, probe: &Probe) -> Result<Choice> {
    match requested {
        Device::Cpu => Ok(Choice { device: Device::Cpu, reason: "requested".into() }),
        Device::Auto => Ok(match probe.why_not() {
            None => {
                Choice { device: Device::Cuda(0), reason: "auto: a CUDA device is present".into() }
            }
            Some(why) => Choice { device: Device::Cpu, reason: format!("auto: {why}") },
        }),
        Device::Cuda(i) => {
            if let Some(why) = probe.why_not() {
                return Err(Error::InvalidArgument(format!("device cuda:{i}: {why}")));
            }
            match probe {
                Probe::Devices(n) if i >= *n => Err(Error::InvalidArgument(format!(
                    "device cuda:{i}: the CUDA driver sees {n} device(s) (cuda:0..cuda:{})",
                    n - 1
                ))),
                _ => Ok(Choice { device: Device::Cuda(i), reason: "requested".into() }),
            }
        }
    }
}

/// The device asked for: `explicit` when given, else the `HYDRANT_DEVICE` value `env` when set
/// and not empty, else [`Device::Auto`].
pub fn requested(explicit: Option<Device>, env: Option<&str>) -> Result<Device> {
    if let Some(d) = explicit {
        return Ok(d);
    }
    match env.map(str::trim) {
        None | Some("") => Ok(Device::Auto),
        Some(s) => {
            s.parse().map_err(|e: Error| Error::InvalidArgument(format!("HYDRANT_DEVICE: {e}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_takes_cuda_only_when_everything_is_there() {
        let c = choose(Device::Auto, &Probe::Devices(2)).unwrap();
        assert_eq!(c.device, Device::Cuda(0));
        for (probe, words) in [
            (Probe::NotBuilt, "without the `cuda` feature"),
            (Probe::NoDriver, "no CUDA driver"),
            (Probe::DriverError("CUDA_ERROR_NO_DEVICE".into()), "CUDA_ERROR_NO_DEVICE"),
            (Probe::Devices(0), "no device"),
        ] {
            let c = choose(Device::Auto, &probe).unwrap();
            assert_eq!(c.device, Device::Cpu, "{probe:?}");
            assert!(c.reason.starts_with("auto: ") && c.reason.contains(words), "{}", c.reason);
        }
    }

    #[test]
    fn explicit_cuda_without_a_usable_device_is_an_error() {
        for probe in [Probe::NotBuilt, Probe::NoDriver, Probe::DriverError("x".into())] {
            let e = choose(Device::Cuda(0), &probe).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
            assert!(e.to_string().contains("cuda:0"), "{e}");
        }
        let e = choose(Device::Cuda(2), &Probe::Devices(2)).unwrap_err();
        assert!(e.to_string().contains("sees 2 device(s)"), "{e}");
        assert_eq!(choose(Device::Cuda(1), &Probe::Devices(2)).unwrap().device, Device::Cuda(1));
    }

    #[test]
    fn cpu_is_always_available() {
        for probe in [Probe::NotBuilt, Probe::NoDriver, Probe::Devices(4)] {
            assert_eq!(choose(Device::Cpu, &probe).unwrap().device, Device::Cpu);
        }
    }

    #[test]
    fn explicit_option_beats_the_environment() {
        assert_eq!(requested(Some(Device::Cpu), Some("cuda:1")).unwrap(), Device::Cpu);
        assert_eq!(requested(None, Some("cuda:1")).unwrap(), Device::Cuda(1));
        assert_eq!(requested(None, Some(" cpu ")).unwrap(), Device::Cpu);
        assert_eq!(requested(None, Some("")).unwrap(), Device::Auto);
        assert_eq!(requested(None, None).unwrap(), Device::Auto);
        let e = requested(None, Some("gpu")).unwrap_err();
        assert!(e.to_string().contains("HYDRANT_DEVICE") && e.to_string().contains("gpu"), "{e}");
    }

    #[test]
    fn this_build_probes_without_panicking() {
        let probe = Probe::detect();
        if cfg!(not(feature = "cuda")) {
            assert_eq!(probe, Probe::NotBuilt);
        }
        assert!(choose(Device::Auto, &probe).is_ok());
    }
}
