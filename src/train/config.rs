//! The training configuration: everything a run depends on, read from TOML (`calibseg train --config`),
//! written back as the run's `config.toml`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::step::TrainLoss;
use crate::data::plan::Plan;
use crate::data::SyntheticConfig;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::loss::PaperLoss;
use crate::nn::sliding_window::BlendMode;
use crate::nn::SegResNetDsConfig;

/// Sliding-window settings of validation and testing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WindowSettings {
    /// Window size `[D, H, W]`; empty: the training patch.
    pub roi: Vec<usize>,
    /// Overlap between windows (0.25).
    pub overlap: f64,
    /// Windows per network call (2).
    pub sw_batch_size: usize,
    /// Gaussian blending (true) or constant.
    pub gaussian: bool,
    /// The Gaussian's sigma as a fraction of the window (MONAI's `sigma_scale`); absent: MONAI's 0.125.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sigma_scale: Option<f64>,
}

impl Default for WindowSettings {
    fn default() -> Self {
        WindowSettings {
            roi: Vec::new(),
            overlap: 0.25,
            sw_batch_size: 2,
            gaussian: true,
            sigma_scale: None,
        }
    }
}

fn bad_config(m: String) -> Error {
    Error::invalid(format!("training configuration: {m}"))
}

/// The most volumes of each split, patches per batch or windows per call a configuration may ask for.
const MAX_COUNT: usize = 1 << 20;

/// Lays `given` over `base`: tables merge key by key (recursively), any other value replaces the base's.
fn overlay(base: &mut toml::Table, given: toml::Table) {
    for (key, value) in given {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(g)) => overlay(b, g),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Everything a training run depends on. Same configuration, same seed, same adapter: the same
/// checkpoints and logs, bit for bit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// The loss.
    pub loss: PaperLoss,
    /// Weight of the Dice term (baseline 1, ACE losses 0.33).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lambda_dice: Option<f32>,
    /// Weight of the cross-entropy term (baseline 1, ACE losses 0.33).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lambda_ce: Option<f32>,
    /// Weight of the mL1-ACE term (0.33).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lambda_ace: Option<f32>,
    /// Bins of the mL1-ACE loss and of the validation metrics (20).
    pub num_bins: usize,
    /// Optimisation steps.
    pub steps: usize,
    /// Validate every this many steps (and at the last step).
    pub val_every: usize,
    /// Training patch `[D, H, W]`.
    #[serde(deserialize_with = "crate::data::exact_array")]
    pub patch: [usize; 3],
    /// Patches per batch.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// AdamW's decoupled weight decay (1e-5, the paper's).
    pub weight_decay: f64,
    /// Linear warm-up steps from half the learning rate (MONAI's `WarmupCosineSchedule`), then cosine to 0.
    pub warmup_steps: usize,
    /// Seed of the weights, the data and the sampling.
    pub seed: u64,
    /// Seed of the synthetic data alone, when it must differ from `seed` (a study trains several seeds on
    /// the same data); absent: `seed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_seed: Option<u64>,
    /// Held-out volumes for validation.
    pub val_volumes: usize,
    /// Held-out volumes for the final test evaluation.
    pub test_volumes: usize,
    /// Sliding-window inference settings.
    pub window: WindowSettings,
    /// The network (MONAI's SegResNetDS keyword arguments; `out_channels` must equal the data's classes).
    pub model: SegResNetDsConfig,
    /// The synthetic data (unused when `cache` is given).
    pub data: SyntheticConfig,
    /// Train on a preprocessed cache (`calibseg prepare`'s folder) instead of the synthetic data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheSource>,
}

/// A preprocessed cache and the cross-validation fold trained on (`[cache]` in TOML, `--data`, `--fold`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSource {
    /// The cache folder (`calibseg prepare --out`).
    pub path: PathBuf,
    /// The fold of `CACHE/splits_final.json` (0 to 4 for nnU-Net's five folds).
    #[serde(default)]
    pub fold: usize,
}

impl Default for TrainConfig {
    /// The default run: small enough for a CPU driver (lavapipe) in minutes.
    fn default() -> Self {
        let data = SyntheticConfig {
            shape: [48, 48, 48],
            volumes: 24,
            ..SyntheticConfig::default()
        };
        TrainConfig {
            loss: PaperLoss::Baseline,
            lambda_dice: None,
            lambda_ce: None,
            lambda_ace: None,
            num_bins: 20,
            steps: 150,
            val_every: 50,
            patch: [24, 24, 24],
            batch: 2,
            lr: 2e-3,
            weight_decay: 1e-5,
            warmup_steps: 10,
            seed: 12345,
            data_seed: None,
            val_volumes: 3,
            test_volumes: 8,
            // One window covers a whole 48^3 volume: validation and testing cost one forward pass each.
            window: WindowSettings {
                roi: vec![48, 48, 48],
                ..WindowSettings::default()
            },
            cache: None,
            model: SegResNetDsConfig {
                init_filters: 8,
                in_channels: 1,
                out_channels: data.foreground_classes + 1,
                blocks_down: vec![1, 1, 2],
                dsdepth: 2,
                ..SegResNetDsConfig::default()
            },
            data,
        }
    }
}

