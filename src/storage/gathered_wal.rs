//! A VFS over SQLite's own (`unix`) for the writer's connection: the frames a transaction
//! appends to the write-ahead log reach the file in one `pwrite` instead of two per page.
//!
//! SQLite writes each frame of the log with two calls, its 24-byte header and then the page,
//! at offsets that straddle the kernel's 4 KiB pages (a frame is 4,120 bytes). A turn's two
//! commits append 7 to 18 frames, so 14 to 37 calls, each walking the page cache for one or
//! two pages: in a c=64 profile those calls were 11 % of the service's CPU, nearly as much
//! as all of SQLite's own work (13 %). Here the log's writes are gathered in a buffer and written with
//! one call as soon as the transaction's commit frame is complete, or earlier when anything
//! could look at the file: a read, its size, a sync, a truncation, a file control, closing it,
//! and the shared-memory barrier and locks through which other connections learn of new
//! frames (SQLite raises the barrier before it publishes a commit). Writes are applied to the
//! buffer in their order, a write inside it overwriting what it covers, so the file ends up
//! with the same bytes in the same order as without the buffer, and a commit is fsynced (with
//! `synchronous=FULL`) after all its frames are in the file, as before: only the number of
//! system calls changes.
//!
//! A failed write-out loses bytes SQLite was told were written, so it is reported as an I/O
//! error wherever it happens (SQLite then rolls the whole transaction back; "disk full"
//! from a read could roll back only the statement), and every later write, sync and size
//! of the log fails until SQLite releases the log's write lock, that is, until the
//! transaction is over. Frames rewritten in place (checksums at a commit) and anything
//! written after the commit frame are written through, so that no commit's bytes are left
//! for the barrier, which cannot report an error.
//!
//! Only the log is buffered; the database file, its shared memory and locks go straight
//! through. Each open log has its own buffer (only the writer's connection opens files
//! through this VFS, so in practice there is one).

use libsqlite3_sys as ffi;
use std::ffi::{c_char, c_int, c_void};
use std::ptr;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

/// The VFS's registered name, for `SqliteConnectOptions::vfs`.
pub const NAME: &str = "threadkeeper-gathered-wal";
const NAME_C: &[u8] = b"threadkeeper-gathered-wal\0";

/// A buffer this large is written out even in the middle of a transaction (an import of a
/// large thread), so that the memory it takes stays bounded.
const MAX_BUFFERED: usize = 1 << 20;
/// The most the default VFS writes in one call: it masks a write's length with 0x1ffff
/// (`seekAndWriteFd` in sqlite3.c), so a longer one would write the wrong number of bytes
/// (none at all for 0x20000) and fail.
const MAX_WRITE: usize = 0x1f000;
/// The buffer's allocation, made once and kept: a buffer at most MAX_BUFFERED long when a
/// write arrives, plus that write (a page, at most 64 KiB), plus a commit frame's header
/// kept with its page. Growing and shrinking it per transaction would map and unmap memory
/// each time (glibc serves these sizes with mmap; mimalloc, the binary's allocator, would
/// move them between its size classes).
const CAPACITY: usize = MAX_BUFFERED + (64 << 10) + FRAME_HEADER;
/// A frame header: page number, database size after a commit (0 for other frames), salts
/// and checksums, each a 4-byte big-endian word (https://sqlite.org/fileformat.html#walformat).
const FRAME_HEADER: usize = 24;

/// Calls the real file's method, or answers `missing` when it has none.
macro_rules! forward {
    ($file:expr, $method:ident ( $($arg:expr),* ), $missing:expr) => {
        match real_methods($file).$method {
            Some(method) => method(real($file) $(, $arg)*),
            None => $missing,
        }
    };
}

/// `forward!`, after writing out the log's buffer (`flush_before`): the operation's answer,
/// or the write-out's error.
macro_rules! flushed_then_forward {
    ($file:expr, reads: $reads:expr, $method:ident ( $($arg:expr),* ), $missing:expr) => {{
        let rc = flush_before($file, $reads);
        if rc != ffi::SQLITE_OK {
            rc
        } else {
            forward!($file, $method($($arg),*), $missing)
        }
    }};
}

/// Registers the VFS (once per process) over the default one.
pub fn register() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED.get_or_init(register_once).clone()
}

fn register_once() -> Result<(), String> {
    // SAFETY: sqlite3_vfs_find(NULL) returns the default VFS, which SQLite never frees.
    let parent = unsafe { ffi::sqlite3_vfs_find(ptr::null()) };
    if parent.is_null() {
        return Err("SQLite has no default VFS".into());
    }
    // SAFETY: `parent` is a valid, registered VFS for the life of the process.
    let parent_size = unsafe { (*parent).szOsFile };
    // The copy keeps the default VFS's functions and its pAppData (the unix VFS keeps its
    // locking-style finder there), so every call but xOpen behaves exactly as the default
    // VFS; xOpen wraps the file the default VFS opens.
    let mut vfs = unsafe { *parent };
    vfs.szOsFile = c_int::try_from(REAL_OFFSET).map_err(|e| e.to_string())? + parent_size;
    vfs.zName = NAME_C.as_ptr().cast();
    vfs.pNext = ptr::null_mut();
    vfs.xOpen = Some(open);
    PARENT
        .set(Parent(parent))
        .map_err(|_| "gathered WAL VFS registered twice".to_string())?;
    // SQLite keeps the pointer for good, so the struct is leaked on purpose (once).
    let vfs = Box::leak(Box::new(vfs));
    // SAFETY: `vfs` is a complete VFS that lives for the rest of the process.
    let rc = unsafe { ffi::sqlite3_vfs_register(vfs, 0) };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(format!(
            "registering the gathered WAL VFS: SQLite error {rc}"
        ))
    }
}

