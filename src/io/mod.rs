//! Reading and writing files: safetensors (tensors by name), NIfTI images, and the output rules every
//! command follows ([`output`]: atomic files, folders swapped in whole, nothing foreign deleted).

pub mod nifti;
pub mod output;
pub mod safetensors;
