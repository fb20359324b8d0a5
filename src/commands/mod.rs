//! The command engines: what each `calibseg` subcommand does with files and folders, above the library's
//! maths. The binary (`src/bin/calibseg.rs`) parses arguments, calls one of these and prints or draws what
//! it returns; the losses, metrics, networks and trainer they use know nothing of files named on a command
//! line, output folders or terminals.
//!
//! - [`loss`]: `calibseg loss`, a loss and its gradient from a safetensors file to another.
//! - [`eval`]: `calibseg eval`, the case sources (safetensors, NIfTI, NumPy), the output folder and its
//!   reports ([`eval::report`]), and `--merge` ([`eval::merge()`]).
//! - [`predict`]: `calibseg predict`, a network's logits and probabilities for a volume file.
//! - [`train`]: `calibseg train`, a whole training run in an output folder.
//! - [`verify`]: `calibseg verify`, nnU-Net's integrity checks on an MSD or nnU-Net v2 dataset.
//! - [`synth`]: `calibseg synth`, the synthetic phantoms written as an nnU-Net v2 or MSD dataset.
//! - [`study`]: the calibration study (`examples/calibration_study.rs`): three losses and temperature
//!   scaling over several seeds, paired tests, `results.json` / `results.md` and the reliability picture.
//! - [`prepare`]: `calibseg prepare`, a dataset's fingerprint, training plan and preprocessed cases in a cache (`--shard`, the memory guard).
//!
//! `calibseg bench` runs [`crate::bench`], the library of benchmark cases, directly.

pub mod eval;
pub mod loss;
pub mod predict;
pub mod prepare;
pub mod study;
pub mod synth;
pub mod train;
pub mod verify;
