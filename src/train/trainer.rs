//! The training loop: SegResNetDS on synthetic volumes with deep supervision, AdamW and MONAI's warm-up +
//! cosine schedule; validation by sliding-window inference through the calibration accumulator; the
//! best-DSC and last checkpoints; exact resumption; a CSV log of the curves.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::config::TrainConfig;
use super::step::{train_step, StepLosses};
use crate::data::augment::augment_batch;
use crate::data::cache::{BatchPrefetcher, TrainingCache};
use crate::data::{DataRng, SyntheticDataset};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::output::write_file_atomically;
use crate::io::safetensors::{self as st, TensorFile, CASE_NAMES_KEY};
use crate::loss::Labels;
use crate::metrics::{CalibrationAccumulator, CalibrationMetrics};
use crate::nn::sliding_window::{BlendMode, SlidingWindowConfig};
use crate::nn::{AdamW, AdamWConfig, Network, SegResNetDs, WarmupCosineSchedule};
use crate::ops::softmax;
use crate::tensor::Tensor;

/// The metadata entry of an optimiser checkpoint that holds the training state (JSON).
const STATE_KEY: &str = "calibseg_train_state";

/// Step batches a cache run's loader thread may build ahead of the training loop.
const PREFETCH_AHEAD: usize = 2;

/// Salt separating the sampling stream from the weight initialisation (both derive from the seed).
const SAMPLING_SALT: u64 = 0x5EED_DA7A_0000_0001;

/// One evaluated volume: the probabilities' shape, the probabilities, the labels.
pub type KeptVolume = (Vec<usize>, Vec<f32>, Vec<u8>);

/// Validation (or test) results: macro mean over images of the class-wise values, background excluded.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Validation {
    /// Mean DSC.
    pub dsc: f64,
    /// Mean ECE.
    pub ece: f64,
    /// Mean ACE.
    pub ace: f64,
    /// Mean MCE.
    pub mce: f64,
}

/// One row of `log.csv`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogRow {
    /// Step after which the row was taken (1-based).
    pub step: usize,
    /// Learning rate of that step.
    pub lr: f64,
    /// The losses of that step.
    pub losses: StepLosses,
    /// Validation after that step, where one ran.
    pub validation: Option<Validation>,
}

/// What the loop reports as it goes (for progress display).
#[derive(Clone, Debug)]
pub enum Event {
    /// A step finished.
    Step {
        /// Steps done.
        step: usize,
        /// Total steps.
        total: usize,
        /// Its losses.
        losses: StepLosses,
        /// Steps per second since the run (or resumption) started.
        steps_per_second: f64,
    },
    /// A validation finished.
    Validation {
        /// After this step.
        step: usize,
        /// The metrics.
        metrics: Validation,
        /// Whether this is the best DSC so far (the best checkpoint was written).
        best: bool,
    },
}

/// What a run trains on.
pub enum TrainingData {
    /// The synthetic phantoms: training volumes `0..data.volumes`, then the validation and test volumes.
    Synthetic(SyntheticDataset),
    /// A preprocessed cache's fold: its training cases sampled, its validation cases validated on.
    Cache(Arc<TrainingCache>),
}

impl TrainingData {
    /// Classes, background included.
    pub fn num_classes(&self) -> usize {
        match self {
            TrainingData::Synthetic(d) => d.num_classes(),
            TrainingData::Cache(c) => c.classes(),
        }
    }
}

/// A training run in progress.
pub struct Trainer {
    config: TrainConfig,
    gpu: Gpu,
    net: SegResNetDs,
    optimizer: AdamW,
    schedule: WarmupCosineSchedule,
    data: TrainingData,
    rng: DataRng,
    step: usize,
    best: Option<(f64, usize)>,
    log: Vec<LogRow>,
    prefetch: Option<BatchPrefetcher>,
    timing: DataTiming,
}

/// How long the training steps took and how much of it went waiting for their batches.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DataTiming {
    /// Steps timed.
    pub steps: usize,
    /// Their whole time, batch to optimiser update.
    pub total: Duration,
    /// The part spent waiting for (or, on the phantoms, making) the batches.
    pub waiting: Duration,
}

