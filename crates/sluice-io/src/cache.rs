//! The page cache seen from a file: how much of a range is resident
//! (`mincore`), evicting it (`fdatasync` + `POSIX_FADV_DONTNEED`) and warming it.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use rustix::fs::Advice;

/// The fraction (0.0–1.0) of `file[offset..offset+len]`'s pages in the page cache.
pub fn resident_fraction(file: &File, offset: u64, len: u64) -> io::Result<f64> {
    if len == 0 {
        return Ok(1.0);
    }
    let page = rustix::param::page_size() as u64;
    let start = offset / page * page;
    let map_len = usize::try_from(offset + len - start).map_err(io::Error::other)?;
    // SAFETY: a read-only shared mapping used only as an address range for
    // mincore(2); its bytes are never read, so truncation cannot fault us.
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(start)
            .len(map_len)
            .map(file.as_raw_fd())?
    };
    let pages = map_len.div_ceil(page as usize);
    let mut vec = vec![0u8; pages];
    // SAFETY: `map` is a live mapping of `map_len` bytes starting at a page
    // boundary, and `vec` has one byte per page of it, as mincore requires.
    let rc = unsafe { libc::mincore(map.as_ptr() as *mut libc::c_void, map_len, vec.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let resident = vec.iter().filter(|b| *b & 1 == 1).count();
    Ok(resident as f64 / pages as f64)
}

/// Drops the file's pages from the page cache: written back first
/// (`fdatasync`), then `POSIX_FADV_DONTNEED`. Needs no privileges. Pages still
/// mapped or referenced elsewhere may stay.
pub fn evict(file: &File) -> io::Result<()> {
    file.sync_data()?;
    rustix::fs::fadvise(file, 0, None, Advice::DontNeed)?;
    Ok(())
}

/// Reads the file's range through once so its pages are in the page cache.
pub fn warm(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = offset;
    let end = offset + len;
    while pos < end {
        let want = ((end - pos) as usize).min(buf.len());
        let n = file.read_at(&mut buf[..want], pos)?;
        if n == 0 {
            break;
        }
        pos += n as u64;
    }
    Ok(())
}
