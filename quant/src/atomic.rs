//! Atomic output: everything is written into a temporary sibling of the destination and renamed
//! into place only when complete, so a failure (bad input, full disk, Ctrl-C) never leaves a
//! partial artifact where the user asked for one.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// A file or directory being written. Dropped without `commit`, it is removed.
pub struct AtomicOutput {
    dest: PathBuf,
    tmp: PathBuf,
    committed: bool,
}

impl AtomicOutput {
    fn tmp_for(dest: &Path) -> io::Result<PathBuf> {
        let name = dest.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: output path has no file name", dest.display()),
            )
        })?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        Ok(dest.with_file_name(tmp_name))
    }

    /// Starts a directory output; `path()` is the temporary directory to fill.
    pub fn dir(dest: impl AsRef<Path>) -> io::Result<AtomicOutput> {
        let dest = dest.as_ref().to_owned();
        let tmp = Self::tmp_for(&dest)?;
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir_all(&tmp)?;
        Ok(AtomicOutput {
            dest,
            tmp,
            committed: false,
        })
    }

    /// Starts a single-file output; `path()` is the temporary file to write.
    pub fn file(dest: impl AsRef<Path>) -> io::Result<AtomicOutput> {
        let dest = dest.as_ref().to_owned();
        let tmp = Self::tmp_for(&dest)?;
        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent)?;
        }
        Ok(AtomicOutput {
            dest,
            tmp,
            committed: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.tmp
    }

    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Moves the finished output into place, replacing an earlier one at the destination.
    pub fn commit(mut self) -> io::Result<PathBuf> {
        if self.tmp.is_dir() && self.dest.is_dir() {
            fs::remove_dir_all(&self.dest)?;
        }
        fs::rename(&self.tmp, &self.dest)?;
        self.committed = true;
        Ok(self.dest.clone())
    }
}

impl Drop for AtomicOutput {
    fn drop(&mut self) {
        if !self.committed {
            let _ = if self.tmp.is_dir() {
                fs::remove_dir_all(&self.tmp)
            } else {
                fs::remove_file(&self.tmp)
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncommitted_output_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("out");
        {
            let o = AtomicOutput::dir(&dest).unwrap();
            fs::write(o.path().join("a"), b"x").unwrap();
        }
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 0);
        {
            let o = AtomicOutput::file(root.path().join("f.gguf")).unwrap();
            fs::write(o.path(), b"x").unwrap();
        }
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 0);
    }

    #[test]
    fn commit_replaces_the_destination() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("out");
        fs::create_dir(&dest).unwrap();
        fs::write(dest.join("old"), b"x").unwrap();
        let o = AtomicOutput::dir(&dest).unwrap();
        fs::write(o.path().join("new"), b"y").unwrap();
        o.commit().unwrap();
        assert!(dest.join("new").exists() && !dest.join("old").exists());
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 1);
    }
}
