//! Test suite: File formats: safetensors, NIfTI, NumPy .npz and the safe-output path.

#[path = "../common/mod.rs"]
mod common;

mod io_npz;
mod io_safetensors;
mod output;