impl DataTiming {
    /// The fraction of the step time spent waiting for data (0 before any step).
    pub fn waiting_fraction(&self) -> f64 {
        let total = self.total.as_secs_f64();
        if total > 0.0 {
            self.waiting.as_secs_f64() / total
        } else {
            0.0
        }
    }
}

impl Trainer {
    /// A fresh run: weights initialised from the seed, nothing trained.
    pub fn new(gpu: &Gpu, config: TrainConfig) -> Result<Self> {
        config.validate()?;
        config.check_device(gpu)?;
        let net = SegResNetDs::new(gpu, config.model.clone(), config.seed)?;
        let optimizer = AdamW::new(AdamWConfig {
            lr: config.lr,
            weight_decay: config.weight_decay,
            ..AdamWConfig::default()
        });
        let schedule = WarmupCosineSchedule::new(config.lr, config.warmup_steps, config.steps)
            .with_warmup_multiplier(0.5);
        let data = match &config.cache {
            None => TrainingData::Synthetic(SyntheticDataset::new(
                config.data.clone(),
                config.data_seed.unwrap_or(config.seed),
            )?),
            Some(source) => {
                let cache = TrainingCache::open(&source.path, source.fold)?;
                check_against_cache(&config, &cache)?;
                TrainingData::Cache(Arc::new(cache))
            }
        };
        let rng = DataRng::new(config.seed ^ SAMPLING_SALT);
        Ok(Trainer {
            config,
            gpu: gpu.clone(),
            net,
            optimizer,
            schedule,
            data,
            rng,
            step: 0,
            best: None,
            log: Vec::new(),
            prefetch: None,
            timing: DataTiming::default(),
        })
    }

    /// What the run trains on.
    pub fn data(&self) -> &TrainingData {
        &self.data
    }

    /// The synthetic volumes (training, validation and test), when the run trains on them.
    pub fn synthetic(&self) -> Option<&SyntheticDataset> {
        match &self.data {
            TrainingData::Synthetic(d) => Some(d),
            TrainingData::Cache(_) => None,
        }
    }