/// The default VFS this one opens files with.
struct Parent(*mut ffi::sqlite3_vfs);
// SAFETY: a registered VFS is immutable and usable from every thread (SQLite is built
// threadsafe).
unsafe impl Send for Parent {}
unsafe impl Sync for Parent {}
static PARENT: OnceLock<Parent> = OnceLock::new();

/// What SQLite allocates for each open file (`szOsFile` bytes): this header, then, at
/// `REAL_OFFSET`, the default VFS's own file object.
#[repr(C)]
struct File {
    base: ffi::sqlite3_file,
    /// A log's buffer (null for every other file), allocated at open and freed at close.
    log: *mut Mutex<Buffer>,
    /// A database's log, by the name SQLite opens it under (null for other files): the
    /// database's shared-memory calls flush it.
    log_name: *const c_char,
    /// Writes made to the real file, for the tests.
    #[cfg(test)]
    real_writes: usize,
    /// The error the tests make every real write of the log fail with.
    #[cfg(test)]
    failing: Option<c_int>,
    /// Write-outs left to the shared-memory barrier, for the tests (there should be none).
    #[cfg(test)]
    barrier_writes: usize,
}

const REAL_OFFSET: usize = (std::mem::size_of::<File>() + 15) & !15;

/// The default VFS's file object inside ours.
///
/// # Safety
/// `file` must point to a `File` allocated with this VFS's `szOsFile`.
unsafe fn real(file: *mut ffi::sqlite3_file) -> *mut ffi::sqlite3_file {
    file.cast::<u8>().add(REAL_OFFSET).cast()
}

/// # Safety
/// As for [`real`]; the real file is open.
unsafe fn real_methods(file: *mut ffi::sqlite3_file) -> &'static ffi::sqlite3_io_methods {
    &*(*real(file)).pMethods
}

/// The logs open through this VFS, by name (the pointer SQLite passed to xOpen, which is the
/// one `sqlite3_filename_wal` gives for their database's name), so that a database's
/// shared-memory calls find its log. Only the logs of this VFS's connections are here: one,
/// the writer's.
static LOGS: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new());

fn logs() -> MutexGuard<'static, Vec<(usize, usize)>> {
    LOGS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A log's bytes not yet written, and where they belong.
#[derive(Default)]
struct Buffer {
    offset: i64,
    bytes: Vec<u8>,
    /// The last write was a commit frame's header: its page comes next, and then the
    /// transaction's frames are all in.
    commit_page_next: bool,
    /// Where the bytes written to the file while this connection holds the log's write lock
    /// end. A write below it rewrites frames already in the file (SQLite rewriting checksums
    /// at a commit): it is written through.
    written_end: i64,
    /// The transaction's commit frame is written: whatever SQLite writes after it before
    /// releasing the write lock (checksums rewritten, padding) is written through, so that
    /// nothing is left for the barrier.
    committed: bool,
    /// A write-out failed: bytes SQLite was told were written are not in the file. Every
    /// write, sync, truncation and size of the log fails until SQLite releases the write
    /// lock, which it does only once the transaction is rolled back. (With
    /// `locking_mode=EXCLUSIVE` SQLite never releases it: not a mode the service uses.)
    failed: bool,
}

impl Buffer {
    /// SQLite released the log's write lock: the transaction is over, committed or rolled
    /// back, and the next one appends from the log's end as SQLite knows it.
    fn write_lock_released(&mut self) {
        self.written_end = 0;
        self.committed = false;
        self.failed = false;
    }
}

/// A log file's buffer, locked.
///
/// # Safety
/// `file` is an open log of this VFS.
unsafe fn buffer_of(file: *mut ffi::sqlite3_file) -> MutexGuard<'static, Buffer> {
    (*(*file.cast::<File>()).log)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// Writes out the log's buffered bytes (nothing when empty). The bytes are gone either way;
/// a failure makes the buffer `failed`.
///
/// # Safety
/// `file` is an open log of this VFS and `buffer` its buffer.
unsafe fn flush(file: *mut ffi::sqlite3_file, buffer: &mut Buffer) -> c_int {
    if buffer.bytes.is_empty() {
        return ffi::SQLITE_OK;
    }
    buffer.commit_page_next = false;
    let mut rc = ffi::SQLITE_OK;
    let mut offset = buffer.offset;
    for chunk in buffer.bytes.chunks(MAX_WRITE) {
        rc = write_through(file, chunk, offset);
        if rc != ffi::SQLITE_OK {
            buffer.failed = true;
            break;
        }
        offset += chunk.len() as i64;
        buffer.written_end = buffer.written_end.max(offset);
    }
    buffer.bytes.clear();
    rc
}

