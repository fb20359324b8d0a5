//! Reading and writing files: safetensors (tensors by name) and NIfTI images.

pub mod nifti;
pub mod safetensors;