    /// The cache's fold, when the run trains on a cache.
    pub fn cache(&self) -> Option<&TrainingCache> {
        match &self.data {
            TrainingData::Synthetic(_) => None,
            TrainingData::Cache(c) => Some(c),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// The network.
    pub fn network(&self) -> &SegResNetDs {
        &self.net
    }

    /// Steps done.
    pub fn steps_done(&self) -> usize {
        self.step
    }

    /// The best validation DSC so far and its step.
    pub fn best(&self) -> Option<(f64, usize)> {
        self.best
    }

    /// The log so far.
    pub fn log(&self) -> &[LogRow] {
        &self.log
    }

    /// How long the steps so far took and how much of it went waiting for data.
    pub fn data_timing(&self) -> DataTiming {
        self.timing
    }

    /// One optimisation step on a freshly sampled batch. On a cache, the batches of the next steps are
    /// built meanwhile on a background thread ([`BatchPrefetcher`]; the same batches as built in place).
    pub fn step(&mut self) -> Result<StepLosses> {
        let lr = self.schedule.lr(self.step);
        self.optimizer.config.lr = lr;
        let started = Instant::now();
        let (x, labels) = match &self.data {
            TrainingData::Synthetic(d) => {
                let b = d.sample_batch(&mut self.rng, self.config.batch, self.config.patch)?;
                self.timing.waiting += started.elapsed();
                self.upload(b.shape, &b.image, &b.labels)?
            }
            TrainingData::Cache(c) => {
                let current = self
                    .prefetch
                    .as_ref()
                    .is_some_and(|p| p.next_step() == self.step);
                if !current {
                    // A fresh run, a resume, or steps taken out of order: start over from this step.
                    self.prefetch = None;
                }
                let (config, step) = (&self.config, self.step);
                let b = self
                    .prefetch
                    .get_or_insert_with(|| {
                        BatchPrefetcher::start(
                            Arc::clone(c),
                            config.patch,
                            config.batch,
                            config.seed,
                            step,
                            config.steps.max(step + 1),
                            PREFETCH_AHEAD,
                        )
                    })
                    .next_batch()?;
                self.timing.waiting += started.elapsed();
                let (x, labels) = self.upload(b.shape, &b.image, &b.labels)?;
                if b.is_plain() {
                    (x, labels)
                } else {
                    let (x, y) = augment_batch(&x, labels.tensor(), b.patch, &b.augment)?;
                    (x, Labels::indices(y)?)
                }
            }
        };
        let losses = train_step(
            &self.net,
            &mut self.optimizer,
            &self.config.train_loss(),
            &x,
            &labels,
        )?;
        self.timing.total += started.elapsed();
        self.timing.steps += 1;
        self.step += 1;
        self.log.push(LogRow {
            step: self.step,
            lr,
            losses,
            validation: None,
        });
        Ok(losses)
    }

    /// Indices of the held-out validation volumes (after the training volumes); on a cache, of the fold's
    /// validation cases.
    pub fn validation_indices(&self) -> Vec<usize> {
        if let TrainingData::Cache(c) = &self.data {
            return (0..c.val.len()).collect();
        }
        let start = self.config.data.volumes;
        (start..start + self.config.val_volumes).collect()
    }

    /// Indices of the held-out test volumes (after the validation volumes); on a cache, the fold's
    /// validation cases (a cache has no test set of its own).
    pub fn test_indices(&self) -> Vec<usize> {
        if let TrainingData::Cache(c) = &self.data {
            return (0..c.val.len()).collect();
        }
        let start = self.config.data.volumes + self.config.val_volumes;
        (start..start + self.config.test_volumes).collect()
    }

    /// The sliding-window settings of validation and testing.
    pub fn window(&self) -> SlidingWindowConfig {
        let w = &self.config.window;
        let c = SlidingWindowConfig::new(&self.config.roi())
            .with_overlap(w.overlap)
            .with_sw_batch_size(w.sw_batch_size)
            .with_mode(if w.gaussian {
                BlendMode::Gaussian
            } else {
                BlendMode::Constant
            });
        match w.sigma_scale {
            Some(s) => c.with_sigma_scale(s),
            None => c,
        }
    }

    /// An image `[B, C, X, Y, Z]` and its class indices `[B, 1, X, Y, Z]` on the device.
    fn upload(&self, shape: [usize; 5], image: &[f32], labels: &[u8]) -> Result<(Tensor, Labels)> {
        let x = Tensor::from_f32(&self.gpu, &shape, image)?;
        let mut label_shape = shape;
        label_shape[1] = 1;
        let labels =
            Labels::from_indices(&self.gpu, &label_shape, labels, self.data.num_classes())?;
        Ok((x, labels))
    }

    /// Whole held-out volume `index` (of [`Trainer::validation_indices`] or [`Trainer::test_indices`]):
    /// its image shape `[1, C, spatial...]`, image and labels.
    fn held_out(&self, index: usize) -> Result<([usize; 5], Vec<f32>, Vec<u8>)> {
        match &self.data {
            TrainingData::Synthetic(d) => {
                let b = d.full_batch(&[index])?;
                Ok((b.shape, b.image, b.labels))
            }
            TrainingData::Cache(c) => {
                let case = c.val.get(index).ok_or_else(|| {
                    Error::invalid(format!("the fold has no validation case {index}"))
                })?;
                let [x, y, z] = case.shape;
                let (mut image, mut labels) = (Vec::new(), Vec::new());
                case.crop([0, 0, 0], case.shape, &mut image, &mut labels)?;
                Ok(([1, case.channels, x, y, z], image, labels))
            }
        }
    }

    /// Probabilities `[1, C, D, H, W]` of one whole volume by sliding-window inference in eval mode.
    pub fn predict_volume(&self, image: &Tensor) -> Result<Tensor> {
        predict_probs(&self.net, image, &self.window())
    }

    /// Runs the volumes `indices` through the network and accumulates the calibration metrics
    /// (background excluded, `num_bins` bins). Also returns each volume's probabilities and labels when
    /// `keep` is set.
    #[allow(clippy::type_complexity)]
    pub fn evaluate(
        &self,
        indices: &[usize],
        keep: bool,
    ) -> Result<(CalibrationMetrics, Vec<KeptVolume>)> {
        let mut acc = CalibrationAccumulator::new(self.config.num_bins, false)?;
        let mut kept = Vec::new();
        for &i in indices {
            let (shape, image, label_values) = self.held_out(i)?;
            let (image, labels) = self.upload(shape, &image, &label_values)?;
            let probs = self.predict_volume(&image)?;
            acc.update(&probs, &labels)?;
            if keep {
                kept.push((probs.shape().to_vec(), probs.to_vec_f32()?, label_values));
            }
        }
        Ok((acc.aggregate()?, kept))
    }

    /// Validation on the held-out volumes.
    pub fn validate(&self) -> Result<Validation> {
        let (m, _) = self.evaluate(&self.validation_indices(), false)?;
        Ok(summarise(&m))
    }

    /// Writes `<dir>/<name>.safetensors` (the weights, MONAI keys) and `<dir>/<name>.optim.safetensors` (AdamW's
    /// moments, the step, the sampling state, the best DSC and the log so far), each atomically; the
    /// optimiser file is written first and both carry the step, so a pair that does not match is detected.
    pub fn save_checkpoint(&self, dir: &Path, name: &str) -> Result<()> {
        let named = self.net.store().named_vars();
        let (opt_step, moments) = self.optimizer.export_state(&named)?;
        // One metadata entry holding a JSON object with sorted keys: the file's bytes are then the same from
        // run to run (a map of several entries would be written in hash order).
        let mut state = BTreeMap::new();
        state.insert("step", self.step.to_string());
        state.insert("optimizer_step", opt_step.to_string());
        state.insert("rng_state", self.rng.state().to_string());
        if let Some((dsc, step)) = self.best {
            state.insert("best_dsc", format!("{dsc:e}"));
            state.insert("best_step", step.to_string());
        }
        state.insert(
            "log",
            String::from_utf8_lossy(&log_csv(&self.log)?).into_owned(),
        );
        state.insert("config", self.config.to_toml()?);
        let meta = HashMap::from([(
            STATE_KEY.to_string(),
            serde_json::to_string(&state).expect("strings serialise"),
        )]);
        st::write(
            dir.join(format!("{name}.optim.safetensors")),
            &moments,
            Some(&meta),
        )?;
        let wmeta = HashMap::from([("step".to_string(), self.step.to_string())]);
        self.net
            .store()
            .save_safetensors(dir.join(format!("{name}.safetensors")), Some(&wmeta))
    }

    /// Continues the run saved as `<dir>/<name>.*` by [`Trainer::save_checkpoint`]. The configuration must be
    /// the one the run was started with, except `steps` and `val_every`, which may change.
    pub fn resume(gpu: &Gpu, config: TrainConfig, dir: &Path, name: &str) -> Result<Self> {
        let mut t = Trainer::new(gpu, config)?;
        let opt_path = dir.join(format!("{name}.optim.safetensors"));
        let w_path = dir.join(format!("{name}.safetensors"));
        let opt = TensorFile::open(&opt_path)?;
        let weights = TensorFile::open(&w_path)?;
        let not_ours = |f: &TensorFile, what: &str| Error::Format {
            path: f.path().to_string(),
            message: format!("not a calibseg training checkpoint: {what}"),
        };
        let state: BTreeMap<String, String> = opt
            .metadata(STATE_KEY)
            .and_then(|s| serde_json::from_str(&s).ok())
            .ok_or_else(|| not_ours(&opt, &format!("no '{STATE_KEY}' in its metadata")))?;
        let meta = |k: &str| -> Result<String> {
            state
                .get(k)
                .cloned()
                .ok_or_else(|| not_ours(&opt, &format!("no '{k}' in its state")))
        };
        let num = |k: &str| -> Result<u64> {
            meta(k)?
                .parse()
                .map_err(|_| not_ours(&opt, &format!("'{k}' is not a number")))
        };
        let step = num("step")?;
        let weights_step = weights
            .metadata("step")
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| not_ours(&weights, "no step in its metadata"))?;
        if weights_step != step {
            return Err(Error::Format {
                path: w_path.display().to_string(),
                message: format!(
                    "weights are from another step than {} (step {step}): the checkpoint is incomplete",
                    opt_path.display()
                ),
            });
        }
        let saved = TrainConfig::from_toml(&meta("config")?)?;
        let mut mine = t.config.clone();
        mine.steps = saved.steps;
        mine.val_every = saved.val_every;
        if mine != saved {
            return Err(Error::invalid(format!(
                "{} was trained with another configuration (only steps and val_every may change on resume)",
                dir.display()
            )));
        }
        t.net.store().load_safetensors(&w_path, None)?;
        let mut moments = BTreeMap::new();
        for n in opt.names() {
            // Every tensor of the optimiser file is a moment.
            moments.insert(n.clone(), opt.f32(&n)?);
        }
        let named = t.net.store().named_vars();
        t.optimizer
            .import_state(&named, num("optimizer_step")?, &moments)?;
        t.rng = DataRng::from_state(num("rng_state")?);
        t.step = step as usize;
        if let (Some(d), Some(s)) = (state.get("best_dsc"), state.get("best_step")) {
            let dsc: f64 = d
                .parse()
                .map_err(|_| Error::invalid("bad best_dsc in checkpoint"))?;
            let s: usize = s
                .parse()
                .map_err(|_| Error::invalid("bad best_step in checkpoint"))?;
            t.best = Some((dsc, s));
        }
        t.log = parse_log_csv(&meta("log")?)?;
        Ok(t)
    }

    /// Trains until `config.steps`, validating every `val_every` steps (and at the end), writing
    /// `best.*` when the validation DSC improves, `last.*` after every validation, and `log.csv`. Stops
    /// cleanly between steps when `stop` becomes true (Ctrl-C): the last checkpoint is then complete.
    pub fn run(
        &mut self,
        out: &Path,
        stop: Option<&AtomicBool>,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<()> {
        let started = Instant::now();
        let first = self.step;
        let mut run_files_written = false;
        while self.step < self.config.steps {
            if stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
                // The last validated step is the last checkpoint (a checkpoint follows every validation).
                let saved = self
                    .log
                    .iter()
                    .rev()
                    .find(|r| r.validation.is_some())
                    .map(|r| r.step);
                return Err(Error::Interrupted(match saved {
                    Some(at) => format!(
                        "stopped at step {}; {} holds the checkpoint of step {at} (--resume continues it)",
                        self.step,
                        out.display()
                    ),
                    None => format!(
                        "stopped at step {}, before the first checkpoint (step {}): nothing of this run was kept",
                        self.step,
                        self.config.val_every.min(self.config.steps)
                    ),
                }));
            }
            let losses = self.step()?;
            let done = self.step - first;
            on_event(&Event::Step {
                step: self.step,
                total: self.config.steps,
                losses,
                steps_per_second: done as f64 / started.elapsed().as_secs_f64().max(1e-9),
            });
            if self.step.is_multiple_of(self.config.val_every) || self.step == self.config.steps {
                let v = self.validate()?;
                let best = self.best.is_none_or(|(d, _)| v.dsc > d);
                if best {
                    self.best = Some((v.dsc, self.step));
                }
                if let Some(row) = self.log.last_mut() {
                    row.validation = Some(v);
                }
                if !run_files_written {
                    // Written with the first checkpoint (not before): a run that stops earlier leaves no
                    // folder that looks resumable but is not.
                    self.write_run_files(out)?;
                    run_files_written = true;
                }
                if best {
                    self.save_checkpoint(out, "best")?;
                }
                self.save_checkpoint(out, "last")?;
                write_file_atomically(out.join("log.csv"), &log_csv(&self.log)?)?;
                on_event(&Event::Validation {
                    step: self.step,
                    metrics: v,
                    best,
                });
            }
        }
        Ok(())
    }

    /// Writes `<dir>/model.json` (MONAI's keyword arguments of the network) and `<dir>/config.toml` (the
    /// configuration), each atomically.
    pub fn write_run_files(&self, dir: &Path) -> Result<()> {
        let model = serde_json::to_vec_pretty(&self.config.model.to_json())
            .map_err(|e| Error::invalid(format!("model.json: {e}")))?;
        write_file_atomically(dir.join(MODEL_FILE), &model)?;
        if let TrainingData::Cache(c) = &self.data {
            // The cache's plan with the settings this run trained with: `calibseg predict --model` reads it.
            let plan = self.config.effective_plan(&c.plan);
            write_file_atomically(dir.join(PLAN_FILE), plan.to_json().as_bytes())?;
        }
        write_file_atomically(dir.join(CONFIG_FILE), self.config.to_toml()?.as_bytes())
    }

    /// Loads the best checkpoint's weights (or keeps the current ones when there is none).
    pub fn load_best(&mut self, out: &Path) -> Result<()> {
        let p = out.join("best.safetensors");
        if p.exists() {
            self.net.store().load_safetensors(&p, None)?;
        }
        Ok(())
    }

    /// The names of the test volumes, `synthetic-seed<seed>-<index>` (the data seed and the volume's index
    /// in the dataset): a volume's name says which volume it is, so evaluations of runs on different data
    /// merge, and the same volume in two runs is the same case.
    pub fn test_case_names(&self) -> Vec<String> {
        let seed = match &self.data {
            TrainingData::Cache(c) => return c.val.iter().map(|v| v.name.clone()).collect(),
            TrainingData::Synthetic(d) => d.seed(),
        };
        self.test_indices()
            .into_iter()
            .map(|i| format!("synthetic-seed{seed}-{i:03}"))
            .collect()
    }

    /// Predicts the test volumes and writes them with their labels as a safetensors file `probs`
    /// `[N, C, D, H, W]` + `labels` `[N, 1, D, H, W]` (i32), the input `calibseg eval` reads, with the
    /// volumes' names ([`Trainer::test_case_names`]) as its `cases` metadata.
    pub fn write_test_predictions(&self, path: &Path) -> Result<()> {
        let (_, kept) = self.evaluate(&self.test_indices(), true)?;
        let n = kept.len();
        let mut shape = kept[0].0.clone();
        shape[0] = n;
        let mut lshape = shape.clone();
        lshape[1] = 1;
        let probs: Vec<f32> = kept.iter().flat_map(|k| k.1.iter().copied()).collect();
        let labels: Vec<i32> = kept
            .iter()
            .flat_map(|k| k.2.iter().map(|&l| l as i32))
            .collect();
        let mut t = BTreeMap::new();
        t.insert("probs".to_string(), st::HostTensor::F32(shape, probs));
        t.insert("labels".to_string(), st::HostTensor::I32(lshape, labels));
        let names = serde_json::to_string(&self.test_case_names()).expect("strings serialise");
        let meta = HashMap::from([(CASE_NAMES_KEY.to_string(), names)]);
        st::write(path, &t, Some(&meta))
    }
}

/// The network's MONAI keyword arguments in a run folder.
pub const MODEL_FILE: &str = "model.json";
/// The configuration in a run folder.
pub const CONFIG_FILE: &str = "config.toml";
/// The plan in the folder of a run that trained on a cache (the cache's, with the run's training settings).
pub const PLAN_FILE: &str = "plan.json";

/// Error unless `config`'s network takes the cache's channels and predicts its classes.
fn check_against_cache(config: &TrainConfig, cache: &TrainingCache) -> Result<()> {
    let plan = cache.root.join(crate::data::cache::loader::PLAN_FILE);
    let m = &config.model;
    if m.in_channels != cache.channels() || m.out_channels != cache.classes() {
        return Err(Error::invalid(format!(
            "model.in_channels {} and model.out_channels {} must be the cache's {} channel(s) and {} classes ({})",
            m.in_channels,
            m.out_channels,
            cache.channels(),
            cache.classes(),
            plan.display()
        )));
    }
    Ok(())
}
/// The checkpoints of a run folder, by name (`<name>.safetensors` + `<name>.optim.safetensors`).
pub const CHECKPOINTS: [&str; 2] = ["last", "best"];

/// The step of checkpoint `<dir>/<name>.*` if both its files are there and carry the same step (`None`: a file
/// is missing, unreadable, or from another step).
pub fn complete_checkpoint_step(dir: &Path, name: &str) -> Option<u64> {
    let step_of = |file: String, key: &str, json: bool| -> Option<u64> {
        let f = TensorFile::open(dir.join(file)).ok()?;
        let value = f.metadata(key)?;
        if json {
            let state: BTreeMap<String, String> = serde_json::from_str(&value).ok()?;
            state.get("step")?.parse().ok()
        } else {
            value.parse().ok()
        }
    };
    let optim = step_of(format!("{name}.optim.safetensors"), STATE_KEY, true)?;
    let weights = step_of(format!("{name}.safetensors"), "step", false)?;
    (optim == weights).then_some(optim)
}

/// The newest complete checkpoint of a run folder (`last`, or `best` where a kill between the two files of
/// `last` left them from different steps), with its step.
pub fn newest_complete_checkpoint(dir: &Path) -> Option<(&'static str, u64)> {
    CHECKPOINTS
        .into_iter()
        .filter_map(|name| complete_checkpoint_step(dir, name).map(|s| (name, s)))
        // `last` first, so it wins a tie.
        .fold(None, |best, (name, step)| match best {
            Some((_, s)) if s >= step => best,
            _ => Some((name, step)),
        })
}

/// Eval-mode sliding-window inference followed by softmax: `[B, C, spatial...]` probabilities.
pub fn predict_probs(
    net: &dyn Network,
    image: &Tensor,
    window: &SlidingWindowConfig,
) -> Result<Tensor> {
    softmax(&crate::nn::predict_logits(net, image, Some(window))?)
}

/// The summary values the log and the best-checkpoint choice use.
pub fn summarise(m: &CalibrationMetrics) -> Validation {
    let s = &m.summary;
    Validation {
        dsc: s.dsc.mean,
        ece: s.ece.mean,
        ace: s.ace.mean,
        mce: s.mce.mean,
    }
}

const LOG_HEADER: [&str; 10] = [
    "step", "lr", "loss", "dice", "ce", "ace", "val_dsc", "val_ece", "val_ace", "val_mce",
];

/// `log.csv`: one row per step; validation columns empty where none ran.
pub fn log_csv(rows: &[LogRow]) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let err = |e: csv::Error| Error::invalid(format!("log.csv: {e}"));
    w.write_record(LOG_HEADER).map_err(err)?;
    for r in rows {
        let v = r.validation;
        let opt =
            |f: fn(&Validation) -> f64| v.as_ref().map_or(String::new(), |v| format!("{:e}", f(v)));
        w.write_record([
            r.step.to_string(),
            format!("{:e}", r.lr),
            format!("{:e}", r.losses.total),
            format!("{:e}", r.losses.dice),
            format!("{:e}", r.losses.ce),
            format!("{:e}", r.losses.ace),
            opt(|v| v.dsc),
            opt(|v| v.ece),
            opt(|v| v.ace),
            opt(|v| v.mce),
        ])
        .map_err(err)?;
    }
    w.into_inner()
        .map_err(|e| Error::invalid(format!("log.csv: {e}")))
}

