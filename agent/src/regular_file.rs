//! Opening a file the agent only reads, safely whatever is at that path: never following a
//! symbolic link swapped in after a check, never waiting on a FIFO or a file lease, never taking
//! a controlling terminal, and accepting only a regular file.

use std::fs::File;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Open `path` for reading. `Ok(None)` when something other than a regular file is there.
pub fn open_regular_file(path: &Path) -> io::Result<Option<File>> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    Ok(f.metadata().is_ok_and(|m| m.is_file()).then_some(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_open() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert!(open_regular_file(&file).unwrap().is_some());
        assert!(open_regular_file(dir.path()).unwrap().is_none());
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(open_regular_file(&link).is_err(), "links are not followed");
        let fifo = dir.path().join("p");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(
            open_regular_file(&fifo).unwrap().is_none(),
            "a FIFO neither blocks nor opens"
        );
    }
}
