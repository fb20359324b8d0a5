//! Test suite: File formats: safetensors, NIfTI (against nibabel), NumPy .npz, preprocessing (against MONAI), how inputs are opened and the safe-output path.

#[path = "../common/mod.rs"]
mod common;

#[path = "../common/alloc.rs"]
mod alloc;

#[global_allocator]
static ALLOCATOR: alloc::Tracking = alloc::Tracking;

mod input;

mod io_npz;
mod io_safetensors;
mod nifti;
mod output;
mod preprocess;
