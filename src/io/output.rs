//! Writing results without ever losing data: the one output module every command uses.
//!
//! Files ([`write_file_atomically`], [`AtomicFile`]): the bytes go to a new temporary file beside the target
//! (same folder, so the final rename stays on one file system), are flushed and synced, and the temporary
//! is renamed over the target. Only a regular file (or nothing) is ever replaced: a folder, a symbolic link,
//! a FIFO, a device or a socket at the target is refused with [`Error::Output`] naming it. On every error
//! path the temporary is removed, and messages name the output, never the temporary.
//!
//! Folders ([`OutputDir`]): the whole folder is built aside (a temporary sibling) and swapped in whole by
//! [`OutputDir::commit`]. calibseg never deletes what it did not write: the committed folder carries a
//! manifest ([`MANIFEST`]) listing every entry it wrote, and an existing target is replaced only when it is
//! missing, empty, or holds exactly what a previous calibseg run wrote. Any other non-empty folder is
//! refused unless the caller passes `overwrite` (`--overwrite`), which replaces it as a whole. An
//! uncommitted `OutputDir` (an error, a panic) removes its temporary folder when dropped.
//!
//! ```no_run
//! use calibseg::io::output::{write_file_atomically, OutputDir};
//! # fn main() -> calibseg::Result<()> {
//! write_file_atomically("result.json", b"{}\n")?;
//! let out = OutputDir::create("results", false)?;
//! out.write_file("metrics.csv", b"image,class\n")?;
//! out.create_dir("pictures")?;
//! let folder = out.commit()?; // "results" now holds metrics.csv, pictures/ and the manifest
//! # let _ = folder; Ok(()) }
//! ```

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Name of the manifest file in every folder an [`OutputDir`] commits: the relative paths it wrote.
pub const MANIFEST: &str = ".calibseg-output.json";

/// Distinguishes temporaries made by one process (several outputs, several threads).
static COUNTER: AtomicU64 = AtomicU64::new(0);

fn out_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Output {
        path: path.display().to_string(),
        message: message.into(),
    }
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> Error {
    out_err(path, format!("{what}: {e}"))
}

/// What kind of file system entry stands at a path (its metadata read without following a symbolic link).
fn kind_of(meta: &fs::Metadata) -> &'static str {
    super::input::kind_of(meta.file_type())
}

/// Error unless `path` is absent or a regular file (the only things a file output may replace).
pub fn check_file_target(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => Ok(()),
        Ok(m) => Err(out_err(
            path,
            format!(
                "is {}; only a regular file is replaced, choose another output path",
                kind_of(&m)
            ),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path, "cannot inspect the output path", e)),
    }
}

/// Checks, before any work, that a command can write its file output `path`: the target is absent or a
/// regular file ([`check_file_target`]), it lies in an existing folder where a file can be created (a
/// probe file is created and removed), and it is none of the command's `inputs` (`(flag, path)` pairs,
/// compared as files, see [`check_not_an_input`]). Errors name the output.
pub fn check_file_output(path: impl AsRef<Path>, inputs: &[(&str, &Path)]) -> Result<()> {
    let path = path.as_ref();
    let (dir, name) = split(path)
        .ok_or_else(|| out_err(path, "names no file (give a file name, not a folder)"))?;
    check_file_target(path)?;
    check_not_an_input(path, inputs)?;
    match fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(out_err(path, format!("{} is not a folder", dir.display()))),
        Err(e) => {
            return Err(io_err(
                path,
                &format!("the folder {} to write it in is not usable", dir.display()),
                e,
            ))
        }
    }
    let probe = temp_sibling(&dir, &name, "probe");
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| io_err(path, "cannot create a file there", e))?;
    let _ = fs::remove_file(&probe);
    Ok(())
}

/// The identity of an existing file: device and inode where there are such (so every spelling, link
/// and hard link of one file compares equal), else its canonical path.
#[derive(PartialEq)]
enum FileId {
    #[cfg(unix)]
    Inode(u64, u64),
    #[allow(dead_code)] // the only kind off Unix
    Path(PathBuf),
}

fn file_id(path: &Path) -> Option<FileId> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(path)
            .ok()
            .map(|m| FileId::Inode(m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        fs::canonicalize(path).ok().map(FileId::Path)
    }
}

