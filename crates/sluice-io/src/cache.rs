//! The page cache seen from a file: how much of a range is resident
//! (`cachestat`, or `mincore` where the kernel lacks it), evicting it
//! (`fdatasync` + `POSIX_FADV_DONTNEED`) and warming it (`readahead`, which
//! fills the cache without copying into user space).

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

/// `cachestat(2)` (Linux 6.5+): the same number on every architecture.
const SYS_CACHESTAT: libc::c_long = 451;

#[repr(C)]
struct CachestatRange {
    off: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct Cachestat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

/// True when every page of `fd[offset..offset+len]` is in the page cache, so
/// sending it cannot block on the disk. One `cachestat` call, no mapping;
/// falls back to `mincore` on kernels without it.
pub fn is_resident(file: &File, offset: u64, len: u64) -> io::Result<bool> {
    if len == 0 {
        return Ok(true);
    }
    let page = rustix::param::page_size() as u64;
    let first = offset / page;
    let last = (offset + len).div_ceil(page);
    let range = CachestatRange {
        off: first * page,
        len: (last - first) * page,
    };
    let mut stat = Cachestat::default();
    // SAFETY: cachestat reads `range` and writes `stat`, both live and of the
    // kernel's layout; the fd is open for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const CachestatRange,
            &mut stat as *mut Cachestat,
            0u32,
        )
    };
    if rc == 0 {
        return Ok(stat.nr_cache >= last - first);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ENOSYS) {
        return resident_fraction(file, offset, len).map(|f| f >= 1.0);
    }
    Err(err)
}

/// True when the region can be sent without waiting for the disk, as far as
/// two cheap probes tell: every page is in the page cache (`cachestat`), and
/// its first and last pages can be read without blocking
/// (`preadv2(RWF_NOWAIT)` of one byte each). The second check matters because
/// `cachestat` also counts pages that readahead has put in the cache but not
/// yet filled: a `sendfile` of those waits on their I/O. Readahead fills a
/// window in order, so a readable last page means the pages before it are
/// done too (not guaranteed, but the exceptions are rare and short).
pub fn is_ready(file: &File, offset: u64, len: u64) -> io::Result<bool> {
    if len == 0 {
        return Ok(true);
    }
    if !is_resident(file, offset, len)? {
        return Ok(false);
    }
    let mut byte = [0u8; 1];
    for pos in [offset, offset + len - 1] {
        match rustix::io::preadv2(
            file,
            &mut [io::IoSliceMut::new(&mut byte)],
            pos,
            rustix::io::ReadWriteFlags::NOWAIT,
        ) {
            Ok(1) => {}
            Ok(_) | Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::OPNOTSUPP) => {
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

/// Brings `file[offset..offset+len]` into the page cache and returns when it
/// is there. Blocks on the disk: call it from a thread that may block.
///
/// `readahead(2)` submits the reads as large requests but returns before they
/// complete (the pages are still locked for I/O), so a send started right
/// after it would wait on those locks. The wait happens here instead, on a
/// thread that may block.
pub fn fill(file: &File, offset: u64, len: u64) -> io::Result<()> {
    const STEP: u64 = 16 << 20;
    let mut pos = offset;
    let end = offset + len;
    while pos < end {
        let n = (end - pos).min(STEP);
        // SAFETY: readahead only reads from the open fd into the page cache.
        let rc = unsafe { libc::readahead(file.as_raw_fd(), pos as libc::off64_t, n as usize) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        pos += n;
    }
    wait_resident(file, offset, len)
}

/// Returns once every page of the region is in the page cache: a 1-byte
/// `pread` per page waits for that page's read to finish. Not
/// `MADV_POPULATE_READ` on a mapping, though it makes fewer calls: mapping
/// and unmapping take the process's `mmap_lock` for writing, and while a
/// populate waits for the disk that stalls every page fault of every thread
/// (measured: the async workers' 1 ms pulse went 100 ms late).
fn wait_resident(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let page = rustix::param::page_size() as u64;
    let mut byte = [0u8; 1];
    let mut pos = offset;
    while pos < offset + len {
        rustix::io::pread(file, &mut byte, pos)?;
        pos = (pos / page + 1) * page;
    }
    Ok(())
}
