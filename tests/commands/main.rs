//! Test suite: The `calibseg` command end to end: loss, eval (reports, merges), predict, bench, verify, and hostile inputs.

#[path = "../common/mod.rs"]
mod common;

#[path = "../common/alloc.rs"]
mod alloc;

#[global_allocator]
static ALLOCATOR: alloc::Tracking = alloc::Tracking;

mod bench;
mod cli_bench;
mod cli_loss;
mod cli_predict;
mod eval;
mod eval_reports;
mod hostile;
mod hostile_io;
mod pieces;
mod plan;
mod predict_runs;
mod prepare_shard;
mod verify;
