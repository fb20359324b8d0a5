//! Opening input files: the one place every reader opens what the user named (configurations, weights,
//! volumes, probabilities, labels, saved bench reports).
//!
//! Only regular files (or symbolic links to them) are read. A FIFO, a device such as `/dev/zero`, a socket
//! or a folder is refused with an [`Error::Io`] naming the file and what it is, before a byte is read:
//! an endless stream would otherwise grow memory until the process is killed, and a FIFO without a writer
//! would block forever. A regular file is read no further than the size it had when it was opened, so a
//! read is bounded by what was on disk.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// What kind of file system entry `t` is, for messages (a symbolic link only where the type was read
/// without following links).
pub(crate) fn kind_of(t: std::fs::FileType) -> &'static str {
    if t.is_symlink() {
        return "a symbolic link";
    }
    if t.is_dir() {
        return "a folder";
    }
    if t.is_file() {
        return "a regular file";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
    }
    "not a regular file"
}

/// Opens `path` for reading if it is a regular file (a symbolic link is followed), with its size.
///
/// The file is opened without blocking (a FIFO with no writer would otherwise wait forever) and its type
/// checked on the open handle, so what is read is what was checked.
pub fn open_regular(path: impl AsRef<Path>) -> Result<(File, u64)> {
    let path = path.as_ref();
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(|e| io_err(path, e))?;
    let meta = file.metadata().map_err(|e| io_err(path, e))?;
    if !meta.file_type().is_file() {
        return Err(io_err(
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "is {}, not a regular file; inputs are read from regular files only",
                    kind_of(meta.file_type())
                ),
            ),
        ));
    }
    Ok((file, meta.len()))
}

/// Reads the whole of the regular file `path` (see [`open_regular`]): at most the size it had when opened.
pub fn read_regular(path: impl AsRef<Path>) -> Result<Vec<u8>> {
    let path = path.as_ref();
    let (file, len) = open_regular(path)?;
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(len)
        .read_to_end(&mut bytes)
        .map_err(|e| io_err(path, e))?;
    Ok(bytes)
}

/// Reads the regular file `path` as UTF-8 text (see [`read_regular`]).
pub fn read_regular_text(path: impl AsRef<Path>) -> Result<String> {
    let path = path.as_ref();
    String::from_utf8(read_regular(path)?).map_err(|_| {
        io_err(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidData, "is not UTF-8 text"),
        )
    })
}

/// Reads exactly `buf.len()` bytes unless the stream ends first; returns how many were read.
pub(crate) fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}