/// Reads what [`log_csv`] wrote (exactly: floats are written in shortest round-trip form).
pub fn parse_log_csv(text: &str) -> Result<Vec<LogRow>> {
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let bad = |m: String| Error::invalid(format!("checkpoint log: {m}"));
    let mut rows = Vec::new();
    for rec in r.records() {
        let rec = rec.map_err(|e| bad(e.to_string()))?;
        if rec.len() != LOG_HEADER.len() {
            return Err(bad(format!("{} columns", rec.len())));
        }
        let f = |i: usize| -> Result<f64> {
            rec[i]
                .parse()
                .map_err(|_| bad(format!("'{}' is not a number", &rec[i])))
        };
        let f32_at = |i: usize| -> Result<f32> {
            rec[i]
                .parse()
                .map_err(|_| bad(format!("'{}' is not a number", &rec[i])))
        };
        let validation = if rec[6].is_empty() {
            None
        } else {
            Some(Validation {
                dsc: f(6)?,
                ece: f(7)?,
                ace: f(8)?,
                mce: f(9)?,
            })
        };
        rows.push(LogRow {
            step: rec[0].parse().map_err(|_| bad("bad step".into()))?,
            lr: f(1)?,
            losses: StepLosses {
                total: f32_at(2)?,
                dice: f32_at(3)?,
                ce: f32_at(4)?,
                ace: f32_at(5)?,
            },
            validation,
        });
    }
    Ok(rows)
}
