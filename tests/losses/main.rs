//! Test suite: Losses: mL1-ACE, Dice, CE, their combinations and deep supervision (and the names users write for them), against the f64 reference, finite differences and the PyTorch fixtures.

#[path = "../common/mod.rs"]
mod common;

mod ace;
mod ace_fixtures;
mod deep_supervision;
mod dice_ce;
mod loss_fixtures;
mod names;
mod pieces;
