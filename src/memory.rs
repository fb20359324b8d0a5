//! What the machine can hold: the bound that sizes read from configuration files are checked against before
//! anything is allocated.

/// Bytes of physical memory (`MemTotal` of `/proc/meminfo`), or `None` where it cannot be read (then only
/// arithmetic overflow is caught up front).
pub(crate) fn host_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// `bytes` as GiB for messages.
pub(crate) fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Checks that `bytes` (`None`: more than a `u64` holds) fit in the machine's memory; the error names `what`.
pub(crate) fn check_fits(what: &str, bytes: Option<u64>) -> crate::Result<()> {
    let limit = host_memory_bytes();
    match (bytes, limit) {
        (None, _) => Err(crate::Error::invalid(format!(
            "{what} needs more memory than any machine has (over 2^64 bytes)"
        ))),
        (Some(b), Some(l)) if b > l => Err(crate::Error::invalid(format!(
            "{what} needs about {}, more than this machine's {} of memory",
            gib(b),
            gib(l)
        ))),
        _ => Ok(()),
    }
}
