//! Test suite: Training: synthetic data, augmentation, the trainer, checkpoints and resume, and hostile
//! training configurations and run folders.

#[path = "../common/mod.rs"]
mod common;

mod augment_gpu;
mod cache;
mod data;
mod hostile;
mod study;
mod train;
mod train_cache;
