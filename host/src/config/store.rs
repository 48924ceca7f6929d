//! The config file as a durable store: content hashes (to tell the gateway's own
//! writes from other changes), crash-safe replacement (temp file, fsync, rename,
//! fsync of the directory), and an advisory lock that serializes writers across
//! processes sharing the file.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

/// SHA-256 of a config text, hex encoded.
pub fn content_hash(text: &[u8]) -> String {
    hex::encode(Sha256::digest(text))
}

/// Whether a config file should be written back as JSON rather than YAML.
pub fn is_json_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

/// Where writes to `path` really go: the target when `path` is a symlink (so the
/// link stays a link), else `path` itself.
pub fn write_target(path: &Path) -> PathBuf {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
        _ => path.to_path_buf(),
    }
}

fn dir_of(path: &Path) -> PathBuf {
    super::base_dir_of(path)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config".to_string())
}

/// Whether `name` is one of the helper files this module creates next to a config
/// file (temp files and the lock file), which watchers should ignore.
pub fn is_helper_file(config: &Path, name: &std::ffi::OsStr) -> bool {
    let prefix = format!(".{}.", file_name(config));
    name.to_string_lossy().starts_with(&prefix)
}

/// Replaces the file at `path` with `contents` so that a reader (or a crash) sees
/// either the old or the new file, never a mix: the text goes to a temp file in
/// the same directory, is flushed to disk, renamed over `path`, and the directory
/// entry is flushed too. The old file's permissions are kept.
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let target = write_target(path);
    let dir = dir_of(&target);
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        file_name(&target),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        if let Ok(meta) = fs::metadata(&target) {
            f.set_permissions(meta.permissions())?;
        }
        f.write_all(contents)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, &target)?;
        // The rename is durable only once the directory is flushed.
        File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// An exclusive advisory lock shared by every gateway process writing one config
/// file; released when dropped.
#[derive(Debug)]
pub struct WriteLock {
    file: File,
}

impl WriteLock {
    /// Blocks until this process holds the write lock of the config at `path`
    /// (a `.name.lock` file next to the config's real location).
    pub fn acquire(path: &Path) -> std::io::Result<WriteLock> {
        let target = write_target(path);
        let lock = dir_of(&target).join(format!(".{}.lock", file_name(&target)));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(lock)?;
        file.lock()?;
        Ok(WriteLock { file })
    }
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_keeps_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.yaml");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != "gw.yaml")
            .collect();
        assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
    }

    #[test]
    fn writes_through_a_symlink_keep_the_link() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.yaml");
        let link = dir.path().join("link.yaml");
        fs::write(&real, "old").unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(fs::read_to_string(&real).unwrap(), "new");
    }

    #[test]
    fn helper_files_are_recognised() {
        let cfg = Path::new("/x/gw.yaml");
        assert!(is_helper_file(cfg, std::ffi::OsStr::new(".gw.yaml.lock")));
        assert!(is_helper_file(cfg, std::ffi::OsStr::new(".gw.yaml.tmp-1-2")));
        assert!(!is_helper_file(cfg, std::ffi::OsStr::new("gw.yaml")));
        assert_ne!(content_hash(b"a"), content_hash(b"b"));
        assert!(is_json_path(Path::new("a/b.JSON")));
    }

    #[test]
    fn lock_is_exclusive_between_handles() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.yaml");
        let held = WriteLock::acquire(&path).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        let t = std::thread::spawn(move || {
            let _second = WriteLock::acquire(&p).unwrap();
            tx.send(()).unwrap();
        });
        assert!(rx.recv_timeout(std::time::Duration::from_millis(200)).is_err());
        drop(held);
        rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        t.join().unwrap();
    }
}