/// One write to the real log.
///
/// # Safety
/// `file` is an open log of this VFS; `data` is at most MAX_WRITE long.
unsafe fn write_through(file: *mut ffi::sqlite3_file, data: &[u8], offset: i64) -> c_int {
    #[cfg(test)]
    {
        let ours = file.cast::<File>();
        (*ours).real_writes += 1;
        if let Some(rc) = (*ours).failing {
            return rc;
        }
    }
    forward!(
        file,
        xWrite(data.as_ptr().cast(), data.len() as c_int, offset),
        ffi::SQLITE_IOERR_WRITE
    )
}

/// A write-out done by another operation than SQLite's own write (a read, a sync, ...),
/// reported as an I/O error: SQLite rolls the whole transaction back on that, whereas a
/// "disk full" from a read or at the end of a statement can roll back only the statement,
/// and the transaction would go on over frames that are not in the file.
///
/// # Safety
/// As for [`flush`].
unsafe fn late_flush(file: *mut ffi::sqlite3_file, buffer: &mut Buffer) -> c_int {
    match flush(file, buffer) {
        ffi::SQLITE_OK => ffi::SQLITE_OK,
        _ => ffi::SQLITE_IOERR_WRITE,
    }
}

/// Takes a write of `data` at `offset` of the log `file` into its buffer.
///
/// # Safety
/// As for [`flush`].
unsafe fn buffered_write(
    file: *mut ffi::sqlite3_file,
    buffer: &mut Buffer,
    data: &[u8],
    offset: i64,
) -> c_int {
    if buffer.failed {
        return ffi::SQLITE_IOERR_WRITE;
    }
    let end = buffer.offset + buffer.bytes.len() as i64;
    let in_buffer = !buffer.bytes.is_empty() && (buffer.offset..=end).contains(&offset);
    if buffer.committed || (!in_buffer && offset + data.len() as i64 <= buffer.written_end) {
        // Frames already in the file rewritten (a commit's checksums, the last of them its
        // commit frame's header), or anything after the commit frame: written now, in
        // order, so that a failure is reported here.
        let rc = late_flush(file, buffer);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        let rc = write_through(file, data, offset);
        if rc != ffi::SQLITE_OK {
            buffer.failed = true;
        }
        return rc;
    }
    if !in_buffer {
        let rc = flush(file, buffer);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        buffer.offset = offset;
        if buffer.bytes.capacity() < CAPACITY {
            buffer.bytes.reserve_exact(CAPACITY);
        }
    }
    // What the write covers of the buffer is overwritten, the rest appended: the same bytes
    // as writing the two in order.
    let at = (offset - buffer.offset) as usize;
    let overlap = data.len().min(buffer.bytes.len() - at);
    buffer.bytes[at..at + overlap].copy_from_slice(&data[..overlap]);
    buffer.bytes.extend_from_slice(&data[overlap..]);

    let commit_frame_complete = buffer.commit_page_next && data.len() != FRAME_HEADER;
    buffer.commit_page_next = data.len() == FRAME_HEADER && data[4..8] != [0; 4];
    // A commit frame's header stays with its page, so that the page completes the commit
    // (below) whatever the buffer's length.
    let full = buffer.bytes.len() >= MAX_BUFFERED && !buffer.commit_page_next;
    if commit_frame_complete || full {
        // The transaction's frames are all here: written now, so that a failure is reported
        // by this write, before SQLite syncs or publishes the commit.
        buffer.committed = commit_frame_complete;
        return flush(file, buffer);
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let Some(Parent(parent)) = PARENT.get() else {
        return ffi::SQLITE_ERROR;
    };
    let Some(parent_open) = (**parent).xOpen else {
        return ffi::SQLITE_ERROR;
    };
    let ours = file.cast::<File>();
    let real = real(file);
    (*real).pMethods = ptr::null();
    let rc = parent_open(*parent, name, real, flags, out_flags);
    // SQLite calls xClose whenever pMethods is set, even after a failed open: ours is set
    // exactly when the real file's is, so its close is always passed on (and frees what is
    // allocated here).
    if (*real).pMethods.is_null() {
        (*ours).base.pMethods = ptr::null();
        return rc;
    }
    let is_log = flags & ffi::SQLITE_OPEN_WAL != 0 && !name.is_null();
    let is_database = flags & ffi::SQLITE_OPEN_MAIN_DB != 0 && !name.is_null();
    ptr::write(
        ours,
        File {
            base: ffi::sqlite3_file {
                pMethods: match (*(*real).pMethods).iVersion {
                    1 => &METHODS_V1,
                    2 => &METHODS_V2,
                    _ => &METHODS_V3,
                },
            },
            log: if is_log {
                Box::into_raw(Box::new(Mutex::new(Buffer::default())))
            } else {
                ptr::null_mut()
            },
            // SAFETY: the name of a main database, as SQLite passed it to xOpen.
            log_name: if is_database {
                ffi::sqlite3_filename_wal(name)
            } else {
                ptr::null()
            },
            #[cfg(test)]
            real_writes: 0,
            #[cfg(test)]
            failing: None,
            #[cfg(test)]
            barrier_writes: 0,
        },
    );
    if is_log {
        logs().push((name as usize, file as usize));
    }
    rc
}

const fn methods(version: c_int) -> ffi::sqlite3_io_methods {
    ffi::sqlite3_io_methods {
        iVersion: version,
        xClose: Some(close),
        xRead: Some(read),
        xWrite: Some(write),
        xTruncate: Some(truncate),
        xSync: Some(sync),
        xFileSize: Some(file_size),
        xLock: Some(lock),
        xUnlock: Some(unlock),
        xCheckReservedLock: Some(check_reserved_lock),
        xFileControl: Some(file_control),
        xSectorSize: Some(sector_size),
        xDeviceCharacteristics: Some(device_characteristics),
        xShmMap: if version >= 2 { Some(shm_map) } else { None },
        xShmLock: if version >= 2 { Some(shm_lock) } else { None },
        xShmBarrier: if version >= 2 {
            Some(shm_barrier)
        } else {
            None
        },
        xShmUnmap: if version >= 2 { Some(shm_unmap) } else { None },
        xFetch: if version >= 3 { Some(fetch) } else { None },
        xUnfetch: if version >= 3 { Some(unfetch) } else { None },
    }
}

static METHODS_V1: ffi::sqlite3_io_methods = methods(1);
static METHODS_V2: ffi::sqlite3_io_methods = methods(2);
static METHODS_V3: ffi::sqlite3_io_methods = methods(3);

/// Writes out a log's buffered bytes before an operation that could see the file (nothing
/// to do for other files). After a failed write-out, an operation that could build on the
/// missing bytes (`reads` false: a sync, a truncation, its size) fails too; reads go on, as
/// rolling the transaction back may read committed frames.
///
/// # Safety
/// `file` is an open file of this VFS.
unsafe fn flush_before(file: *mut ffi::sqlite3_file, reads: bool) -> c_int {
    if (*file.cast::<File>()).log.is_null() {
        return ffi::SQLITE_OK;
    }
    let mut buffer = buffer_of(file);
    let rc = late_flush(file, &mut buffer);
    if rc == ffi::SQLITE_OK && buffer.failed && !reads {
        return ffi::SQLITE_IOERR_WRITE;
    }
    rc
}

/// Runs `f` on a database's log and its buffer, if the log is open (else answers `none`).
/// The registry stays locked meanwhile, so the log cannot be closed (and freed).
///
/// # Safety
/// `database` is an open file of this VFS.
unsafe fn with_log_of<T>(
    database: *mut ffi::sqlite3_file,
    none: T,
    f: impl FnOnce(*mut ffi::sqlite3_file, &mut Buffer) -> T,
) -> T {
    let name = (*database.cast::<File>()).log_name;
    if name.is_null() {
        return none;
    }
    let logs = logs();
    match logs.iter().find(|(log_name, _)| *log_name == name as usize) {
        Some(&(_, log)) => {
            let log = log as *mut ffi::sqlite3_file;
            f(log, &mut buffer_of(log))
        }
        None => none,
    }
}

/// Writes out the buffered bytes of a database's log, if it has one open.
///
/// # Safety
/// `database` is an open file of this VFS.
unsafe fn flush_log_of(database: *mut ffi::sqlite3_file) -> c_int {
    with_log_of(database, ffi::SQLITE_OK, |log, buffer| {
        late_flush(log, buffer)
    })
}

fn first_error(first: c_int, second: c_int) -> c_int {
    if first != ffi::SQLITE_OK {
        first
    } else {
        second
    }
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    let ours = file.cast::<File>();
    let mut flushed = ffi::SQLITE_OK;
    if !(*ours).log.is_null() {
        let mut logs = logs();
        logs.retain(|&(_, log)| log != file as usize);
        flushed = flush_before(file, false);
        drop(Box::from_raw((*ours).log));
        (*ours).log = ptr::null_mut();
    }
    first_error(flushed, forward!(file, xClose(), ffi::SQLITE_OK))
}

unsafe extern "C" fn read(
    file: *mut ffi::sqlite3_file,
    data: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    flushed_then_forward!(file, reads: true, xRead(data, amount, offset), ffi::SQLITE_IOERR_READ)
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    if (*file.cast::<File>()).log.is_null() || amount <= 0 {
        return forward!(file, xWrite(data, amount, offset), ffi::SQLITE_IOERR_WRITE);
    }
    let data = std::slice::from_raw_parts(data.cast::<u8>(), amount as usize);
    buffered_write(file, &mut buffer_of(file), data, offset)
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    flushed_then_forward!(file, reads: false, xTruncate(size), ffi::SQLITE_IOERR_TRUNCATE)
}

unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    flushed_then_forward!(file, reads: false, xSync(flags), ffi::SQLITE_IOERR_FSYNC)
}

