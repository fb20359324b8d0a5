//! How inputs are opened (`calibseg::io::input`): a FIFO, a device or a folder given where a file is read
//! is refused at once with an error naming the file and what it is, by every reader (safetensors, NIfTI,
//! NumPy, text), never read without end or waited on. A FIFO with no writer would block an ordinary
//! open forever, and `/dev/zero` would grow memory until the process is killed; each read here runs on a
//! thread that must answer within a few seconds.
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use calibseg::io::{input, nifti, npz, safetensors::TensorFile};
use calibseg::Error;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("calibseg-input-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn mkfifo(p: &Path) {
    let st = std::process::Command::new("mkfifo")
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success(), "mkfifo {}", p.display());
}

/// Runs `read` on its own thread and returns its error message, failing the test if it does not answer
/// within 10 s (it would hang on a FIFO or grow without end on `/dev/zero`) or if it succeeds.
fn refused_in_time<T: Send + 'static>(
    what: &str,
    read: impl FnOnce() -> calibseg::Result<T> + Send + 'static,
) -> String {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = read().err().map(|e: Error| e.to_string());
        let _ = tx.send(r);
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Some(e)) => e,
        Ok(None) => panic!("{what}: read as if it were a regular file"),
        Err(_) => panic!("{what}: no answer within 10 s (reading without end, or blocked)"),
    }
}

#[test]
fn non_regular_inputs_are_refused_by_every_reader() {
    let d = scratch("special");
    let fifo = d.join("pipe.safetensors");
    mkfifo(&fifo);
    let nii = d.join("pipe.nii.gz");
    mkfifo(&nii);
    let npz_fifo = d.join("pipe.npz");
    mkfifo(&npz_fifo);
    let folder = d.join("folder.safetensors");
    std::fs::create_dir(&folder).unwrap();

    type Reader = Box<dyn FnOnce(PathBuf) -> calibseg::Result<()> + Send>;
    let readers: Vec<(&str, PathBuf, Reader)> = vec![
        (
            "safetensors",
            fifo.clone(),
            Box::new(|p| TensorFile::open(p).map(drop)),
        ),
        (
            "nifti",
            nii.clone(),
            Box::new(|p| nifti::read_f32(p).map(drop)),
        ),
        (
            "npz",
            npz_fifo.clone(),
            Box::new(|p| npz::read_probabilities(p).map(drop)),
        ),
        (
            "text",
            fifo.clone(),
            Box::new(|p| input::read_regular_text(p).map(drop)),
        ),
        (
            "safetensors",
            "/dev/zero".into(),
            Box::new(|p| TensorFile::open(p).map(drop)),
        ),
        (
            "nifti",
            "/dev/zero".into(),
            Box::new(|p| nifti::read_f32(p).map(drop)),
        ),
        (
            "npy",
            "/dev/zero".into(),
            Box::new(|p| npz::read_npy(p).map(drop)),
        ),
        (
            "text",
            "/dev/zero".into(),
            Box::new(|p| input::read_regular(p).map(drop)),
        ),
        (
            "safetensors",
            folder.clone(),
            Box::new(|p| TensorFile::open(p).map(drop)),
        ),
    ];
    for (reader, path, read) in readers {
        let what = format!("{reader} reader on {}", path.display());
        let p = path.clone();
        let e = refused_in_time(&what, move || read(p));
        let kind = if path.starts_with("/dev") {
            "is a device"
        } else if path == folder {
            "is a folder"
        } else {
            "is a FIFO"
        };
        assert!(
            e.starts_with(&path.display().to_string())
                && e.contains(kind)
                && e.contains("regular file"),
            "{what}: {e}"
        );
        assert_eq!(e.lines().count(), 1, "{what}: {e}");
    }
    // A symbolic link to a regular file is read as that file.
    let real = d.join("real.txt");
    std::fs::write(&real, "text").unwrap();
    let link = d.join("link.txt");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    assert_eq!(input::read_regular_text(&link).unwrap(), "text");
    std::fs::remove_dir_all(&d).unwrap();
}