impl TrainConfig {
    /// The paper's settings (reference §5) on synthetic data: SegResNetDS init 32, blocks [1, 2, 2, 4, 4],
    /// dsdepth 4, 128^3 patches, batch 2, lr 2e-4: for real GPUs.
    pub fn paper() -> Self {
        let data = SyntheticConfig {
            shape: [160, 160, 160],
            volumes: 64,
            ..SyntheticConfig::default()
        };
        TrainConfig {
            steps: 20_000,
            val_every: 1000,
            patch: [128, 128, 128],
            batch: 2,
            lr: 2e-4,
            warmup_steps: 200,
            val_volumes: 8,
            test_volumes: 16,
            window: WindowSettings {
                sw_batch_size: 1,
                ..WindowSettings::default()
            },
            model: SegResNetDsConfig::paper(1, data.foreground_classes + 1),
            data,
            ..TrainConfig::default()
        }
    }

    /// Reads TOML; missing keys keep the default run's values ([`TrainConfig::default`]), also inside a
    /// table of which some keys are given (`[data]`, `[window]`, `[model]`, `[data.augment]`); unknown keys,
    /// wrong types and arrays of the wrong length are errors.
    pub fn from_toml(text: &str) -> Result<Self> {
        Self::from_toml_over(TrainConfig::default(), text)
    }

    /// Reads TOML laid over `base` (as [`TrainConfig::from_toml`] lays it over the default run).
    pub fn from_toml_over(base: TrainConfig, text: &str) -> Result<Self> {
        let given: toml::Table =
            toml::from_str(text).map_err(|e| bad_config(e.message().to_string()))?;
        Self::overlaid(base, given)
    }

    fn overlaid(base: TrainConfig, given: toml::Table) -> Result<Self> {
        // The given keys laid over the base, table by table: serde's `default` would fill a partly
        // given table from its type's own defaults (64^3 volumes, MONAI's network), not the base's.
        let mut merged = toml::Table::try_from(base)
            .map_err(|e| bad_config(format!("the base run does not serialise: {e}")))?;
        overlay(&mut merged, given);
        toml::Value::Table(merged)
            .try_into()
            .map_err(|e: toml::de::Error| bad_config(e.message().to_string()))
    }

    /// The configuration of a fresh run: the TOML `text` (if any) laid over the default run, or, when it
    /// trains on a cache (`data`, else the TOML's `[cache]`), over the default run with the cache plan's
    /// patch, batch, model, window and learning rate ([`TrainConfig::with_plan`]); then `data` and `fold`
    /// (default 0) as the cache. `--fold` without a cache is an error.
    pub fn for_run(text: Option<&str>, data: Option<&Path>, fold: Option<usize>) -> Result<Self> {
        let given: toml::Table = match text {
            Some(t) => toml::from_str(t).map_err(|e| bad_config(e.message().to_string()))?,
            None => toml::Table::new(),
        };
        let from_toml = given
            .get("cache")
            .and_then(|c| c.get("path"))
            .and_then(|p| p.as_str())
            .map(PathBuf::from);
        let Some(path) = data.map(Path::to_path_buf).or(from_toml) else {
            if fold.is_some() {
                return Err(Error::invalid(
                    "--fold needs a cache to train on: give --data CACHE (or [cache] path in the configuration)",
                ));
            }
            return Self::overlaid(TrainConfig::default(), given);
        };
        let (plan, _) = crate::data::cache::loader::read_plan(&path)?;
        let path = std::fs::canonicalize(&path).unwrap_or(path);
        let base = TrainConfig {
            cache: Some(CacheSource {
                path: path.clone(),
                fold: 0,
            }),
            ..TrainConfig::default()
        }
        .with_plan(&plan)?;
        let mut config = Self::overlaid(base, given)?;
        let source = config.cache.get_or_insert(CacheSource {
            path: path.clone(),
            fold: 0,
        });
        source.path = path;
        if let Some(k) = fold {
            source.fold = k;
        }
        Ok(config)
    }

