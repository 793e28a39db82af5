//! Pure rules of the machine: the phase of the A/B lifecycle, the gptprio bits and the boot
//! loader's choice, maintenance windows. No file, clock, process or network access: the world
//! comes in as parameters.

pub mod gptprio;
pub mod phase;
pub mod window;
