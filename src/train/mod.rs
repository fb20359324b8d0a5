//! Training segmentation networks with the calibration losses: one step ([`train_step`]), the loop around
//! it ([`Trainer`]) and its configuration ([`TrainConfig`]). A whole run in an output folder (`calibseg
//! train`) is [`crate::commands::train::train_in_folder`].

mod config;
mod step;
mod trainer;

pub use config::{CacheSource, TrainConfig, WindowSettings};
pub use step::{train_step, StepLosses, TrainLoss};
pub use trainer::{
    complete_checkpoint_step, log_csv, newest_complete_checkpoint, parse_log_csv, predict_probs,
    summarise, DataTiming, Event, KeptVolume, LogRow, Trainer, TrainingData, Validation,
    CHECKPOINTS, CONFIG_FILE, MODEL_FILE, PLAN_FILE,
};