    /// This configuration with a cache plan's training settings: `patch`, `batch`, the network (`model`,
    /// SegResNetDS's keyword arguments), the sliding `window` and `lr` (the plan's `learning_rate`).
    pub fn with_plan(mut self, plan: &Plan) -> Result<Self> {
        let source = "the cache's plan.json";
        let model = serde_json::to_string(&plan.model).expect("a plan serialises");
        self.model = SegResNetDsConfig::from_json(&model)
            .map_err(|e| Error::invalid(format!("{source}: model: {e}")))?;
        self.patch = plan.patch;
        self.batch = plan.batch;
        self.lr = plan.learning_rate;
        let mode: BlendMode = plan.window.mode.parse()?;
        self.window = WindowSettings {
            roi: plan.window.roi.to_vec(),
            overlap: plan.window.overlap,
            sw_batch_size: plan.window.sw_batch_size,
            gaussian: mode == BlendMode::Gaussian,
            sigma_scale: Some(plan.window.sigma_scale),
        };
        Ok(self)
    }

    /// `plan` with this configuration's training settings (the inverse of [`TrainConfig::with_plan`]): what
    /// a run folder's `plan.json` holds, so `calibseg predict --model RUN` preprocesses as the cache did and
    /// slides the window training validated with.
    pub fn effective_plan(&self, plan: &Plan) -> Plan {
        let mut p = plan.clone();
        p.patch = self.patch;
        p.batch = self.batch;
        p.learning_rate = self.lr;
        let roi = self.roi();
        if let Ok(roi) = <[usize; 3]>::try_from(roi.as_slice()) {
            p.window.roi = roi;
        }
        p.window.overlap = self.window.overlap;
        p.window.sw_batch_size = self.window.sw_batch_size;
        p.window.mode = if self.window.gaussian {
            "gaussian"
        } else {
            "constant"
        }
        .into();
        if let Some(s) = self.window.sigma_scale {
            p.window.sigma_scale = s;
        }
        let m = &self.model;
        p.model.spatial_dims = m.spatial_dims;
        p.model.init_filters = m.init_filters;
        p.model.in_channels = m.in_channels;
        p.model.out_channels = m.out_channels;
        p.model.blocks_down = m.blocks_down.clone();
        p.model.dsdepth = m.dsdepth;
        p
    }