unsafe extern "C" fn file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    flushed_then_forward!(file, reads: false, xFileSize(size), ffi::SQLITE_IOERR_FSTAT)
}

unsafe extern "C" fn lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    forward!(file, xLock(level), ffi::SQLITE_IOERR_LOCK)
}

unsafe extern "C" fn unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    forward!(file, xUnlock(level), ffi::SQLITE_IOERR_UNLOCK)
}

unsafe extern "C" fn check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    forward!(
        file,
        xCheckReservedLock(out),
        ffi::SQLITE_IOERR_CHECKRESERVEDLOCK
    )
}

unsafe extern "C" fn file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    flushed_then_forward!(file, reads: false, xFileControl(op, arg), ffi::SQLITE_NOTFOUND)
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    forward!(file, xSectorSize(), 4096)
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    forward!(file, xDeviceCharacteristics(), 0)
}

unsafe extern "C" fn shm_map(
    file: *mut ffi::sqlite3_file,
    page: c_int,
    page_size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    forward!(
        file,
        xShmMap(page, page_size, extend, out),
        ffi::SQLITE_IOERR_SHMMAP
    )
}

/// The locks on the shared memory order this connection's log writes with other
/// connections': nothing stays buffered across them. Above all, frames of a transaction
/// that was rolled back could stay buffered until the next write; written after the write
/// lock went to another process, they would overwrite that process's frames at the same
/// offsets. A lock is not taken when the write-out fails (SQLite then knows it is not
/// held); an unlock always goes through (SQLite ignores its result).
unsafe extern "C" fn shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    let flushed = flush_log_of(file);
    let unlock = flags & ffi::SQLITE_SHM_UNLOCK != 0;
    if flushed != ffi::SQLITE_OK && !unlock {
        return flushed;
    }
    let rc = forward!(file, xShmLock(offset, n, flags), ffi::SQLITE_IOERR_SHMLOCK);
    // Slot 0 is the log's write lock (WAL_WRITE_LOCK in sqlite3.c): released once the
    // transaction that lost bytes is over (rolled back).
    if unlock && flags & ffi::SQLITE_SHM_EXCLUSIVE != 0 && offset == 0 {
        with_log_of(file, (), |_, buffer| buffer.write_lock_released());
    }
    first_error(flushed, rc)
}

