//! Execution backends. Each runs graph segments; the CPU backend uses tract.

pub mod cpu;
pub(crate) mod rows;
