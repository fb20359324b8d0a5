//! Training batches from a cache: the cache opened for one fold ([`TrainingCache`]: its plan, its split,
//! the cases memory-mapped) and each step's batch ([`training_batch`]): cases and centres drawn by MONAI's
//! `RandCropByPosNegLabeld` / `RandCropByLabelClassesd` ([`draw_centre`]) from a generator keyed by
//! `(seed, step)` alone, so a resumed run, or a loader thread working ahead, draws the same batch for the
//! same step; then the crops cut from the mapped files ([`CachedCase::crop`]).

use std::path::{Path, PathBuf};

use super::sampler::{draw_centre, patch_start};
use super::splits::{self, Split, SPLITS_FILE};
use super::CachedCase;
use crate::data::augment::{source_margin, AugmentDraw};
use crate::data::plan::{Fingerprint, Plan, SamplingPlan};
use crate::data::rng::hash_at;
use crate::data::DataRng;
use crate::error::{Error, Result};

/// The name of a cache's plan.
pub const PLAN_FILE: &str = "plan.json";
/// The name of a cache's fingerprint.
pub const FINGERPRINT_FILE: &str = "fingerprint.json";

/// Salt of the batch stream: separates it from every other stream derived from the run's seed.
const BATCH_SALT: u64 = 0xCA_C4E0_BA7C_0000;

/// Reads `CACHE/plan.json`: the plan and its text. A cache without one (not a `calibseg prepare` cache)
/// or a plan that does not parse is an error naming the file.
pub fn read_plan(cache: &Path) -> Result<(Plan, String)> {
    let path = cache.join(PLAN_FILE);
    if !path.is_file() {
        return Err(Error::Format {
            path: path.display().to_string(),
            message: "does not exist: --data takes a cache that `calibseg prepare` wrote".into(),
        });
    }
    let text = crate::io::input::read_regular_text(&path)?;
    let source = path.display().to_string();
    let plan: Plan = serde_json::from_str(&text).map_err(|e| Error::Format {
        path: source.clone(),
        message: format!("is not a calibseg plan: {e}"),
    })?;
    plan.validate(&source)?;
    Ok((plan, text))
}

/// Reads `CACHE/fingerprint.json` (the dataset's folder and its case list).
pub fn read_fingerprint(cache: &Path) -> Result<Fingerprint> {
    let path = cache.join(FINGERPRINT_FILE);
    let text = crate::io::input::read_regular_text(&path)?;
    serde_json::from_str(&text).map_err(|e| Error::Format {
        path: path.display().to_string(),
        message: format!("is not a calibseg fingerprint: {e}"),
    })
}

/// A cache opened for training on one fold: the plan, the fold's split and its cases, memory-mapped.
pub struct TrainingCache {
    /// The cache folder.
    pub root: PathBuf,
    /// The fold.
    pub fold: usize,
    /// The cache's plan.
    pub plan: Plan,
    /// The fingerprint (the dataset's folder and cases).
    pub fingerprint: Fingerprint,
    /// The fold's split (from `CACHE/splits_final.json`).
    pub split: Split,
    /// The training cases, in the split's order.
    pub train: Vec<CachedCase>,
    /// The validation cases, in the split's order.
    pub val: Vec<CachedCase>,
}

impl TrainingCache {
    /// Opens `cache` for fold `fold`: its plan, its fingerprint, the splits ([`splits::load_or_create`]:
    /// written as nnU-Net's five folds where the cache has no `splits_final.json`, else read as they are),
    /// and every case of the fold mapped and checked against the plan (channels, classes).
    pub fn open(cache: &Path, fold: usize) -> Result<Self> {
        let (plan, _) = read_plan(cache)?;
        let fingerprint = read_fingerprint(cache)?;
        let names: Vec<String> = fingerprint.cases.iter().map(|c| c.name.clone()).collect();
        let all = splits::load_or_create(cache, &names)?;
        let split = splits::fold(&all, fold, &cache.join(SPLITS_FILE))?.clone();
        if split.val.is_empty() {
            return Err(Error::Format {
                path: cache.join(SPLITS_FILE).display().to_string(),
                message: format!("fold {fold} has no validation cases"),
            });
        }
        let open = |names: &[String]| -> Result<Vec<CachedCase>> {
            names
                .iter()
                .map(|n| {
                    let path = super::case_file(cache, n);
                    if !path.is_file() {
                        return Err(Error::Format {
                            path: path.display().to_string(),
                            message: format!(
                                "does not exist, but the fold names case \"{n}\": run calibseg prepare on the \
                                 dataset (without --plan-only)"
                            ),
                        });
                    }
                    let case = CachedCase::open(n, &path)?;
                    check_case(&case, &plan, &path)?;
                    Ok(case)
                })
                .collect()
        };
        let train = open(&split.train)?;
        let val = open(&split.val)?;
        Ok(TrainingCache {
            root: cache.to_path_buf(),
            fold,
            plan,
            fingerprint,
            split,
            train,
            val,
        })
    }