/// Error if the file output `path` is one of `inputs` (`(flag, path)` pairs): writing it would replace
/// the input. Files are compared, not spellings (`./w.safetensors`, a link or a hard link to the input
/// all count); an output that does not exist yet is no existing input.
pub fn check_not_an_input(path: impl AsRef<Path>, inputs: &[(&str, &Path)]) -> Result<()> {
    let path = path.as_ref();
    let Some(out) = file_id(path) else {
        return Ok(());
    };
    for (flag, input) in inputs {
        if file_id(input).is_some_and(|i| i == out) {
            return Err(out_err(
                path,
                format!(
                    "is the {flag} file {}, an input of this command: writing it would replace \
                     that input; choose another output path",
                    input.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Error if the output folder `dir` is, or contains, one of `inputs` (`(flag, path)` pairs): replacing
/// the folder would delete them. Compared by canonical paths (a folder that does not exist yet holds
/// nothing).
pub fn check_folder_holds_no_input(dir: impl AsRef<Path>, inputs: &[(&str, &Path)]) -> Result<()> {
    let dir = dir.as_ref();
    let Ok(out) = fs::canonicalize(dir) else {
        return Ok(());
    };
    for (flag, input) in inputs {
        if let Ok(c) = fs::canonicalize(input) {
            if c.starts_with(&out) {
                return Err(out_err(
                    dir,
                    format!(
                        "holds the {flag} input {}; replacing the folder would delete it: choose \
                         another output folder",
                        input.display()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The folder a path lives in (`.` for a bare name) and its last component; `None` for paths such as `/`,
/// `.` or `a/..` that name no entry of their own.
fn split(path: &Path) -> Option<(PathBuf, OsString)> {
    if matches!(
        path.components().next_back(),
        None | Some(Component::CurDir | Component::ParentDir | Component::RootDir)
    ) {
        return None;
    }
    let name = path.file_name()?.to_os_string();
    let parent = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    Some((parent, name))
}

/// A temporary name beside `name` in `dir`, unique to this process and call.
fn temp_sibling(dir: &Path, name: &OsString, tag: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut t = OsString::from(".");
    t.push(name);
    t.push(format!(".calibseg-{tag}-{}-{n}", std::process::id()));
    dir.join(t)
}

/// Best-effort sync of a folder, so a rename in it survives a crash (ignored where folders cannot be opened).
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// A file being written beside its target; [`AtomicFile::commit`] renames it into place.
///
/// Write through [`std::io::Write`] (buffered). Dropping it without `commit` removes the temporary, so an
/// error part-way (a full disk, a failed encoder) leaves the target as it was and nothing beside it.
#[derive(Debug)]
pub struct AtomicFile {
    target: PathBuf,
    temp: PathBuf,
    file: Option<BufWriter<File>>,
}

impl AtomicFile {
    /// Starts writing `path`: checks the target is absent or a regular file and creates the temporary
    /// (never reusing an existing name).
    pub fn create(path: impl AsRef<Path>) -> Result<Self> {
        let target = path.as_ref().to_path_buf();
        let (dir, name) = split(&target)
            .ok_or_else(|| out_err(&target, "names no file (give a file name, not a folder)"))?;
        check_file_target(&target)?;
        let temp = temp_sibling(&dir, &name, "tmp");
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| io_err(&target, "cannot create the file", e))?;
        // A replaced file keeps its permission bits.
        if let Ok(m) = fs::metadata(&target) {
            let _ = file.set_permissions(m.permissions());
        }
        Ok(AtomicFile {
            target,
            temp,
            file: Some(BufWriter::new(file)),
        })
    }

    /// The final path.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Flushes, syncs and renames the file into place (re-checking that the target is still absent or a
    /// regular file).
    pub fn commit(mut self) -> Result<()> {
        let w = self.file.take().expect("file present until commit");
        let file = w
            .into_inner()
            .map_err(|e| io_err(&self.target, "cannot write the file", e.into_error()))?;
        file.sync_all()
            .map_err(|e| io_err(&self.target, "cannot write the file", e))?;
        drop(file);
        check_file_target(&self.target)?;
        fs::rename(&self.temp, &self.target)
            .map_err(|e| io_err(&self.target, "cannot move the file into place", e))?;
        if let Some((dir, _)) = split(&self.target) {
            sync_dir(&dir);
        }
        self.temp = PathBuf::new();
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.as_mut().expect("file present").write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.as_mut().expect("file present").flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        drop(self.file.take());
        if !self.temp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Writes `bytes` to `path` atomically: a temporary beside it, flushed and synced, then renamed over it.
/// Only an absent path or a regular file is replaced; errors name `path` and leave no temporary behind.
pub fn write_file_atomically(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    write_file_with(path, |w| w.write_all(bytes))
}

/// Like [`write_file_atomically`], with the content streamed by `fill` (for outputs too large to build in
/// memory first). An error from `fill` discards the temporary and is reported against `path`.
pub fn write_file_with(
    path: impl AsRef<Path>,
    fill: impl FnOnce(&mut AtomicFile) -> std::io::Result<()>,
) -> Result<()> {
    let mut f = AtomicFile::create(path)?;
    if let Err(e) = fill(&mut f) {
        return Err(io_err(f.target(), "cannot write the file", e));
    }
    f.commit()
}

/// The first entry of `dir` that a previous [`OutputDir`] did not write (not in its manifest), if any.
/// Stops at the first one, so a large foreign folder is not walked.
/// The first entry of folder `dir` that no calibseg output manifest there lists (`None`: the folder holds
/// only what calibseg wrote, or is empty). Lets a command check a folder it will replace at its end before
/// the work, with a message of its own.
pub fn first_foreign_entry(dir: &Path) -> Result<Option<String>> {
    written_by_us(dir)
}

fn written_by_us(dir: &Path) -> Result<Option<String>> {
    let listed: Option<BTreeSet<String>> = fs::read(dir.join(MANIFEST))
        .ok()
        .and_then(|b| serde_json::from_slice::<Manifest>(&b).ok())
        .map(|m| m.entries.into_iter().collect());
    first_foreign(dir, Path::new(""), listed.as_ref())
}

/// An entry's key in a manifest: its relative path, one-to-one as text, `/`-separated, folders ending in
/// `/`.
fn entry_key(rel: &Path, is_dir: bool) -> String {
    let parts: Vec<String> = rel
        .components()
        .map(|c| crate::io::nifti::display_name(c.as_os_str()))
        .collect();
    let key = parts.join("/");
    if is_dir {
        key + "/"
    } else {
        key
    }
}

fn sorted_entries(dir: &Path, report: &Path) -> Result<Vec<(std::ffi::OsString, bool)>> {
    let rd = fs::read_dir(dir).map_err(|e| io_err(report, "cannot list the folder", e))?;
    let mut v = Vec::new();
    for e in rd {
        let e = e.map_err(|e| io_err(report, "cannot list the folder", e))?;
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        v.push((e.file_name(), is_dir));
    }
    v.sort();
    Ok(v)
}

fn first_foreign(
    dir: &Path,
    rel: &Path,
    listed: Option<&BTreeSet<String>>,
) -> Result<Option<String>> {
    for (name, is_dir) in sorted_entries(&dir.join(rel), dir)? {
        let r = rel.join(&name);
        if rel.as_os_str().is_empty() && name == MANIFEST {
            continue;
        }
        let key = entry_key(&r, is_dir);
        if !listed.is_some_and(|l| l.contains(&key)) {
            return Ok(Some(key));
        }
        if is_dir {
            if let Some(k) = first_foreign(dir, &r, listed)? {
                return Ok(Some(k));
            }
        }
    }
    Ok(None)
}

/// Relative paths of everything under `dir` (folders included), not following symbolic links.
fn walk(dir: &Path, rel: &Path, out: &mut BTreeSet<String>) -> Result<()> {
    for (name, is_dir) in sorted_entries(&dir.join(rel), dir)? {
        let r = rel.join(&name);
        out.insert(entry_key(&r, is_dir));
        if is_dir {
            walk(dir, &r, out)?;
        }
    }
    Ok(())
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Manifest {
    written_by: String,
    entries: Vec<String>,
}

/// An output folder built aside and swapped in whole by [`OutputDir::commit`].
///
/// Write into it with [`OutputDir::write_file`] / [`OutputDir::create_dir`] (or any code that writes under
/// [`OutputDir::path`]); nothing is visible at the target until `commit`. Dropped uncommitted, it removes
/// its temporary folder and any parent folders it created.
#[derive(Debug)]
pub struct OutputDir {
    target: PathBuf,
    staging: PathBuf,
    created_parents: Vec<PathBuf>,
    committed: bool,
}

impl OutputDir {
    /// Prepares output folder `path`, refusing now (before any work) what `commit` would refuse: a target
    /// that is not a folder (a file, a symbolic link, a FIFO), the current folder or one above it, or a
    /// non-empty folder calibseg did not write unless `overwrite`. Missing parent folders are created
    /// (and removed again if nothing is committed).
    pub fn create(path: impl AsRef<Path>, overwrite: bool) -> Result<Self> {
        let given = path.as_ref();
        let target = match split(given) {
            Some(_) => given.to_path_buf(),
            // `.`, `..`, `a/..`: the folder they resolve to, by its real name.
            None => fs::canonicalize(given)
                .map_err(|e| io_err(given, "cannot resolve the output folder", e))?,
        };
        let (parent, name) = split(&target).ok_or_else(|| {
            out_err(
                given,
                "is the root folder; choose an output folder below it",
            )
        })?;
        check_dir_target(&target, given, overwrite)?;
        let mut created_parents = Vec::new();
        let mut p = parent.clone();
        while fs::symlink_metadata(&p).is_err() {
            created_parents.push(p.clone());
            match p.parent().filter(|q| !q.as_os_str().is_empty()) {
                Some(q) => p = q.to_path_buf(),
                None => break,
            }
        }
        let mut out = OutputDir {
            target,
            staging: PathBuf::new(),
            created_parents,
            committed: false,
        };
        fs::create_dir_all(&parent)
            .map_err(|e| io_err(given, "cannot create the folder it goes in", e))?;
        let staging = temp_sibling(&parent, &name, "new");
        fs::create_dir(&staging)
            .map_err(|e| io_err(given, "cannot create the output folder", e))?;
        out.staging = staging;
        Ok(out)
    }

    /// Where to write now: the temporary folder (it becomes the target at [`OutputDir::commit`]).
    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// The final folder.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// `rel` under the temporary folder (checked to stay inside it).
    pub fn join(&self, rel: impl AsRef<Path>) -> Result<PathBuf> {
        let rel = rel.as_ref();
        if rel.components().any(|c| !matches!(c, Component::Normal(_)))
            || rel.as_os_str().is_empty()
        {
            return Err(out_err(
                &self.target.join(rel),
                "is not a plain relative path inside the output folder",
            ));
        }
        Ok(self.staging.join(rel))
    }

    /// Rewrites the paths an error names from the temporary folder to the target, so messages about
    /// writing into the folder name the output the user gave.
    pub fn rename_in_error(&self, e: Error) -> Error {
        let (from, to) = (
            self.staging.display().to_string(),
            self.target.display().to_string(),
        );
        let fix = |p: String| match p.strip_prefix(&from) {
            Some(rest) => format!("{to}{rest}"),
            None => p,
        };
        match e {
            Error::Io { path, source } => Error::Io {
                path: fix(path),
                source,
            },
            Error::Format { path, message } => Error::Format {
                path: fix(path),
                message,
            },
            Error::Output { path, message } => Error::Output {
                path: fix(path),
                message,
            },
            other => other,
        }
    }

    /// Writes a file at `rel` inside the folder.
    pub fn write_file(&self, rel: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
        let rel = rel.as_ref();
        let p = self.join(rel)?;
        fs::write(&p, bytes).map_err(|e| io_err(&self.target.join(rel), "cannot write", e))
    }

    /// Creates a sub-folder `rel` (and its parents) inside the folder; returns its current path.
    pub fn create_dir(&self, rel: impl AsRef<Path>) -> Result<PathBuf> {
        let rel = rel.as_ref();
        let p = self.join(rel)?;
        fs::create_dir_all(&p)
            .map_err(|e| io_err(&self.target.join(rel), "cannot create the folder", e))?;
        Ok(p)
    }

    /// Syncs everything written, adds the manifest and swaps the folder in whole: the previous target (if
    /// any, and allowed at [`OutputDir::create`]) is moved aside, the new folder renamed into place, and the
    /// old one deleted. If the swap fails the previous folder is put back. Returns the final path.
    pub fn commit(mut self) -> Result<PathBuf> {
        let given = self.target.clone();
        let mut entries = BTreeSet::new();
        walk(&self.staging, Path::new(""), &mut entries).map_err(|e| self.rename_in_error(e))?;
        entries.remove(MANIFEST);
        let manifest = Manifest {
            written_by: format!("calibseg {}", env!("CARGO_PKG_VERSION")),
            entries: entries.into_iter().collect(),
        };
        let json = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
        fs::write(self.staging.join(MANIFEST), json)
            .map_err(|e| io_err(&given, "cannot write the manifest", e))?;
        sync_tree(&self.staging).map_err(|e| io_err(&given, "cannot write", e))?;
        // The target may have changed since `create`: check again (overwrite was decided there).
        let replace = match fs::symlink_metadata(&self.target) {
            Ok(m) if m.file_type().is_dir() => true,
            Ok(m) => {
                return Err(out_err(
                    &given,
                    format!("is {}; the output must be a folder", kind_of(&m)),
                ))
            }
            Err(_) => false,
        };
        let (parent, name) = split(&self.target).expect("checked in create");
        if replace {
            let old = temp_sibling(&parent, &name, "old");
            fs::rename(&self.target, &old)
                .map_err(|e| io_err(&given, "cannot move the previous folder aside", e))?;
            if let Err(e) = fs::rename(&self.staging, &self.target) {
                let _ = fs::rename(&old, &self.target);
                return Err(io_err(&given, "cannot move the new folder into place", e));
            }
            self.committed = true;
            sync_dir(&parent);
            fs::remove_dir_all(&old).map_err(|e| {
                io_err(
                    &old,
                    "the new output is in place but the previous one could not be deleted",
                    e,
                )
            })?;
        } else {
            fs::rename(&self.staging, &self.target)
                .map_err(|e| io_err(&given, "cannot move the new folder into place", e))?;
            self.committed = true;
            sync_dir(&parent);
        }
        Ok(self.target.clone())
    }
}

/// Syncs every file under `dir` and the folders themselves.
fn sync_tree(dir: &Path) -> std::io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let t = e.file_type()?;
        if t.is_dir() {
            sync_tree(&e.path())?;
        } else if t.is_file() {
            File::open(e.path())?.sync_all()?;
        }
    }
    sync_dir(dir);
    Ok(())
}

/// Error unless the folder target may be (re)placed: absent, an empty folder, a folder a previous
/// [`OutputDir`] wrote, or any folder when `overwrite`. Never the current folder or one above it.
fn check_dir_target(target: &Path, given: &Path, overwrite: bool) -> Result<()> {
    let meta = match fs::symlink_metadata(target) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(given, "cannot inspect the output folder", e)),
    };
    if !meta.file_type().is_dir() {
        return Err(out_err(
            given,
            format!(
                "is {}; the output must be a folder (missing, empty, or written by calibseg)",
                kind_of(&meta)
            ),
        ));
    }
    if let (Ok(t), Ok(cwd)) = (
        fs::canonicalize(target),
        std::env::current_dir().and_then(fs::canonicalize),
    ) {
        if cwd.starts_with(&t) {
            return Err(out_err(
                given,
                "is the current folder or contains it; choose a new output folder",
            ));
        }
    }
    if overwrite {
        return Ok(());
    }
    match written_by_us(target)? {
        None => Ok(()),
        Some(entry) => Err(out_err(
            given,
            format!(
                "holds '{entry}', which calibseg did not write; pass --overwrite to replace the whole \
                 folder, or choose another output folder"
            ),
        )),
    }
}

impl Drop for OutputDir {
    fn drop(&mut self) {
        if !self.committed && !self.staging.as_os_str().is_empty() {
            let _ = fs::remove_dir_all(&self.staging);
        }
        if !self.committed {
            for p in &self.created_parents {
                let _ = fs::remove_dir(p); // only if still empty
            }
        }
    }
}
