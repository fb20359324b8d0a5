//! Test suite: GPU operations: the context, conv, norms, softmax, elementwise ops, affine resampling, the tape, the recording engine, every shader through naga, host interop, the augmentation kernels.

#[path = "../common/mod.rs"]
mod common;

mod augment;
mod autograd;
mod context;
mod conv;
mod elementwise;
mod engine;
mod interop;
mod norm;
mod resample;
mod shaders_naga;
mod softmax;
