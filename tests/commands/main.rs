//! Test suite: The `calibseg` command end to end: loss, eval (reports, merges), predict, bench, and hostile inputs.

#[path = "../common/mod.rs"]
mod common;

mod bench;
mod cli_bench;
mod cli_loss;
mod cli_predict;
mod eval;
mod eval_reports;
mod hostile;
mod hostile_io;