    /// Image channels of the cases.
    pub fn channels(&self) -> usize {
        self.plan.model.in_channels
    }

    /// Classes, background included.
    pub fn classes(&self) -> usize {
        self.plan.model.out_channels
    }
}

/// Error unless a cached case fits the plan: its channels are the network's inputs and its stored
/// classes at most the network's outputs.
fn check_case(case: &CachedCase, plan: &Plan, path: &Path) -> Result<()> {
    if case.channels != plan.model.in_channels {
        return Err(Error::Format {
            path: path.display().to_string(),
            message: format!(
                "has {} image channel(s), the plan's model.in_channels is {}",
                case.channels, plan.model.in_channels
            ),
        });
    }
    let classes = case.locations.per_class.len();
    if classes > plan.model.out_channels {
        return Err(Error::Format {
            path: path.display().to_string(),
            message: format!(
                "stores {classes} classes, the plan's model.out_channels is {}",
                plan.model.out_channels
            ),
        });
    }
    Ok(())
}

/// Where one patch of a batch comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatchDraw {
    /// Index of the case in the training cases.
    pub case: usize,
    /// The (corrected) patch centre in case voxels.
    pub centre: [usize; 3],
    /// The first voxel of the patch box (negative where the patch is padded).
    pub start: [i64; 3],
}

/// One training batch before augmentation: source crops `[B, C, X, Y, Z]` (each patch's box with the
/// augmentation's [`source_margin`] on every side) and their labels `[B, 1, X, Y, Z]`, contiguous, with
/// each patch's augmentation drawn; [`augment_batch`](crate::data::augment::augment_batch) turns them
/// into the network's `patch`.
#[derive(Clone, Debug, PartialEq)]
pub struct CacheBatch {
    /// Images, `B * C * X * Y * Z` values.
    pub image: Vec<f32>,
    /// Class indices, `B * X * Y * Z` values.
    pub labels: Vec<u8>,
    /// `[B, C, X, Y, Z]` of the source crops.
    pub shape: [usize; 5],
    /// The patch the network sees (the centre of each source crop before augmentation).
    pub patch: [usize; 3],
    /// Each patch's case and box.
    pub draws: Vec<PatchDraw>,
    /// Each patch's augmentation (identity values for the transforms the plan did not draw).
    pub augment: Vec<AugmentDraw>,
}

impl CacheBatch {
    /// Whether the crops are the patches as they stand: no margin and no transform drawn, so
    /// augmentation would copy them.
    pub fn is_plain(&self) -> bool {
        self.shape[2..] == self.patch && self.augment.iter().all(AugmentDraw::is_identity)
    }
}

/// The generator of step `step`'s batch in a run of seed `seed`: a function of the two alone.
pub fn batch_rng(seed: u64, step: usize) -> DataRng {
    DataRng::new(hash_at(seed ^ BATCH_SALT, step as u64))
}

/// Draws `batch` patches of `patch`: a case uniformly, then `sampling.num_samples` centres in it (MONAI
/// crops that many patches per loaded case), repeated until the batch is full. Draws in order from `rng`:
/// the case, then each centre's ([`draw_centre`]).
pub fn draw_patches(
    rng: &mut DataRng,
    cases: &[CachedCase],
    sampling: &SamplingPlan,
    patch: [usize; 3],
    batch: usize,
) -> Result<Vec<PatchDraw>> {
    if cases.is_empty() {
        return Err(Error::invalid(
            "training cache: the fold has no training cases",
        ));
    }
    let mut draws = Vec::with_capacity(batch);
    while draws.len() < batch {
        let case = rng.below(cases.len());
        let c = &cases[case];
        for _ in 0..sampling.num_samples.max(1) {
            if draws.len() == batch {
                break;
            }
            let centre = draw_centre(rng, sampling, &c.locations, c.shape, patch)
                .map_err(|e| Error::invalid(format!("case \"{}\": {e}", c.name)))?;
            draws.push(PatchDraw {
                case,
                centre,
                start: patch_start(centre, patch, c.shape),
            });
        }
    }
    Ok(draws)
}

