//! A small gradient tape.
//!
//! Operations on [`Var`]s that require gradients are recorded on a [`Tape`] in execution order (which is
//! already a topological order). [`Tape::backward`] walks the records in reverse: each record's boxed
//! backward maps its output's gradient to its inputs' gradients, which are accumulated per variable. A
//! record is dropped as soon as its backward has run, releasing the tensors it saved (their buffers go back
//! to the pool), and an intermediate's gradient is dropped once it has been consumed.
//!
//! Ops with their own analytic backward (the fused losses, softmax, anything outside this crate) plug in
//! through [`Tape::record`]; the built-in layers are in [`ops`]. Inside
//! [`Tape::no_grad`] nothing is recorded.
//!
//! ```no_run
//! use calibseg::autograd::{Tape, Var};
//! use calibseg::{Gpu, Tensor};
//! # fn main() -> calibseg::Result<()> {
//! let gpu = Gpu::new()?;
//! let tape = Tape::new();
//! let x = Var::parameter(Tensor::from_f32(&gpu, &[1, 1, 2, 2], &[1.0, -2.0, 3.0, -4.0])?);
//! let y = tape.relu(&x)?;
//! let grads = tape.backward(&y)?; // seeds dL/dy = 1
//! assert_eq!(grads.get(&x).unwrap().to_vec_f32()?, vec![1.0, 0.0, 1.0, 0.0]);
//! # Ok(()) }
//! ```

pub mod ops;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn fresh_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// A tensor as seen by the tape: a value, an identity, and whether gradients flow to it.
/// Cloning shares the value and the identity.
#[derive(Clone, Debug)]
pub struct Var {
    id: u64,
    value: Tensor,
    requires_grad: bool,
}

impl Var {
    /// A leaf that gradients are computed for (a trainable parameter, or an input under study).
    pub fn parameter(value: Tensor) -> Self {
        Var {
            id: fresh_id(),
            value,
            requires_grad: true,
        }
    }

    /// A leaf no gradient flows to (data, labels, frozen weights).
    pub fn constant(value: Tensor) -> Self {
        Var {
            id: fresh_id(),
            value,
            requires_grad: false,
        }
    }

    /// The value.
    pub fn tensor(&self) -> &Tensor {
        &self.value
    }

    /// The value's shape.
    pub fn shape(&self) -> &[usize] {
        self.value.shape()
    }

    /// Whether gradients flow to this variable.
    pub fn requires_grad(&self) -> bool {
        self.requires_grad
    }

    /// The identity the tape and [`Grads`] know this variable by.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Replaces the value (same shape and dtype) keeping the identity, e.g. to load trained weights.
    pub fn set(&mut self, value: Tensor) -> Result<()> {
        if value.shape() != self.value.shape() || value.dtype() != self.value.dtype() {
            return Err(Error::shape(format!(
                "cannot set a {:?} {} variable to a {:?} {} tensor",
                self.value.shape(),
                self.value.dtype(),
                value.shape(),
                value.dtype()
            )));
        }
        self.value = value;
        Ok(())
    }
}

/// Maps the gradient of a record's output to the gradients of its inputs (one entry per input, in order;
/// `None` where an input gets no gradient). Called at most once.
pub type BackwardFn = Box<dyn FnOnce(&Tensor) -> Result<Vec<Option<Tensor>>> + Send>;

struct Record {
    inputs: Vec<Option<u64>>, // ids of inputs that require gradients
    output: u64,
    backward: BackwardFn,
}

#[derive(Default)]
struct TapeState {
    records: Vec<Record>,
}

/// The tape. Cheap to clone (shared); one tape per training step is the usual pattern.
#[derive(Clone, Default)]
pub struct Tape {
    state: Arc<Mutex<TapeState>>,
    paused: Arc<AtomicBool>,
}

/// Re-enables recording when dropped; see [`Tape::no_grad`].
pub struct NoGradGuard {
    paused: Arc<AtomicBool>,
    was: bool,
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        self.paused.store(self.was, Ordering::SeqCst);
    }
}

/// Gradients of the leaves, by variable.
#[derive(Default, Debug)]
pub struct Grads {
    map: HashMap<u64, Tensor>,
}

impl Grads {
    /// The gradient of `v`, if any reached it.
    pub fn get(&self, v: &Var) -> Option<&Tensor> {
        self.map.get(&v.id)
    }

    /// Takes the gradient of `v` out.
    pub fn remove(&mut self, v: &Var) -> Option<Tensor> {
        self.map.remove(&v.id)
    }

