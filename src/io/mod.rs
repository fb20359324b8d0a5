//! Reading and writing files: safetensors (tensors by name), NIfTI images, and NumPy `.npy`/`.npz` arrays
//! (nnU-Net's probability files).

pub mod nifti;
pub mod npz;
pub mod safetensors;
