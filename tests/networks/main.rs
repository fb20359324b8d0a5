//! Test suite: Layers, SegResNetDS and SegResNet against MONAI, and sliding-window inference.

#[path = "../common/mod.rs"]
mod common;

mod networks;
mod nn;
mod sliding_window;
