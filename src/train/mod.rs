//! Training segmentation networks with the calibration losses: one step ([`train_step`]), the loop around
//! it ([`Trainer`]), its configuration ([`TrainConfig`]) and a whole run in an output folder
//! ([`train_in_folder`]).

mod config;
mod run;
mod step;
mod trainer;

pub use config::{LossName, TrainConfig, WindowSettings};
pub use run::{train_in_folder, RunOptions, RunOutcome};
pub use step::{train_step, StepLosses, TrainLoss};
pub use trainer::{
    log_csv, parse_log_csv, predict_probs, summarise, Event, KeptVolume, LogRow, Trainer,
    Validation,
};