/// SQLite raises the barrier between writing the two copies of the log's index header, that
/// is, before other connections can see a new commit: its frames must be in the file by then.
/// A commit's frames are written as soon as its commit frame is complete (its page written
/// after its header, or its header rewritten in place), so this finds nothing to write; it
/// is a backstop, and could not report an error (the method returns nothing).
unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
    with_log_of(file, (), |log, buffer| {
        #[cfg(test)]
        if !buffer.bytes.is_empty() {
            (*log.cast::<File>()).barrier_writes += 1;
        }
        let _ = late_flush(log, buffer);
    });
    if let Some(barrier) = real_methods(file).xShmBarrier {
        barrier(real(file));
    }
}

unsafe extern "C" fn shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    let flushed = flush_log_of(file);
    first_error(flushed, forward!(file, xShmUnmap(delete), ffi::SQLITE_OK))
}

unsafe extern "C" fn fetch(
    file: *mut ffi::sqlite3_file,
    offset: i64,
    amount: c_int,
    out: *mut *mut c_void,
) -> c_int {
    let rc = flush_before(file, true);
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    match real_methods(file).xFetch {
        Some(fetch) => fetch(real(file), offset, amount, out),
        None => {
            *out = ptr::null_mut();
            ffi::SQLITE_OK
        }
    }
}

