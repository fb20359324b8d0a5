//! The output module: atomic files that replace only regular files and leave no temporary behind, and
//! output folders swapped in whole that never delete what calibseg did not write. Everything happens in a
//! temporary folder; the disk-full and read-only cases mount a small tmpfs where the test may (root), and
//! skip with a printed reason elsewhere.
#![cfg(unix)]

use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use calibseg::io::output::{
    write_file_atomically, write_file_with, AtomicFile, OutputDir, MANIFEST,
};
use calibseg::Error;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("calibseg-output-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Every entry under `dir`, relative, folders with a trailing `/`.
fn tree(dir: &Path) -> BTreeSet<String> {
    fn walk(base: &Path, rel: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(base.join(rel)).unwrap() {
            let e = e.unwrap();
            let r = rel.join(e.file_name());
            let is_dir = e.file_type().unwrap().is_dir();
            let s = r.to_string_lossy().to_string();
            out.insert(if is_dir { format!("{s}/") } else { s });
            if is_dir {
                walk(base, &r, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, Path::new(""), &mut out);
    out
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn mkfifo(p: &Path) {
    let ok = Command::new("mkfifo").arg(p).status().unwrap().success();
    assert!(ok, "mkfifo {}", p.display());
}

/// The error names `target` and no temporary.
fn names_output(e: &Error, target: &Path) {
    let s = e.to_string();
    assert!(s.contains(&target.display().to_string()), "{s}");
    assert!(!s.contains(".calibseg-"), "names a temporary: {s}");
    assert_eq!(s.lines().count(), 1, "{s}");
}

/// A small tmpfs mounted at a new folder, unmounted on drop; `None` (with the reason printed) where the
/// test may not mount.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, options: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(at)
            .output();
        match o {
            Ok(o) if o.status.success() => Some(Tmpfs(at.to_path_buf())),
            Ok(o) => {
                eprintln!(
                    "skipping: cannot mount a tmpfs ({})",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipping: cannot run mount ({e})");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn atomic_file_writes_and_replaces_regular_files() {
    let d = scratch("atomic");
    let p = d.join("out.bin");
    write_file_atomically(&p, b"first").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"first");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    write_file_atomically(&p, b"second, longer").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"second, longer");
    let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "a replaced file keeps its permissions");
    // Streamed content, and a bare file name relative to a folder given as a path.
    write_file_with(d.join("streamed.txt"), |w| {
        use std::io::Write;
        for i in 0..1000 {
            writeln!(w, "{i}")?;
        }
        Ok(())
    })
    .unwrap();
    let text = std::fs::read_to_string(d.join("streamed.txt")).unwrap();
    assert_eq!(text.lines().count(), 1000);
    assert_eq!(tree(&d), set(&["out.bin", "streamed.txt"]));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn atomic_file_refuses_non_regular_targets_and_leaves_them_alone() {
    let d = scratch("refuse");
    // A FIFO stays a FIFO (the old code renamed a regular file over it).
    let fifo = d.join("pipe");
    mkfifo(&fifo);
    let e = write_file_atomically(&fifo, b"x").unwrap_err();
    assert!(matches!(e, Error::Output { .. }), "{e:?}");
    assert!(e.to_string().contains("FIFO"), "{e}");
    names_output(&e, &fifo);
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    // A symbolic link is refused; the link and the file it points to are untouched.
    let real = d.join("real.txt");
    std::fs::write(&real, b"keep me").unwrap();
    let link = d.join("link.txt");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let e = write_file_atomically(&link, b"x").unwrap_err();
    assert!(e.to_string().contains("symbolic link"), "{e}");
    names_output(&e, &link);
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(&real).unwrap(), b"keep me");
    // A folder, and paths that name no file.
    let sub = d.join("sub");
    std::fs::create_dir(&sub).unwrap();
    let e = write_file_atomically(&sub, b"x").unwrap_err();
    assert!(e.to_string().contains("a folder"), "{e}");
    let e = write_file_atomically(d.join("sub/."), b"x").unwrap_err();
    assert!(e.to_string().contains("a folder"), "{e}");
    for p in [d.join("sub/.."), PathBuf::from("/")] {
        let e = write_file_atomically(&p, b"x").unwrap_err();
        assert!(e.to_string().contains("names no file"), "{e}");
    }
    // A missing parent folder: the error names the output, not the temporary.
    let deep = d.join("missing/out.bin");
    let e = write_file_atomically(&deep, b"x").unwrap_err();
    names_output(&e, &deep);
    // Nothing was added anywhere.
    assert_eq!(tree(&d), set(&["link.txt", "pipe", "real.txt", "sub/"]));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn failed_writes_leave_no_temporary() {
    let d = scratch("failed");
    let p = d.join("kept.txt");
    std::fs::write(&p, b"old").unwrap();
    // An error from the content producer.
    let e = write_file_with(&p, |_| Err(std::io::Error::other("encoder failed"))).unwrap_err();
    assert!(e.to_string().contains("encoder failed"), "{e}");
    names_output(&e, &p);
    // A file dropped without commit.
    {
        use std::io::Write;
        let mut f = AtomicFile::create(&p).unwrap();
        f.write_all(b"half").unwrap();
    }
    assert_eq!(std::fs::read(&p).unwrap(), b"old");
    assert_eq!(tree(&d), set(&["kept.txt"]));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn disk_full_keeps_the_old_file_and_removes_the_temporary() {
    let d = scratch("full");
    let Some(fs) = Tmpfs::mount(&d.join("small"), "size=64k") else {
        return;
    };
    let p = fs.0.join("result.bin");
    write_file_atomically(&p, b"previous result").unwrap();
    let big = vec![7u8; 1 << 20];
    let e = write_file_atomically(&p, &big).unwrap_err();
    names_output(&e, &p);
    assert_eq!(std::fs::read(&p).unwrap(), b"previous result");
    assert_eq!(tree(&fs.0), set(&["result.bin"]));
    // An output folder that fills the disk: the previous folder stays, the temporary goes.
    let out = fs.0.join("results");
    let o = OutputDir::create(&out, false).unwrap();
    o.write_file("a.txt", b"run 1").unwrap();
    o.commit().unwrap();
    let o = OutputDir::create(&out, false).unwrap();
    let e = o.write_file("big.bin", &big).unwrap_err();
    names_output(&e, &out.join("big.bin"));
    drop(o);
    assert_eq!(std::fs::read(out.join("a.txt")).unwrap(), b"run 1");
    assert_eq!(
        tree(&fs.0),
        set(&[
            "result.bin",
            "results/",
            "results/a.txt",
            &format!("results/{MANIFEST}")
        ])
    );
    drop(fs);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn read_only_folder_is_an_error_naming_the_output() {
    let d = scratch("readonly");
    let ro = d.join("ro");
    // Root ignores permission bits, so root gets a read-only tmpfs instead.
    let _mount = if unsafe_is_root() {
        match Tmpfs::mount(&ro, "ro,size=16k") {
            Some(m) => Some(m),
            None => return,
        }
    } else {
        std::fs::create_dir(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        None
    };
    let p = ro.join("out.safetensors");
    let e = write_file_atomically(&p, b"x").unwrap_err();
    names_output(&e, &p);
    let e = OutputDir::create(ro.join("results"), false).unwrap_err();
    names_output(&e, &ro.join("results"));
    assert!(tree(&ro).is_empty());
    drop(_mount);
    let _ = std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755));
    std::fs::remove_dir_all(&d).unwrap();
}

fn unsafe_is_root() -> bool {
    // The effective user id through `id -u` (no libc dependency).
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[test]
fn output_folder_is_built_aside_and_replaced_whole() {
    let d = scratch("folder");
    let out = d.join("nested/results");
    // Nothing is visible before commit; dropping uncommitted removes the temporary and the parents made.
    {
        let o = OutputDir::create(&out, false).unwrap();
        o.write_file("metrics.csv", b"x").unwrap();
        assert!(!out.exists());
    }
    assert!(tree(&d).is_empty(), "{:?}", tree(&d));
    // First run: two files and a picture folder.
    let o = OutputDir::create(&out, false).unwrap();
    o.write_file("metrics.csv", b"run 1").unwrap();
    o.create_dir("reliability").unwrap();
    o.write_file("reliability/a.png", b"png").unwrap();
    assert_eq!(o.commit().unwrap(), out);
    assert_eq!(
        tree(&out),
        set(&["metrics.csv", "reliability/", "reliability/a.png", MANIFEST])
    );
    // Second run without pictures replaces the folder whole: the old pictures are gone.
    let o = OutputDir::create(&out, false).unwrap();
    o.write_file("metrics.csv", b"run 2").unwrap();
    o.commit().unwrap();
    assert_eq!(tree(&out), set(&["metrics.csv", MANIFEST]));
    assert_eq!(std::fs::read(out.join("metrics.csv")).unwrap(), b"run 2");
    assert_eq!(
        tree(&d),
        set(&[
            "nested/",
            "nested/results/",
            "nested/results/metrics.csv",
            &format!("nested/results/{MANIFEST}")
        ])
    );
    // Paths escaping the folder are refused.
    let o = OutputDir::create(&out, false).unwrap();
    for bad in ["../x", "/etc/x", "a/../../x", ""] {
        o.write_file(bad, b"x").unwrap_err();
    }
    drop(o);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn output_folder_never_deletes_what_it_did_not_write() {
    let d = scratch("foreign");
    // A user's folder with their own files is refused, and left as it was.
    let mine = d.join("mine");
    std::fs::create_dir_all(mine.join("reliability")).unwrap();
    std::fs::write(mine.join("reliability/notes.txt"), b"user data").unwrap();
    let e = OutputDir::create(&mine, false).unwrap_err();
    assert!(matches!(e, Error::Output { .. }), "{e:?}");
    assert!(e.to_string().contains("--overwrite"), "{e}");
    assert!(e.to_string().contains("reliability/"), "{e}");
    names_output(&e, &mine);
    assert_eq!(
        std::fs::read(mine.join("reliability/notes.txt")).unwrap(),
        b"user data"
    );
    // A folder calibseg wrote, to which the user then added a file, is refused too.
    let ours = d.join("ours");
    let o = OutputDir::create(&ours, false).unwrap();
    o.create_dir("reliability").unwrap();
    o.write_file("reliability/a.png", b"png").unwrap();
    o.commit().unwrap();
    std::fs::write(ours.join("reliability/kept.nii.gz"), b"input").unwrap();
    let e = OutputDir::create(&ours, false).unwrap_err();
    assert!(e.to_string().contains("reliability/kept.nii.gz"), "{e}");
    assert_eq!(
        std::fs::read(ours.join("reliability/kept.nii.gz")).unwrap(),
        b"input"
    );
    // An empty folder is used; --overwrite replaces a foreign folder as a whole.
    let empty = d.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = OutputDir::create(&empty, false).unwrap();
    o.write_file("a.txt", b"a").unwrap();
    o.commit().unwrap();
    assert_eq!(tree(&empty), set(&["a.txt", MANIFEST]));
    let o = OutputDir::create(&mine, true).unwrap();
    o.write_file("a.txt", b"a").unwrap();
    o.commit().unwrap();
    assert_eq!(tree(&mine), set(&["a.txt", MANIFEST]));
    // Targets that are not folders are refused whatever --overwrite says.
    let file = d.join("file.txt");
    std::fs::write(&file, b"f").unwrap();
    let fifo = d.join("pipe");
    mkfifo(&fifo);
    let link = d.join("link");
    std::os::unix::fs::symlink(&ours, &link).unwrap();
    for (p, kind) in [
        (&file, "regular file"),
        (&fifo, "FIFO"),
        (&link, "symbolic link"),
    ] {
        for overwrite in [false, true] {
            let e = OutputDir::create(p, overwrite).unwrap_err();
            assert!(e.to_string().contains(kind), "{e}");
            names_output(&e, p);
        }
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"f");
    // The current folder (here the package root) is never replaced, and `.` is named as what it is.
    for overwrite in [false, true] {
        let e = OutputDir::create(".", overwrite).unwrap_err();
        assert!(e.to_string().contains("current folder"), "{e}");
    }
    let before = tree(&d);
    assert!(
        !before
            .iter()
            .any(|e| e.contains(".calibseg-") && !e.ends_with(MANIFEST)),
        "{before:?}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}
