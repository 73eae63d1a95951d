//! Execution backends. Each runs graph segments; the CPU backend uses tract.

pub mod cpu;
pub mod cpu_ops;
pub mod profile;
pub(crate) mod rows;
