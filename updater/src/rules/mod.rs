//! Pure rules of the machine: the phase of the A/B lifecycle and maintenance windows. No file,
//! clock, process or network access: the world comes in as parameters.

pub mod phase;
pub mod window;
