//! The crate's error type: every failure a caller can cause or meet, named precisely.

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in calibseg. Bad input is reported here, never by a panic.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No GPU adapter matched; the message lists what was tried and how to fix it.
    #[error("no GPU adapter found ({tried}). {hint}")]
    NoAdapter {
        /// What was tried (back ends, name filter, adapters seen).
        tried: String,
        /// How to fix it.
        hint: String,
    },
    /// The adapter refused to create a device.
    #[error("could not create a device on adapter '{adapter}': {message}")]
    RequestDevice {
        /// Adapter name.
        adapter: String,
        /// wgpu's explanation.
        message: String,
    },
    /// wgpu reported a validation error (a bug in calibseg or in how it was called).
    #[error("GPU validation error in {context}: {message}")]
    Validation {
        /// Which operation was running.
        context: String,
        /// wgpu's description.
        message: String,
    },
    /// The device ran out of memory.
    #[error("GPU out of memory in {context}: {message}")]
    OutOfMemory {
        /// Which operation was running.
        context: String,
        /// wgpu's description.
        message: String,
    },
    /// The device was lost (driver reset, crash); it cannot be used any more.
    #[error("GPU device lost: {0}")]
    DeviceLost(String),
    /// A buffer or binding would exceed what the device allows.
    #[error("{what} needs {bytes} bytes, over the device limit {limit_name} = {limit} bytes")]
    BufferTooLarge {
        /// What the buffer was for.
        what: String,
        /// Requested size in bytes.
        bytes: u64,
        /// Which device limit was exceeded.
        limit_name: &'static str,
        /// The limit in bytes.
        limit: u64,
    },
    /// Two shapes that must agree do not.
    #[error("shape mismatch: {0}")]
    ShapeMismatch(String),
    /// A shape is not usable for the operation (wrong rank, zero size, ...).
    #[error("invalid shape: {0}")]
    InvalidShape(String),
    /// A tensor has the wrong element type for the operation.
    #[error("wrong dtype: {0}")]
    WrongDType(String),
    /// A class label is negative or not below the number of classes.
    #[error("label {label} out of range: expected 0..{classes} (at flat index {index})")]
    LabelOutOfRange {
        /// The offending label value.
        label: i64,
        /// Number of classes.
        classes: usize,
        /// Flat position of the first offending label.
        index: usize,
    },
    /// An option has a value outside its valid range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The adapter lacks an optional feature the operation needs.
    #[error("adapter '{adapter}' does not support {feature}")]
    MissingFeature {
        /// The feature.
        feature: &'static str,
        /// Adapter name.
        adapter: String,
    },
    /// A buffer the application created cannot be used as a tensor (usage flags, size, alignment).
    #[error("application buffer cannot back a tensor: {0}")]
    ForeignBuffer(String),
    /// Reading a buffer back from the device failed.
    #[error("buffer readback failed: {0}")]
    Readback(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// An output path cannot be written as asked (not a regular file, a folder calibseg did not write, ...).
    /// `path` is the output the user named, never a temporary.
    #[error("{path}: {message}")]
    Output {
        /// The output file or folder.
        path: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// Input numbers that must be finite are not (NaN or infinity).
    #[error("{what} holds {count} non-finite value{} (NaN or infinity), the first at flat index {index}", if *count == 1 { "" } else { "s" })]
    NonFinite {
        /// Which input (tensor and file).
        what: String,
        /// How many values are not finite.
        count: usize,
        /// Flat index of the first one.
        index: usize,
    },
    /// A file's content is not what was expected (missing tensor, bad header, ...).
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A long operation was stopped on request (Ctrl-C) at a safe point; the message says what was kept.
    #[error("interrupted: {0}")]
    Interrupted(String),
    /// A fresh training run failed before its first checkpoint was complete; what it had written was removed
    /// again, so its folder is as it was found and a fresh run may start there.
    #[error("{source}; this was before the run's first checkpoint, so nothing of it was kept in {folder}")]
    NothingKept {
        /// The run folder.
        folder: String,
        /// Why the run failed.
        source: Box<Error>,
    },
    /// Evaluations given to `calibseg eval --merge` cannot be merged: their bins, classes or options
    /// differ, they share case names, or one is not an evaluation this calibseg can read.
    #[error("cannot merge the evaluation in {shard}: {message}")]
    MergeMismatch {
        /// The evaluation folder at fault.
        shard: String,
        /// What differs or is missing, and what to do.
        message: String,
    },
    /// Weights do not fit a model: every missing, unexpected and mis-shaped tensor, by name.
    #[error("state dict does not match the model: {0}")]
    StateDict(String),
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    /// [`Error::NonFinite`] if any of `values` is NaN or infinite, naming `what`.
    pub fn check_finite(values: &[f32], what: impl FnOnce() -> String) -> Result<()> {
        let mut bad = values.iter().enumerate().filter(|(_, x)| !x.is_finite());
        if let Some((index, _)) = bad.next() {
            return Err(Error::NonFinite {
                what: what(),
                count: 1 + bad.count(),
                index,
            });
        }
        Ok(())
    }

    /// Shorthand for [`Error::ShapeMismatch`].
    pub fn shape(msg: impl Into<String>) -> Self {
        Error::ShapeMismatch(msg.into())
    }
}
