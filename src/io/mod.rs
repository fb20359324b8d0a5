//! Reading and writing files: safetensors (tensors by name), NIfTI images, NumPy `.npy`/`.npz` arrays
//! (nnU-Net's probability files), how inputs are opened ([`input`]: regular files only), and the output rules every command follows ([`output`]: atomic files,
//! folders swapped in whole, nothing foreign deleted).

pub mod input;
pub mod nifti;
pub mod npz;
pub mod output;
pub mod safetensors;
