//! upd: the machine-side agent that fetches, verifies, stages and switches OS and sysext images in lockstep.