/// Cuts the drawn patches from the mapped cases (zero outside a case) into one batch: each patch's box
/// widened by `margin` voxels on both sides of each axis, with the patches' augmentation `augment`.
pub fn crop_batch(
    cases: &[CachedCase],
    draws: &[PatchDraw],
    patch: [usize; 3],
    margin: [usize; 3],
    augment: Vec<AugmentDraw>,
) -> Result<CacheBatch> {
    let channels = cases.first().map_or(1, |c| c.channels);
    let extent: [usize; 3] = std::array::from_fn(|a| patch[a] + 2 * margin[a]);
    let voxels = extent.iter().product::<usize>();
    let mut image = Vec::with_capacity(draws.len() * channels * voxels);
    let mut labels = Vec::with_capacity(draws.len() * voxels);
    for d in draws {
        let start = std::array::from_fn(|a| d.start[a] - margin[a] as i64);
        cases[d.case].crop(start, extent, &mut image, &mut labels)?;
    }
    Ok(CacheBatch {
        image,
        labels,
        shape: [draws.len(), channels, extent[0], extent[1], extent[2]],
        patch,
        draws: draws.to_vec(),
        augment,
    })
}

/// Step `step`'s training batch of a run of seed `seed`: `batch` patches drawn ([`draw_patches`], from
/// [`batch_rng`]), then each patch's augmentation ([`AugmentDraw::sample`] from the plan's `augment`,
/// from the same generator after every centre), then the source crops ([`crop_batch`] with the plan's
/// [`source_margin`]). Depends on `(seed, step)` and the cache only, so any thread may build it ahead of
/// the training loop.
pub fn training_batch(
    cache: &TrainingCache,
    patch: [usize; 3],
    batch: usize,
    seed: u64,
    step: usize,
) -> Result<CacheBatch> {
    let mut rng = batch_rng(seed, step);
    let draws = draw_patches(&mut rng, &cache.train, &cache.plan.sampling, patch, batch)?;
    let plan = &cache.plan.augment;
    let augment = draws
        .iter()
        .map(|_| AugmentDraw::sample(plan, cache.channels(), &mut rng))
        .collect();
    crop_batch(
        &cache.train,
        &draws,
        patch,
        source_margin(plan, patch),
        augment,
    )
}

/// Step batches built ahead of the training loop on a background thread: [`training_batch`] of steps
/// `first, first + 1, ...` (below `end`), at most `ahead` of them waiting, handed over in step order.
/// Each batch depends on `(seed, step)` alone, so a prefetched run trains on the same bits as one that
/// builds every batch when it needs it. Dropping it stops the thread.
pub struct BatchPrefetcher {
    next: usize,
    end: usize,
    rx: Option<std::sync::mpsc::Receiver<Result<CacheBatch>>>,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl BatchPrefetcher {
    /// Starts building the batches of steps `first..end` of a run of seed `seed` (`batch` patches of
    /// `patch` each), up to `ahead` (at least 1) before they are asked for.
    pub fn start(
        cache: std::sync::Arc<TrainingCache>,
        patch: [usize; 3],
        batch: usize,
        seed: u64,
        first: usize,
        end: usize,
        ahead: usize,
    ) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel(ahead.max(1));
        let worker = std::thread::Builder::new()
            .name("calibseg batches".into())
            .spawn(move || {
                for step in first..end {
                    let b = training_batch(&cache, patch, batch, seed, step);
                    let failed = b.is_err();
                    // A closed channel: the trainer is gone or started over.
                    if tx.send(b).is_err() || failed {
                        break;
                    }
                }
            })
            .ok();
        BatchPrefetcher {
            next: first,
            end,
            rx: Some(rx),
            worker,
        }
    }

    /// The step whose batch [`BatchPrefetcher::next_batch`] returns next.
    pub fn next_step(&self) -> usize {
        self.next
    }

    /// The next step's batch, waiting for the thread where it is not ready yet.
    pub fn next_batch(&mut self) -> Result<CacheBatch> {
        if self.next >= self.end {
            return Err(Error::invalid(format!(
                "training batches: step {} is past the run's last step {}",
                self.next, self.end
            )));
        }
        let b = match (&self.rx, &self.worker) {
            (Some(rx), Some(_)) => rx
                .recv()
                .map_err(|_| Error::invalid("training batches: the loader thread stopped"))?,
            _ => {
                return Err(Error::invalid(
                    "training batches: the loader thread could not be started",
                ))
            }
        }?;
        self.next += 1;
        Ok(b)
    }
}

impl Drop for BatchPrefetcher {
    fn drop(&mut self) {
        // Closing the channel first wakes a thread blocked on a full one.
        drop(self.rx.take());
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}