    /// The configuration as TOML.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| Error::invalid(format!("training configuration: {e}")))
    }

    /// The loss with its weights.
    pub fn train_loss(&self) -> TrainLoss {
        match self.loss.binning() {
            None => TrainLoss::Baseline {
                lambda_dice: self.lambda_dice.unwrap_or(1.0),
                lambda_ce: self.lambda_ce.unwrap_or(1.0),
            },
            Some(binning) => TrainLoss::Ace {
                binning,
                lambda_dice: self.lambda_dice.unwrap_or(0.33),
                lambda_ce: self.lambda_ce.unwrap_or(0.33),
                lambda_ace: self.lambda_ace.unwrap_or(0.33),
                num_bins: self.num_bins,
            },
        }
    }

    /// The sliding window's size.
    pub fn roi(&self) -> Vec<usize> {
        if self.window.roi.is_empty() {
            self.patch.to_vec()
        } else {
            self.window.roi.clone()
        }
    }

    /// The counts and sizes that cost memory or time, checked before anything is allocated: volume counts
    /// are bounded, and the cached training volumes, the kept test predictions, the batch and the network
    /// with its optimiser state must fit in the machine's memory together.
    fn check_sizes(&self) -> Result<()> {
        for (v, name) in [
            (self.data.volumes, "data.volumes"),
            (self.val_volumes, "val_volumes"),
            (self.test_volumes, "test_volumes"),
            (self.batch, "batch"),
            (self.window.sw_batch_size, "window.sw_batch_size"),
        ] {
            if v > MAX_COUNT {
                return Err(Error::invalid(format!(
                    "{name} must be at most {MAX_COUNT}, got {v}"
                )));
            }
        }
        let voxels = |s: &[usize]| s.iter().try_fold(1u64, |a, &n| a.checked_mul(n as u64));
        let roi = self.roi();
        if voxels(&roi).is_none_or(|v| v > 1 << 30) {
            return Err(Error::InvalidShape(format!(
                "window.roi {roi:?} is over 2^30 voxels"
            )));
        }
        let volume = voxels(&self.data.shape).unwrap_or(u64::MAX);
        let classes = self.data.foreground_classes as u64 + 1;
        // A cache is memory-mapped and its cases predicted one at a time: neither is kept.
        let kept = |n: usize| if self.cache.is_some() { 0 } else { n as u64 };
        let cached = kept(self.data.volumes).checked_mul(volume * 5);
        // The test volumes' probabilities (f32) and labels are kept, then laid out again as one file.
        let test = kept(self.test_volumes).checked_mul(volume * (classes * 4 + 5) * 2);
        let batch = (self.batch as u64).checked_mul(voxels(&self.patch).unwrap_or(u64::MAX) * 5);
        // Weights, gradients and AdamW's two moments, f32 each.
        let network = self.model.parameter_count().and_then(|p| p.checked_mul(16));
        let total = [cached, test, batch, network]
            .into_iter()
            .try_fold(0u64, |a, b| a.checked_add(b?));
        crate::memory::check_fits(
            &format!(
                "the run (data.volumes = {} cached volumes of {:?}, test_volumes = {} kept predictions, batch {}, \
                 init_filters {})",
                self.data.volumes,
                self.data.shape,
                self.test_volumes,
                self.batch,
                self.model.init_filters
            ),
            total,
        )
    }

    /// Checks that the largest tensors of a training step and of a sliding-window call (the first level's
    /// activations, or the logits where the classes outnumber `init_filters`) fit the device's buffer limit
    /// and, since every convolution binds its whole input and output, its storage binding limit, before
    /// anything is trained.
    pub fn check_device(&self, gpu: &Gpu) -> Result<()> {
        let limits = [
            ("max_buffer_size", gpu.limits().max_buffer_size),
            ("max_storage_buffer_binding_size", gpu.max_binding_bytes()),
        ];
        let channels = (self.model.init_filters as u64).max(self.model.out_channels as u64);
        let voxels = |s: &[usize]| s.iter().try_fold(1u64, |a, &n| a.checked_mul(n as u64));
        for (what, count, size) in [
            ("a training batch", self.batch, self.patch.to_vec()),
            (
                "a sliding-window call",
                self.window.sw_batch_size,
                self.roi(),
            ),
        ] {
            let bytes = voxels(&size)
                .and_then(|v| v.checked_mul(count as u64 * channels * 4))
                .unwrap_or(u64::MAX);
            if let Some(&(limit_name, limit)) = limits.iter().find(|&&(_, l)| bytes > l) {
                return Err(Error::BufferTooLarge {
                    what: format!(
                        "{what} ({count} x {channels} channels x {size:?}: batch or window.sw_batch_size, \
                         init_filters, patch or window.roi)"
                    ),
                    bytes,
                    limit_name,
                    limit,
                });
            }
        }
        Ok(())
    }

    /// Checks that the parts fit together, naming the first problem.
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        self.data.validate()?;
        let classes = self.data.foreground_classes + 1;
        // A cache's channels and classes are checked against its cases when it is opened.
        let synthetic = self.cache.is_none();
        if synthetic && self.model.out_channels != classes {
            return Err(Error::invalid(format!(
                "model.out_channels is {} but the data has {classes} classes",
                self.model.out_channels
            )));
        }
        if synthetic && self.model.in_channels != 1 {
            return Err(Error::invalid(
                "model.in_channels must be 1 for the synthetic data",
            ));
        }
        if self.model.spatial_dims != 3 {
            return Err(Error::invalid("model.spatial_dims must be 3"));
        }
        let f = 1usize << (self.model.blocks_down.len() - 1);
        for (what, size) in [("patch", self.patch.to_vec()), ("window.roi", self.roi())] {
            if size.len() != 3 || size.iter().any(|&s| s == 0 || s % f != 0) {
                return Err(Error::invalid(format!(
                    "{what} {size:?} must have 3 sizes divisible by {f} (2^(levels - 1))"
                )));
            }
        }
        // A cache's patches are padded where a case is smaller (SpatialPadd).
        if synthetic && self.patch.iter().zip(&self.data.shape).any(|(p, s)| p > s) {
            return Err(Error::invalid(format!(
                "patch {:?} is larger than the volumes {:?}",
                self.patch, self.data.shape
            )));
        }
        for (v, name) in [
            (self.steps, "steps"),
            (self.val_every, "val_every"),
            (self.batch, "batch"),
            (self.val_volumes, "val_volumes"),
            (self.test_volumes, "test_volumes"),
            (self.window.sw_batch_size, "window.sw_batch_size"),
        ] {
            if v == 0 {
                return Err(Error::invalid(format!("{name} must be at least 1")));
            }
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::invalid(format!(
                "lr must be positive, got {}",
                self.lr
            )));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(Error::invalid(format!(
                "weight_decay must be >= 0, got {}",
                self.weight_decay
            )));
        }
        if !(0.0..1.0).contains(&self.window.overlap) {
            return Err(Error::invalid(format!(
                "window.overlap must be in [0, 1), got {}",
                self.window.overlap
            )));
        }
        crate::binning::check_num_bins(self.num_bins)?;
        self.check_sizes()?;
        for (l, name) in [
            (self.lambda_dice, "lambda_dice"),
            (self.lambda_ce, "lambda_ce"),
            (self.lambda_ace, "lambda_ace"),
        ] {
            if l.is_some_and(|l| !(l.is_finite() && l >= 0.0)) {
                return Err(Error::invalid(format!("{name} must be >= 0")));
            }
        }
        Ok(())
    }
}
