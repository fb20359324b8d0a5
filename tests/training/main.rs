//! Test suite: Training: synthetic data, augmentation, the trainer, checkpoints and resume.

#[path = "../common/mod.rs"]
mod common;

mod data;
mod train;
