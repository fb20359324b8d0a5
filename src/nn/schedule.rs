//! MONAI's `WarmupCosineSchedule` (`monai/optimizers/lr_scheduler.py`): linear warm-up from
//! `warmup_multiplier x lr` to `lr` over `warmup_steps`, then a cosine from `lr` down (cycles = 0.5 by
//! default reaches 0 at `t_total`), never below `end_lr` after the warm-up.

/// The schedule; [`WarmupCosineSchedule::lr`] gives the learning rate at a step (epoch) from 0.
#[derive(Clone, Debug, PartialEq)]
pub struct WarmupCosineSchedule {
    /// The optimiser's base learning rate.
    pub base_lr: f64,
    /// Warm-up length (clamped to 0..=t_total, as MONAI does).
    pub warmup_steps: usize,
    /// Total steps.
    pub t_total: usize,
    /// Cosine cycles (0.5: half a cosine, from 1 to 0).
    pub cycles: f64,
    /// Lower bound of the learning rate after the warm-up.
    pub end_lr: f64,
    /// Fraction of `base_lr` the warm-up starts from (the paper: 0.5).
    pub warmup_multiplier: f64,
}

impl WarmupCosineSchedule {
    /// MONAI's defaults (`cycles = 0.5`, `end_lr = 0`, `warmup_multiplier = 0`).
    pub fn new(base_lr: f64, warmup_steps: usize, t_total: usize) -> Self {
        WarmupCosineSchedule {
            base_lr,
            warmup_steps: warmup_steps.min(t_total),
            t_total,
            cycles: 0.5,
            end_lr: 0.0,
            warmup_multiplier: 0.0,
        }
    }

    setters! {
        /// With a warm-up starting at `warmup_multiplier x base_lr` (clamped to 0 to 1).
        with_warmup_multiplier(warmup_multiplier: f64) => warmup_multiplier.clamp(0.0, 1.0);
    }

    /// The multiplier of `base_lr` at `step` (MONAI's `lr_lambda`).
    pub fn factor(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            let f = step as f64 / (self.warmup_steps as f64).max(1.0);
            return self.warmup_multiplier + (1.0 - self.warmup_multiplier) * f;
        }
        let progress = (step - self.warmup_steps) as f64
            / (self.t_total.saturating_sub(self.warmup_steps)).max(1) as f64;
        (0.5 * (1.0 + (std::f64::consts::PI * self.cycles * 2.0 * progress).cos())).max(0.0)
    }

    /// The learning rate at `step` (MONAI's `get_lr`: `end_lr` applies only after the warm-up).
    pub fn lr(&self, step: usize) -> f64 {
        let lr = self.base_lr * self.factor(step);
        if step < self.warmup_steps {
            lr
        } else {
            lr.max(self.end_lr)
        }
    }
}