    /// Sets the gradient of `v` (adding to one already there is the caller's business).
    pub fn insert(&mut self, v: &Var, grad: Tensor) {
        self.map.insert(v.id, grad);
    }

    /// Number of gradients held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no gradient is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl Tape {
    /// An empty tape, recording.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stops recording until the returned guard drops: ops then return outputs that require no gradient
    /// and keep nothing for a backward pass (inference).
    pub fn no_grad(&self) -> NoGradGuard {
        let was = self.paused.swap(true, Ordering::SeqCst);
        NoGradGuard {
            paused: self.paused.clone(),
            was,
        }
    }

    /// Whether ops are being recorded now.
    pub fn is_recording(&self) -> bool {
        !self.paused.load(Ordering::SeqCst)
    }

    /// Records an op: `inputs` it read, the `output` value it produced, and its `backward`. Nothing is
    /// recorded (and `backward` is dropped) when recording is paused or no input requires a gradient.
    /// Returns the output as a variable.
    ///
    /// `backward` receives dL/d(output) and returns one optional gradient per input, each shaped as that
    /// input; it should capture only what it needs, since captures live until it has run.
    pub fn record(&self, inputs: &[&Var], output: Tensor, backward: BackwardFn) -> Var {
        let needs = self.is_recording() && inputs.iter().any(|v| v.requires_grad);
        let out = Var {
            id: fresh_id(),
            value: output,
            requires_grad: needs,
        };
        if needs {
            let rec = Record {
                inputs: inputs
                    .iter()
                    .map(|v| v.requires_grad.then_some(v.id))
                    .collect(),
                output: out.id,
                backward,
            };
            self.state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .records
                .push(rec);
        }
        out
    }

    /// Records waiting for a backward pass.
    pub fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .records
            .len()
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every record (and the tensors they saved) without running them.
    pub fn clear(&self) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .records
            .clear();
    }

    /// Back-propagates from `root`, seeding dL/d(root) = 1 everywhere (for a scalar loss `[1]`, the usual
    /// case, that is dL/dL = 1). Consumes the records; returns the gradients of the leaves reached.
    pub fn backward(&self, root: &Var) -> Result<Grads> {
        let seed = Tensor::from_f32(
            root.value.gpu(),
            root.shape(),
            &vec![1.0; root.value.numel()],
        )?;
        self.backward_with(root, seed)
    }

    /// Back-propagates from `root` with the given seed gradient (shaped as `root`).
    pub fn backward_with(&self, root: &Var, seed: Tensor) -> Result<Grads> {
        if seed.shape() != root.shape() {
            return Err(Error::shape(format!(
                "seed gradient {:?} does not match the root {:?}",
                seed.shape(),
                root.shape()
            )));
        }
        seed.expect_dtype(DType::F32, "seed gradient")?;
        // The backward pass goes out as one submission (or a few); its errors are reported here.
        let scope = seed.gpu().batching();
        let grads = self.run_backward(root, seed);
        let flushed = scope.finish();
        let grads = grads?;
        flushed?;
        Ok(grads)
    }

    fn run_backward(&self, root: &Var, seed: Tensor) -> Result<Grads> {
        let records =
            std::mem::take(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()).records);
        let mut grads: HashMap<u64, Tensor> = HashMap::new();
        if !root.requires_grad {
            return Ok(Grads::default());
        }
        grads.insert(root.id, seed);
        let mut produced = std::collections::HashSet::new();
        for r in &records {
            produced.insert(r.output);
        }
        let mut records = records;
        while let Some(rec) = records.pop() {
            let Some(g) = grads.remove(&rec.output) else {
                continue; // nothing downstream of this record reached the root
            };
            let n_in = rec.inputs.len();
            let in_grads = (rec.backward)(&g)?;
            drop(g);
            if in_grads.len() != n_in {
                return Err(Error::invalid(format!(
                    "a backward returned {} gradients for {n_in} inputs",
                    in_grads.len()
                )));
            }
            for (id, gi) in rec.inputs.iter().zip(in_grads) {
                let (Some(id), Some(gi)) = (id, gi) else {
                    continue;
                };
                match grads.remove(id) {
                    Some(prev) => {
                        if prev.shape() != gi.shape() {
                            return Err(Error::shape(format!(
                                "gradients {:?} and {:?} of one variable differ",
                                prev.shape(),
                                gi.shape()
                            )));
                        }
                        grads.insert(*id, crate::ops::add(&prev, &gi)?);
                    }
                    None => {
                        grads.insert(*id, gi);
                    }
                }
            }
        }
        grads.retain(|id, _| !produced.contains(id));
        Ok(Grads { map: grads })
    }
}