unsafe extern "C" fn unfetch(
    file: *mut ffi::sqlite3_file,
    offset: i64,
    page: *mut c_void,
) -> c_int {
    forward!(file, xUnfetch(offset, page), ffi::SQLITE_OK)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use rusqlite::{Connection, OpenFlags};

    /// A connection through this VFS (the writer's) and one through the default VFS (a
    /// reader, or the checkpoint thread).
    fn open(dir: &tempfile::TempDir, synchronous: &str) -> (Connection, Connection) {
        register().unwrap();
        let path = dir.path().join("gathered.db");
        let writer =
            Connection::open_with_flags_and_vfs(&path, OpenFlags::default(), NAME).unwrap();
        writer
            .execute_batch(&format!(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous};
                 CREATE TABLE IF NOT EXISTS t (n INTEGER PRIMARY KEY, v BLOB NOT NULL);"
            ))
            .unwrap();
        let other = Connection::open(&path).unwrap();
        (writer, other)
    }

    /// The connection's log, as this VFS opened it.
    fn log_of(conn: &Connection) -> *mut File {
        let mut file: *mut ffi::sqlite3_file = ptr::null_mut();
        // SAFETY: the handle is open; SQLITE_FCNTL_JOURNAL_POINTER stores the log's file
        // object, one this VFS opened, in `file`.
        let rc = unsafe {
            ffi::sqlite3_file_control(
                conn.handle(),
                c"main".as_ptr(),
                ffi::SQLITE_FCNTL_JOURNAL_POINTER,
                (&mut file as *mut *mut ffi::sqlite3_file).cast(),
            )
        };
        assert_eq!(rc, ffi::SQLITE_OK);
        assert!(!file.is_null(), "the log is open");
        file.cast()
    }

    /// Writes made to the connection's log file since it was opened.
    fn real_writes(conn: &Connection) -> usize {
        // SAFETY: the log stays open while the connection is; only this thread uses it.
        unsafe { (*log_of(conn)).real_writes }
    }

    /// Bytes the connection's log holds unwritten.
    fn buffered(conn: &Connection) -> usize {
        // SAFETY: as in `real_writes`.
        unsafe { buffer_of(log_of(conn).cast()).bytes.len() }
    }

    /// Makes every real write of the connection's log fail with `error` (None: succeed).
    fn fail_writes(conn: &Connection, error: Option<c_int>) {
        // SAFETY: as in `real_writes`.
        unsafe { (*log_of(conn)).failing = error }
    }

    fn count(conn: &Connection) -> i64 {
        conn.query_row("SELECT count(*) FROM t", [], |row| row.get(0))
            .unwrap()
    }

    fn digest(conn: &Connection) -> (i64, i64) {
        conn.query_row(
            "SELECT count(*), coalesce(sum(length(v) * n), 0) FROM t",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap()
    }

    #[test]
    fn a_commit_reaches_the_log_in_one_write_and_other_connections_see_it_at_once() {
        for synchronous in ["FULL", "NORMAL"] {
            let dir = tempfile::tempdir().unwrap();
            let (writer, other) = open(&dir, synchronous);
            for round in 1..=5 {
                let before = real_writes(&writer);
                // 30 rows of 4,000 bytes: about 30 pages, 60 writes without the buffer.
                writer
                    .execute_batch(
                        "BEGIN; WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < 30)
                         INSERT INTO t (v) SELECT randomblob(4000) FROM k; COMMIT;",
                    )
                    .unwrap();
                assert_eq!(
                    count(&other),
                    30 * round,
                    "{synchronous}: the commit is visible"
                );
                let writes = real_writes(&writer) - before;
                // One buffer of 32 frames, 131,840 bytes: two calls of at most MAX_WRITE.
                assert_eq!(writes, 2, "{synchronous}: writes for one commit");
                // SAFETY: as in `real_writes`.
                assert_eq!(unsafe { (*log_of(&writer)).barrier_writes }, 0);
            }
        }
    }

    #[test]
    fn spilled_rolled_back_and_checkpointed_frames_read_back_as_written() {
        for synchronous in ["FULL", "NORMAL"] {
            spilled_rolled_back_and_checkpointed(synchronous);
        }
    }

    fn spilled_rolled_back_and_checkpointed(synchronous: &str) {
        let dir = tempfile::tempdir().unwrap();
        let (writer, other) = open(&dir, synchronous);
        // A page cache of 10 pages: a large transaction spills pages to the log before its
        // commit and reads them back from it.
        writer.execute_batch("PRAGMA cache_size = 10").unwrap();
        let insert = |rows: i64, size: i64| {
            format!(
                "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < {rows})
                 INSERT INTO t (v) SELECT randomblob({size}) FROM k;"
            )
        };
        // More than MAX_BUFFERED in one transaction, read back before its commit.
        writer.execute_batch("BEGIN").unwrap();
        writer.execute_batch(&insert(600, 3000)).unwrap();
        assert_eq!(count(&writer), 600);
        writer.execute_batch("COMMIT").unwrap();
        let committed = digest(&writer);
        assert_eq!(digest(&other), committed);

        // A transaction rolled back after spilling, then one committed over its frames.
        writer.execute_batch("BEGIN").unwrap();
        writer
            .execute_batch("UPDATE t SET v = randomblob(100) WHERE n % 3 = 0")
            .unwrap();
        assert_eq!(count(&writer), 600);
        writer.execute_batch(&insert(100, 3000)).unwrap();
        let spilled = buffered(&writer);
        writer.execute_batch("ROLLBACK").unwrap();
        assert!(
            spilled > 0,
            "frames of the transaction were waiting in the buffer"
        );
        assert_eq!(
            buffered(&writer),
            0,
            "nothing stays buffered once the write lock is released"
        );
        // Another connection writes next, over the offsets of the frames rolled back; they
        // must not reach the file after its frames.
        other.execute_batch(&insert(30, 1000)).unwrap();
        assert_eq!(count(&writer), 630);
        writer.execute_batch(&insert(50, 2000)).unwrap();
        let committed = digest(&writer);
        assert_eq!(digest(&other), committed);
        assert_eq!(count(&other), 680);

        // Another connection copies the log into the database and truncates it; the writer
        // starts the log over.
        other
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                row.get::<_, i64>(0)
            })
            .unwrap();
        writer
            .execute_batch("BEGIN; DELETE FROM t WHERE n % 2 = 0; COMMIT;")
            .unwrap();
        writer.execute_batch(&insert(20, 5000)).unwrap();
        let committed = digest(&writer);
        assert_eq!(digest(&other), committed);

        // Every commit's frames were written by SQLite's own writes, none left to the
        // barrier (which could not report a failure).
        // SAFETY: as in `real_writes`.
        assert_eq!(
            unsafe { (*log_of(&writer)).barrier_writes },
            0,
            "{synchronous}"
        );

        // Closed and opened again through the default VFS alone: the same rows, intact.
        drop(writer);
        drop(other);
        let reopened = Connection::open(dir.path().join("gathered.db")).unwrap();
        assert_eq!(digest(&reopened), committed);
        let check: String = reopened
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .unwrap();
        assert_eq!(check, "ok");
    }

    #[test]
    fn a_failed_write_out_fails_its_transaction_and_publishes_nothing() {
        for error in [ffi::SQLITE_FULL, ffi::SQLITE_IOERR_WRITE] {
            let dir = tempfile::tempdir().unwrap();
            let (writer, other) = open(&dir, "NORMAL");
            writer.execute_batch("PRAGMA cache_size = 10").unwrap();
            let insert = |rows: i64| {
                format!(
                    "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < {rows})
                     INSERT INTO t (v) SELECT randomblob(3000) FROM k;"
                )
            };
            writer.execute_batch(&insert(40)).unwrap();
            let committed = digest(&writer);

            // Frames spilled by one statement wait in the buffer; the next statement's read
            // writes them out, which fails: the whole transaction must go, not just the
            // statement ("disk full" alone would roll back only the statement).
            writer.execute_batch("BEGIN").unwrap();
            writer.execute_batch(&insert(100)).unwrap();
            assert!(buffered(&writer) > 0);
            // Clean pages out of the page cache: the next statement reads them from the log.
            writer.execute_batch("PRAGMA shrink_memory").unwrap();
            fail_writes(&writer, Some(error));
            let failed = writer.execute_batch("UPDATE t SET v = randomblob(10) WHERE n % 7 = 0");
            match failed {
                Err(rusqlite::Error::SqliteFailure(e, _)) => {
                    assert_eq!(
                        e.extended_code,
                        ffi::SQLITE_IOERR_WRITE,
                        "reported as I/O error"
                    )
                }
                other => panic!("a statement over frames that were lost fails: {other:?}"),
            }
            // The UPDATE keeps a statement journal: on "disk full" SQLite would have rolled
            // back the statement only and gone on with the transaction.
            assert!(
                writer.is_autocommit(),
                "the whole transaction is rolled back"
            );
            // The disk works again: the transaction must still not commit.
            fail_writes(&writer, None);
            let commit = writer.execute_batch("COMMIT");
            assert!(
                commit.is_err(),
                "a transaction that lost frames does not commit"
            );
            assert!(writer.is_autocommit(), "and is over");
            assert_eq!(digest(&other), committed, "nothing of it is visible");
            assert_eq!(digest(&writer), committed);

            // A commit whose own frames cannot be written fails, and publishes nothing.
            fail_writes(&writer, Some(error));
            assert!(writer.execute_batch(&insert(3)).is_err());
            fail_writes(&writer, None);
            assert_eq!(digest(&other), committed);

            // The connection goes on: the next transaction commits and is seen.
            writer.execute_batch(&insert(5)).unwrap();
            let committed = digest(&writer);
            assert_eq!(digest(&other), committed);
            drop(writer);
            drop(other);
            let reopened = Connection::open(dir.path().join("gathered.db")).unwrap();
            assert_eq!(digest(&reopened), committed);
            let check: String = reopened
                .query_row("PRAGMA integrity_check", [], |row| row.get(0))
                .unwrap();
            assert_eq!(check, "ok");
        }
    }

    /// One step of the differential test below.
    #[derive(Debug, Clone)]
    enum Step {
        Insert {
            rows: u16,
            size: u16,
        },
        Update {
            every: u8,
            size: u16,
        },
        Delete {
            every: u8,
        },
        Begin,
        Commit,
        Rollback,
        Savepoint,
        RollbackToSavepoint,
        Release,
        /// By another connection (SQLite's own VFS), between transactions.
        Checkpoint(&'static str),
        Synchronous(&'static str),
        CacheSize(u16),
        ShrinkMemory,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (1u16..80, 1u16..6000).prop_map(|(rows, size)| Step::Insert { rows, size }),
            2 => (1u8..6, 1u16..6000).prop_map(|(every, size)| Step::Update { every, size }),
            1 => (1u8..6).prop_map(|every| Step::Delete { every }),
            2 => Just(Step::Begin),
            2 => Just(Step::Commit),
            1 => Just(Step::Rollback),
            1 => Just(Step::Savepoint),
            1 => Just(Step::RollbackToSavepoint),
            1 => Just(Step::Release),
            1 => prop_oneof![
                Just(Step::Checkpoint("PASSIVE")),
                Just(Step::Checkpoint("RESTART")),
                Just(Step::Checkpoint("TRUNCATE")),
            ],
            1 => prop_oneof![Just(Step::Synchronous("FULL")), Just(Step::Synchronous("NORMAL"))],
            1 => prop_oneof![Just(Step::CacheSize(5)), Just(Step::CacheSize(2000))],
            1 => Just(Step::ShrinkMemory),
        ]
    }

    /// Every row: its key, length and last digits (rows are zero-padded counters).
    fn rows(conn: &Connection) -> String {
        conn.query_row(
            "SELECT coalesce(group_concat(n || ':' || length(v) || ':' || substr(v, -12), ','), '')
             FROM (SELECT n, v FROM t ORDER BY n)",
            [],
            |row| row.get(0),
        )
        .unwrap()
    }

    /// The SQL of a step that both databases run, or None.
    fn sql(step: &Step, counter: &mut u64) -> Option<String> {
        // Row contents are deterministic (zero-padded counters), so that both databases
        // hold the same bytes.
        let mut next = || {
            *counter += 1;
            *counter
        };
        Some(match step {
            Step::Insert { rows, size } => format!(
                "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < {rows})
                 INSERT INTO t (v) SELECT printf('%0{size}d', {} + i) FROM k;",
                next() * 1000
            ),
            Step::Update { every, size } => format!(
                "UPDATE t SET v = printf('%0{size}d', n + {}) WHERE n % {every} = 0;",
                next()
            ),
            Step::Delete { every } => format!("DELETE FROM t WHERE n % {every} = 1;"),
            Step::Savepoint => "SAVEPOINT s;".into(),
            Step::RollbackToSavepoint => "ROLLBACK TO s;".into(),
            Step::Release => "RELEASE s;".into(),
            Step::Synchronous(mode) => format!("PRAGMA synchronous = {mode};"),
            Step::CacheSize(pages) => format!("PRAGMA cache_size = {pages};"),
            Step::ShrinkMemory => "PRAGMA shrink_memory;".into(),
            Step::Begin | Step::Commit | Step::Rollback | Step::Checkpoint(_) => return None,
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(48),
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Any sequence of writes, transactions, savepoints, rollbacks and checkpoints by
        /// another connection leaves the database written through this VFS with the same
        /// rows as one written through SQLite's own, seen the same from a second connection
        /// at every step between transactions, and intact once reopened.
        #[test]
        fn writes_through_the_buffer_end_as_without_it(steps in proptest::collection::vec(step(), 1..40)) {
            let dir = tempfile::tempdir().unwrap();
            let (gathered, other) = open(&dir, "FULL");
            let plain_path = dir.path().join("plain.db");
            let plain = Connection::open(&plain_path).unwrap();
            plain
                .execute_batch(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
                     CREATE TABLE t (n INTEGER PRIMARY KEY, v BLOB NOT NULL);",
                )
                .unwrap();
            let mut counter = 0;
            for step in &steps {
                let in_transaction = !gathered.is_autocommit();
                match step {
                    Step::Begin if !in_transaction => {
                        gathered.execute_batch("BEGIN").unwrap();
                        plain.execute_batch("BEGIN").unwrap();
                    }
                    Step::Commit | Step::Rollback if in_transaction => {
                        let end = if matches!(step, Step::Commit) { "COMMIT" } else { "ROLLBACK" };
                        gathered.execute_batch(end).unwrap();
                        plain.execute_batch(end).unwrap();
                    }
                    Step::Checkpoint(mode) if !in_transaction => {
                        let checkpoint = format!("PRAGMA wal_checkpoint({mode})");
                        // Busy (the log in use) is an answer, not a failure.
                        other.query_row(&checkpoint, [], |_| Ok(())).unwrap();
                        plain.query_row(&checkpoint, [], |_| Ok(())).unwrap();
                    }
                    Step::Savepoint | Step::RollbackToSavepoint | Step::Release if !in_transaction => {}
                    Step::Synchronous(_) if in_transaction => {}
                    step => {
                        if let Some(sql) = sql(step, &mut counter) {
                            // Both must agree on whether it succeeds (ROLLBACK TO an unknown
                            // savepoint fails on both).
                            let a = gathered.execute_batch(&sql).is_ok();
                            let b = plain.execute_batch(&sql).is_ok();
                            proptest::prop_assert_eq!(a, b, "{}", sql);
                        }
                    }
                }
                proptest::prop_assert_eq!(rows(&gathered), rows(&plain));
                if gathered.is_autocommit() {
                    proptest::prop_assert_eq!(rows(&other), rows(&plain));
                }
            }
            if !gathered.is_autocommit() {
                gathered.execute_batch("COMMIT").unwrap();
                plain.execute_batch("COMMIT").unwrap();
            }
            let expected = rows(&plain);
            proptest::prop_assert_eq!(rows(&other), expected.as_str());
            // SAFETY: as in `real_writes`.
            proptest::prop_assert_eq!(unsafe { (*log_of(&gathered)).barrier_writes }, 0);
            drop(gathered);
            drop(other);
            let reopened = Connection::open(dir.path().join("gathered.db")).unwrap();
            proptest::prop_assert_eq!(rows(&reopened), expected.as_str());
            let check: String = reopened
                .query_row("PRAGMA integrity_check", [], |row| row.get(0))
                .unwrap();
            proptest::prop_assert_eq!(check, "ok");
        }
    }
}
