//! Whether the machine offers a usable CUDA driver and devices.

use crate::backend::device::Probe;

/// What the machine offers: the driver library, its initialisation, the device count.
pub(crate) fn probe() -> Probe {
    // SAFETY: only tries to dlopen the driver library by name; no driver call is made.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Probe::NoDriver;
    }
    if let Err(e) = cudarc::driver::result::init() {
        return Probe::DriverError(e.to_string());
    }
    match cudarc::driver::result::device::get_count() {
        Ok(n) => Probe::Devices(n.max(0) as usize),
        Err(e) => Probe::DriverError(e.to_string()),
    }
}
