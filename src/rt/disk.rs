//! The disk seam: a flat directory of named files with explicit durability.
//!
//! Nothing written is promised durable until [`Disk::sync`] (file contents) and
//! [`Disk::sync_dir`] (creations, renames and removals) return. [`FileDisk`] is the real
//! implementation (fsync / directory fsync); [`SimDisk`] is an in-memory disk whose
//! [`SimDisk::power_fail`] drops everything not yet synced and can tear the last unsynced write at a
//! seeded byte — madsim's own fs keeps unsynced data across a kill, so it cannot test durability.
//!
//! The trait is synchronous: storage runs on a node's own task, and a synchronous seam keeps the
//! simulator's schedule independent of the storage implementation.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rand::Rng;

use super::latch::Latch;
use super::rng::NodeRng;

/// What went wrong on the disk, with the operation and file it happened to.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{op} {path}: file not found")]
    NotFound { op: &'static str, path: String },
    #[error("{op} {path}: no space left on device")]
    NoSpace { op: &'static str, path: String },
    /// The process or system is out of file descriptors (EMFILE/ENFILE). Only opening a file
    /// fails this way, so nothing was written; the operation may succeed once descriptors free.
    #[error("{op} {path}: too many open files (the file was not opened; nothing was written)")]
    TooManyOpenFiles { op: &'static str, path: String },
    #[error("{op} {path}: invalid file name (flat names only, no '/', '..' or NUL)")]
    InvalidName { op: &'static str, path: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
}

impl DiskError {
    /// True if the file did not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, DiskError::NotFound { .. })
    }

    /// True if the process ran out of file descriptors (nothing was written).
    pub fn is_fd_exhaustion(&self) -> bool {
        matches!(self, DiskError::TooManyOpenFiles { .. })
    }
}

/// True for EMFILE / ENFILE.
fn is_fd_exhaustion(e: &io::Error) -> bool {
    #[cfg(unix)]
    {
        matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
    }
    #[cfg(not(unix))]
    {
        let _ = e;
        false
    }
}

/// A directory of files with explicit durability points. All paths are flat file names.
pub trait Disk: Send + Sync + fmt::Debug {
    /// Reads a whole file.
    fn read(&self, name: &str) -> Result<Vec<u8>, DiskError>;
    /// Size of a file, or `None` if it does not exist.
    fn size(&self, name: &str) -> Result<Option<u64>, DiskError>;
    /// Reads up to `len` bytes of a file from byte `offset` (fewer at its end). The default reads
    /// the whole file; implementations read just the range.
    fn read_range(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>, DiskError> {
        let data = self.read(name)?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(data.len());
        let end = start.saturating_add(len).min(data.len());
        Ok(data[start..end].to_vec())
    }
    /// Appends to a file, creating it if needed. Not durable until `sync` (and `sync_dir` for a new file).
    fn append(&self, name: &str, data: &[u8]) -> Result<(), DiskError>;
    /// Replaces a file's contents, creating it if needed. Not durable until `sync` (+ `sync_dir`).
    fn write(&self, name: &str, data: &[u8]) -> Result<(), DiskError>;
    /// Truncates a file to `len` bytes (no-op if shorter). Not durable until `sync`.
    fn truncate(&self, name: &str, len: u64) -> Result<(), DiskError>;
    /// Makes a file's contents durable (fsync).
    fn sync(&self, name: &str) -> Result<(), DiskError>;
    /// Atomically renames `from` to `to`, replacing `to`. Durable after `sync_dir`.
    fn rename(&self, from: &str, to: &str) -> Result<(), DiskError>;
    /// Removes a file (no error if absent). Durable after `sync_dir`.
    fn remove(&self, name: &str) -> Result<(), DiskError>;
    /// Names of the files starting with `prefix`, sorted.
    fn list(&self, prefix: &str) -> Result<Vec<String>, DiskError>;
    /// Makes creations, renames and removals durable (fsync of the directory).
    fn sync_dir(&self) -> Result<(), DiskError>;

    /// Gives back any descriptor kept open for `name` (a file that will not be appended to for a
    /// while, such as a sealed segment); the next operation on it opens it again. Nothing else
    /// changes. The default keeps nothing open, so has nothing to give back.
    fn close(&self, _name: &str) {}

    /// The simulated time the operations since the last call cost, which the caller awaits (a
    /// simulated disk's operations otherwise take no time). Zero for a real disk: its operations
    /// took their time when they ran.
    fn take_latency(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// Writes a whole file atomically and durably: write a temporary, fsync it, rename it over
    /// `name`, fsync the directory. After a crash the file holds either the old or the new bytes.
    fn write_atomic(&self, name: &str, data: &[u8]) -> Result<(), DiskError> {
        let tmp = format!("{name}.tmp");
        self.write(&tmp, data)?;
        self.sync(&tmp)?;
        self.rename(&tmp, name)?;
        self.sync_dir()
    }
}

fn check_name(op: &'static str, name: &str) -> Result<(), DiskError> {
    if name.is_empty()
        || name.contains('/')
        || name.contains('\\')
        || name.contains('\0')
        || name == "."
        || name == ".."
    {
        return Err(DiskError::InvalidName { op, path: name.to_string() });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Real files
// ---------------------------------------------------------------------------------------------

/// Files in one real directory, fsynced where durability is promised.
#[derive(Debug)]
pub struct FileDisk {
    root: PathBuf,
    /// Open append handles, so appends do not reopen the file each time.
    handles: Mutex<BTreeMap<String, std::fs::File>>,
    /// Held for the life of this value when opened with [`FileDisk::open_exclusive`].
    _lock: Option<std::fs::File>,
    /// One descriptor kept in reserve: when an open fails because the process is out of
    /// descriptors (clients can take them all), the reserve is closed and the open retried, so a
    /// WAL segment roll still succeeds; it is re-armed on a later call once a descriptor is free.
    reserve: Mutex<Option<std::fs::File>>,
    /// The directory, held open so `sync_dir` needs no new descriptor.
    dir: std::fs::File,
}

/// Open options for files only their owner may read or write (mode 0600 when created): the log
/// holds every event and the cluster's state.
fn owner_only() -> std::fs::OpenOptions {
    let mut o = std::fs::OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o
}

/// Creates `root` and its missing parents, owner-only (0700) where it creates them.
fn owner_only_dir(root: &Path) -> io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(root)
}

impl FileDisk {
    /// Opens (creating if needed, owner-only) the directory `root`.
    pub fn open(root: impl AsRef<Path>) -> Result<Self, DiskError> {
        let root = root.as_ref().to_path_buf();
        owner_only_dir(&root).map_err(|source| DiskError::Io {
            op: "create_dir",
            path: root.display().to_string(),
            source,
        })?;
        let dir = std::fs::File::open(&root).map_err(|source| DiskError::Io {
            op: "open_dir",
            path: root.display().to_string(),
            source,
        })?;
        let reserve = Mutex::new(std::fs::File::open(&root).ok());
        Ok(FileDisk { root, handles: Mutex::new(BTreeMap::new()), _lock: None, reserve, dir })
    }

    /// Opens `root` like [`FileDisk::open`] and takes an exclusive lock on its `LOCK` file, so a
    /// second process cannot open the same directory (two writers would corrupt the log). The
    /// lock goes with the process, even when it is killed.
    pub fn open_exclusive(root: impl AsRef<Path>) -> Result<Self, DiskError> {
        let mut disk = Self::open(root)?;
        let path = disk.root.join("LOCK");
        let io = |source| DiskError::Io { op: "lock", path: path.display().to_string(), source };
        let file = owner_only().create(true).truncate(false).write(true).open(&path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(io(io::Error::other(
                    "the directory is in use by another esc process (its LOCK file is held)",
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        disk._lock = Some(file);
        Ok(disk)
    }

    /// The directory this disk lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn io(&self, op: &'static str, name: &str, source: io::Error) -> DiskError {
        let path = self.path(name).display().to_string();
        if is_fd_exhaustion(&source) {
            return DiskError::TooManyOpenFiles { op, path };
        }
        match source.kind() {
            io::ErrorKind::NotFound => DiskError::NotFound { op, path },
            io::ErrorKind::StorageFull => DiskError::NoSpace { op, path },
            _ => DiskError::Io { op, path, source },
        }
    }

    fn handles(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, std::fs::File>> {
        self.handles.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `open` (anything that opens a descriptor); if it fails for want of descriptors, gives
    /// up the reserve and tries once more. Re-arms the reserve first if it was used.
    fn opening<T>(&self, open: impl Fn() -> io::Result<T>) -> io::Result<T> {
        let mut reserve = self.reserve.lock().unwrap_or_else(|e| e.into_inner());
        if reserve.is_none() {
            *reserve = std::fs::File::open(&self.root).ok();
        }
        match open() {
            Err(e) if is_fd_exhaustion(&e) && reserve.is_some() => {
                tracing::warn!(dir = %self.root.display(), "out of file descriptors; using the reserved one");
                *reserve = None;
                open()
            }
            r => r,
        }
    }

    /// True while the reserve descriptor is held (tests).
    pub fn has_reserve(&self) -> bool {
        self.reserve.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    fn forget(&self, name: &str) {
        self.handles().remove(name);
    }
}

impl Disk for FileDisk {
    fn read(&self, name: &str) -> Result<Vec<u8>, DiskError> {
        check_name("read", name)?;
        let path = self.path(name);
        self.opening(|| std::fs::read(&path)).map_err(|e| self.io("read", name, e))
    }

    #[cfg(unix)]
    fn read_range(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>, DiskError> {
        use std::os::unix::fs::FileExt;
        check_name("read", name)?;
        let path = self.path(name);
        let f = self.opening(|| std::fs::File::open(&path)).map_err(|e| self.io("read", name, e))?;
        let mut buf = vec![0u8; len];
        let mut got = 0;
        while got < len {
            match f.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io("read", name, e)),
            }
        }
        buf.truncate(got);
        Ok(buf)
    }

    fn size(&self, name: &str) -> Result<Option<u64>, DiskError> {
        check_name("size", name)?;
        match std::fs::metadata(self.path(name)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io("size", name, e)),
        }
    }

    fn append(&self, name: &str, data: &[u8]) -> Result<(), DiskError> {
        check_name("append", name)?;
        let mut handles = self.handles();
        if !handles.contains_key(name) {
            let path = self.path(name);
            let f = self
                .opening(|| owner_only().create(true).append(true).open(&path))
                .map_err(|e| self.io("append", name, e))?;
            handles.insert(name.to_string(), f);
        }
        let f = handles.get_mut(name).expect("handle inserted above");
        f.write_all(data).map_err(|e| self.io("append", name, e))
    }

    fn write(&self, name: &str, data: &[u8]) -> Result<(), DiskError> {
        check_name("write", name)?;
        self.forget(name);
        let path = self.path(name);
        let mut f = self
            .opening(|| owner_only().create(true).truncate(true).write(true).open(&path))
            .map_err(|e| self.io("write", name, e))?;
        f.write_all(data).map_err(|e| self.io("write", name, e))
    }

    fn truncate(&self, name: &str, len: u64) -> Result<(), DiskError> {
        check_name("truncate", name)?;
        self.forget(name);
        let path = self.path(name);
        let f = self
            .opening(|| std::fs::OpenOptions::new().write(true).open(&path))
            .map_err(|e| self.io("truncate", name, e))?;
        let cur = f.metadata().map_err(|e| self.io("truncate", name, e))?.len();
        if len < cur {
            f.set_len(len).map_err(|e| self.io("truncate", name, e))?;
        }
        Ok(())
    }

    fn sync(&self, name: &str) -> Result<(), DiskError> {
        check_name("sync", name)?;
        let handles = self.handles();
        if let Some(f) = handles.get(name) {
            return f.sync_data().map_err(|e| self.io("fsync", name, e));
        }
        drop(handles);
        let path = self.path(name);
        let f = self.opening(|| std::fs::File::open(&path)).map_err(|e| self.io("fsync", name, e))?;
        f.sync_all().map_err(|e| self.io("fsync", name, e))
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), DiskError> {
        check_name("rename", from)?;
        check_name("rename", to)?;
        self.forget(from);
        self.forget(to);
        std::fs::rename(self.path(from), self.path(to)).map_err(|e| self.io("rename", from, e))
    }

    fn remove(&self, name: &str) -> Result<(), DiskError> {
        check_name("remove", name)?;
        self.forget(name);
        match std::fs::remove_file(self.path(name)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io("remove", name, e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, DiskError> {
        let rd = std::fs::read_dir(&self.root).map_err(|e| self.io("list", "", e))?;
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| self.io("list", "", e))?;
            if let Some(name) = entry.file_name().to_str()
                && name.starts_with(prefix)
                && entry.file_type().map(|t| t.is_file()).unwrap_or(false)
            {
                out.push(name.to_string());
            }
        }
        out.sort();
        Ok(out)
    }

    fn sync_dir(&self) -> Result<(), DiskError> {
        self.dir.sync_all().map_err(|e| self.io("fsync_dir", "", e))
    }

    fn close(&self, name: &str) {
        self.forget(name);
    }
}

// ---------------------------------------------------------------------------------------------
// Simulated disk
// ---------------------------------------------------------------------------------------------

/// A fault the simulator can inject into a [`SimDisk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFault {
    /// The next `n` appends/writes fail with an I/O error and change nothing.
    FailWrites(u32),
    /// The next `n` syncs (file or directory) fail with an I/O error and make nothing durable.
    /// A failed file fsync also drops that file's unsynced writes for good, as Linux does (see
    /// [`SimDisk`]): reads still see them, no later fsync makes them durable, and a power failure
    /// loses them.
    FailSyncs(u32),
    /// The disk holds at most this many bytes in total; writes beyond fail with `NoSpace`.
    Capacity(u64),
    /// The next `n` operations that open a new descriptor on a real disk — an append that creates
    /// its file, and every `write` (so every `write_atomic`) — fail with
    /// [`DiskError::TooManyOpenFiles`] and change nothing, as when the process is out of descriptors.
    TooManyOpenFiles(u32),
}

type FileId = u64;

/// How long a [`SimDisk`]'s operations take in simulated time ([`SimDisk::set_latency`]): a base
/// per write and per fsync, and now and then a spike (a busy device, a cloud volume's hiccup).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DiskLatency {
    /// Each append, write or truncate, in microseconds.
    pub write_us: u64,
    /// Each fsync of a file or the directory, in microseconds.
    pub fsync_us: u64,
    /// This many operations per thousand take `spike_us` longer.
    pub spike_per_mille: u32,
    pub spike_us: u64,
}

#[derive(Debug, Default, Clone)]
struct SimFile {
    /// What survives a power failure.
    durable: Vec<u8>,
    /// What reads see now.
    current: Vec<u8>,
    /// `durable` is a prefix of `current` (only appends since the last sync), so a sync copies
    /// just the new tail instead of the whole file.
    appended_only: bool,
    /// Byte ranges of `current` whose write a failed fsync dropped (Linux marks the pages clean):
    /// reads see them, but no later fsync writes them, so they hold what the disk held before
    /// (zeros past its old end) until a power failure shows it. A rewrite of the bytes ends it.
    lost: Vec<std::ops::Range<usize>>,
}

impl SimFile {
    /// A failed fsync: every byte not yet durable is dropped from what a later fsync writes.
    fn drop_unsynced(&mut self) -> u64 {
        let from = if self.appended_only { self.durable.len() } else { 0 };
        let range = from..self.current.len();
        let n = range.len() as u64;
        if n > 0 {
            self.lost.push(range);
        }
        n
    }

    /// A successful fsync: `current` becomes durable, except the bytes a failed fsync dropped.
    fn sync(&mut self) {
        if self.lost.is_empty() && self.appended_only && self.durable.len() <= self.current.len() {
            let from = self.durable.len();
            self.durable.extend_from_slice(&self.current[from..]);
        } else {
            let mut next = self.current.clone();
            for r in &self.lost {
                for i in r.start..r.end.min(next.len()) {
                    next[i] = self.durable.get(i).copied().unwrap_or(0);
                }
            }
            self.durable = next;
        }
        self.appended_only = self.lost.is_empty();
    }
}

/// The most recent write that is not yet durable, remembered so a power failure can tear it.
#[derive(Debug, Clone)]
struct LastWrite {
    file: FileId,
    offset: usize,
    data: Vec<u8>,
}

#[derive(Debug, Default)]
struct SimState {
    files: BTreeMap<FileId, SimFile>,
    /// Names as reads see them now.
    names: BTreeMap<String, FileId>,
    /// Names that survive a power failure.
    durable_names: BTreeMap<String, FileId>,
    next_id: FileId,
    last_write: Option<LastWrite>,
    fail_writes: u32,
    fail_syncs: u32,
    fail_opens: u32,
    capacity: Option<u64>,
    stats: SimDiskStats,
    /// A power failure armed to strike at the operation after this many more (see
    /// [`SimDisk::arm_crash`]), and the latch it sets when it strikes.
    crash_in: Option<(u64, Arc<Latch>)>,
    /// Power was lost inside an operation: every later operation fails until `power_fail`.
    crashed: bool,
    /// Files whose last power failure left a torn write in them (a shortening truncate repairs it).
    torn_files: std::collections::BTreeSet<FileId>,
    /// Bytes [`SimDisk::rot`] flipped (file, offset), until a write replaces or a truncate cuts them.
    rotted: std::collections::BTreeSet<(FileId, usize)>,
    /// What operations cost, and the stream spikes are drawn from.
    latency: Option<(DiskLatency, NodeRng)>,
    /// Simulated time operations cost that no one has waited out yet ([`Disk::take_latency`]).
    owed_us: u64,
}

/// Counters of what a [`SimDisk`] has seen (for tests and the simulator's timeline).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SimDiskStats {
    pub writes: u64,
    pub syncs: u64,
    pub power_failures: u64,
    pub torn_writes: u64,
    pub injected_failures: u64,
    /// Power failures that struck inside a disk operation (between two writes or mid-write).
    pub crashes_in_ops: u64,
    /// Torn tails cut off again by a truncate after the power failure (recovery repaired them).
    pub repaired_tails: u64,
    /// Bits flipped in synced data at rest ([`SimDisk::rot`]).
    pub rot_injected: u64,
    /// Starts refused because recovery found corrupt data (counted by the simulator that starts
    /// the node: [`SimDisk::count_rot_detected`]).
    pub rot_detected: u64,
    /// Members wiped (and re-added) because their data rotted ([`SimDisk::count_wiped_for_rot`]).
    pub wiped_for_rot: u64,
    /// Truncates that cut rotted bytes off (recovery took the rot for a torn tail: not detected).
    pub rot_cut_off: u64,
    /// Of `rot_injected`, the bits flipped in topic segments, and of those the starts refused
    /// (counted by the simulator: [`SimDisk::count_topic_rot`]).
    pub rot_in_topic_segments: u64,
    pub topic_rot_detected: u64,
    /// Of `rot_injected`, the bits flipped in the newest WAL segment, and of those the starts
    /// refused (counted by the simulator: [`SimDisk::count_newest_wal_rot`]).
    pub rot_in_newest_wal_segment: u64,
    pub newest_wal_rot_detected: u64,
    /// Of `rot_in_topic_segments`, those the member's background scrub found before its reboot,
    /// without a read (counted by the simulator: [`SimDisk::count_topic_rot_scrubbed`]).
    pub topic_rot_found_by_scrub: u64,
    /// Simulated time the operations cost ([`SimDisk::set_latency`]), in microseconds.
    pub busy_us: u64,
    /// Operations that took a latency spike.
    pub latency_spikes: u64,
    /// Bytes appended (bytes per fsync shows how much each fsync covered: group commit).
    pub appended_bytes: u64,
    /// Unsynced bytes a failed fsync dropped for good (Linux's behaviour: [`DiskFault::FailSyncs`]).
    pub dropped_on_fsync_error: u64,
}

impl SimDiskStats {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &SimDiskStats) {
        self.writes += other.writes;
        self.syncs += other.syncs;
        self.power_failures += other.power_failures;
        self.torn_writes += other.torn_writes;
        self.injected_failures += other.injected_failures;
        self.crashes_in_ops += other.crashes_in_ops;
        self.repaired_tails += other.repaired_tails;
        self.rot_injected += other.rot_injected;
        self.rot_detected += other.rot_detected;
        self.wiped_for_rot += other.wiped_for_rot;
        self.rot_cut_off += other.rot_cut_off;
        self.rot_in_topic_segments += other.rot_in_topic_segments;
        self.topic_rot_detected += other.topic_rot_detected;
        self.rot_in_newest_wal_segment += other.rot_in_newest_wal_segment;
        self.newest_wal_rot_detected += other.newest_wal_rot_detected;
        self.topic_rot_found_by_scrub += other.topic_rot_found_by_scrub;
        self.busy_us += other.busy_us;
        self.latency_spikes += other.latency_spikes;
        self.appended_bytes += other.appended_bytes;
        self.dropped_on_fsync_error += other.dropped_on_fsync_error;
    }
}

/// An in-memory disk with explicit durability. Clones share one disk, so the simulator keeps a
/// clone across a node's crash and restart.
#[derive(Debug, Clone, Default)]
pub struct SimDisk {
    state: Arc<Mutex<SimState>>,
}

impl SimDisk {
    /// An empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Loses power: every write not yet synced is dropped, and names not yet made durable by
    /// `sync_dir` revert. If `tear` is given, the most recent unsynced write survives partially:
    /// its first `k` bytes land, `k` drawn from the RNG (a torn write).
    pub fn power_fail(&self, tear: Option<&mut NodeRng>) {
        let mut st = self.lock();
        st.stats.power_failures += 1;
        st.names = st.durable_names.clone();
        for f in st.files.values_mut() {
            f.current = f.durable.clone();
            f.appended_only = true;
            f.lost.clear();
        }
        if let (Some(rng), Some(lw)) = (tear, st.last_write.take())
            && !lw.data.is_empty()
            && st.durable_names.values().any(|id| *id == lw.file)
        {
            let k = rng.random_range(0..lw.data.len());
            if k > 0 {
                let f = st.files.get_mut(&lw.file).expect("durable name refers to a file");
                let end = lw.offset + k;
                if f.current.len() < end {
                    f.current.resize(end, 0);
                }
                f.current[lw.offset..end].copy_from_slice(&lw.data[..k]);
                f.durable = f.current.clone();
                st.stats.torn_writes += 1;
                st.torn_files.insert(lw.file);
            }
        }
        st.last_write = None;
        st.fail_writes = 0;
        st.fail_syncs = 0;
        st.fail_opens = 0;
        st.crash_in = None;
        st.crashed = false;
        gc(&mut st);
    }

    /// Arms a power failure inside a later operation: the `after_ops`-th mutating operation from
    /// now (append, write, truncate, sync, rename, remove, sync_dir; 0 = the next one) fails, and
    /// so does every one after it, as if the machine lost power in the middle of it; the returned
    /// latch is set at that moment. An interrupted append or write becomes the write that
    /// [`SimDisk::power_fail`] tears (a prefix of it may land). The simulator then kills the
    /// member and calls `power_fail`, which also disarms. Reads keep working meanwhile.
    pub fn arm_crash(&self, after_ops: u64) -> Arc<Latch> {
        let latch = Arc::new(Latch::new());
        self.lock().crash_in = Some((after_ops, latch.clone()));
        latch
    }

    /// Disarms a crash that has not struck; true if it had struck already.
    pub fn disarm_crash(&self) -> bool {
        let mut st = self.lock();
        st.crash_in = None;
        st.crashed
    }

    /// True once an armed crash struck (until the next `power_fail`).
    pub fn crashed(&self) -> bool {
        self.lock().crashed
    }

    /// Injects a fault (see [`DiskFault`]).
    pub fn inject(&self, fault: DiskFault) {
        let mut st = self.lock();
        match fault {
            DiskFault::FailWrites(n) => st.fail_writes = n,
            DiskFault::FailSyncs(n) => st.fail_syncs = n,
            DiskFault::Capacity(c) => st.capacity = Some(c),
            DiskFault::TooManyOpenFiles(n) => st.fail_opens = n,
        }
    }

    /// Removes every injected fault.
    pub fn clear_faults(&self) {
        let mut st = self.lock();
        st.fail_writes = 0;
        st.fail_syncs = 0;
        st.fail_opens = 0;
        st.capacity = None;
    }

    /// Counters so far.
    pub fn stats(&self) -> SimDiskStats {
        self.lock().stats
    }

    /// Bytes currently stored (what reads see).
    pub fn used_bytes(&self) -> u64 {
        let st = self.lock();
        st.names.values().map(|id| st.files[id].current.len() as u64).sum()
    }

    /// A separate disk holding what this one would after a power failure that tears nothing
    /// (what is synced), for looking at without touching this one.
    pub fn durable_copy(&self) -> SimDisk {
        let st = self.lock();
        let files = st
            .files
            .iter()
            .map(|(id, f)| {
                (
                    *id,
                    SimFile {
                        durable: f.durable.clone(),
                        current: f.durable.clone(),
                        appended_only: true,
                        lost: Vec::new(),
                    },
                )
            })
            .collect();
        let copy = SimState {
            files,
            names: st.durable_names.clone(),
            durable_names: st.durable_names.clone(),
            next_id: st.next_id,
            ..SimState::default()
        };
        SimDisk { state: Arc::new(Mutex::new(copy)) }
    }

    /// Flips one byte of a file, durably (for corruption tests).
    pub fn corrupt(&self, name: &str, offset: usize) -> Result<(), DiskError> {
        let mut st = self.lock();
        let id =
            *st.names.get(name).ok_or_else(|| DiskError::NotFound { op: "corrupt", path: name.into() })?;
        let f = st.files.get_mut(&id).expect("named file exists");
        if let Some(b) = f.current.get_mut(offset) {
            *b ^= 0xFF;
        }
        if let Some(b) = f.durable.get_mut(offset) {
            *b ^= 0xFF;
        }
        Ok(())
    }
}

/// Where [`SimDisk::rot`] flipped a bit: the file (its synced name), the byte and the bit mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rot {
    pub file: String,
    pub offset: usize,
    pub mask: u8,
}

impl SimDisk {
    /// Bit rot at rest: flips one bit of one byte of a synced file whose synced name starts with
    /// one of `prefixes` (file and byte drawn from `rng`), in what survives a power failure; reads
    /// see it too where they still read those same bytes (the file was only appended to since its
    /// last sync). Each `(name, from)` of `spare` leaves that file's bytes at and after `from`
    /// alone (all of it when `from` is 0). `None` if no such file holds synced bytes to rot.
    pub fn rot(&self, prefixes: &[&str], spare: &[(String, u64)], rng: &mut NodeRng) -> Option<Rot> {
        let mut st = self.lock();
        let rottable = |name: &str, len: usize| {
            let from = spare.iter().find(|(n, _)| n == name).map_or(len as u64, |(_, from)| *from);
            len.min(usize::try_from(from).unwrap_or(usize::MAX))
        };
        let files: Vec<(String, FileId, usize)> = st
            .durable_names
            .iter()
            .filter(|(n, _)| prefixes.iter().any(|p| n.starts_with(p)))
            .map(|(n, id)| (n.clone(), *id, rottable(n, st.files[id].durable.len())))
            .filter(|(_, _, len)| *len > 0)
            .collect();
        let (file, id, len) = files.get(rng.random_range(0..files.len().max(1)))?.clone();
        let f = st.files.get_mut(&id).expect("a synced name refers to a file");
        let (offset, mask) = (rng.random_range(0..len), 1u8 << rng.random_range(0..8));
        f.durable[offset] ^= mask;
        if f.appended_only
            && let Some(b) = f.current.get_mut(offset)
        {
            *b ^= mask;
        }
        st.stats.rot_injected += 1;
        st.rotted.insert((id, offset));
        Some(Rot { file, offset, mask })
    }

    /// From now on operations cost simulated time as `latency` says, spikes drawn from `rng`;
    /// whoever drives the disk awaits it ([`Disk::take_latency`]).
    pub fn set_latency(&self, latency: DiskLatency, rng: NodeRng) {
        self.lock().latency = Some((latency, rng));
    }

    /// Counts a start refused because recovery found corrupt data on this disk.
    pub fn count_rot_detected(&self) {
        self.lock().stats.rot_detected += 1;
    }

    /// Counts a rot of a topic segment on this disk: injected, or (`detected`) refused at a start.
    pub fn count_topic_rot(&self, detected: bool) {
        let mut st = self.lock();
        if detected {
            st.stats.topic_rot_detected += 1;
        } else {
            st.stats.rot_in_topic_segments += 1;
        }
    }

    /// Counts a rot of the newest WAL segment on this disk: injected, or (`detected`) refused at a
    /// start.
    pub fn count_newest_wal_rot(&self, detected: bool) {
        let mut st = self.lock();
        if detected {
            st.stats.newest_wal_rot_detected += 1;
        } else {
            st.stats.rot_in_newest_wal_segment += 1;
        }
    }

    /// Counts a rot of a topic segment on this disk that the member's background scrub found.
    pub fn count_topic_rot_scrubbed(&self) {
        self.lock().stats.topic_rot_found_by_scrub += 1;
    }

    /// Counts a wipe of this disk because its data rotted.
    pub fn count_wiped_for_rot(&self) {
        self.lock().stats.wiped_for_rot += 1;
    }
}

fn gc(st: &mut SimState) {
    let live: std::collections::BTreeSet<FileId> =
        st.names.values().chain(st.durable_names.values()).copied().collect();
    st.files.retain(|id, _| live.contains(id));
}

fn injected(op: &'static str, name: &str) -> DiskError {
    DiskError::Io { op, path: name.to_string(), source: io::Error::other("injected I/O error") }
}

fn power_lost(op: &'static str, name: &str) -> DiskError {
    DiskError::Io { op, path: name.to_string(), source: io::Error::other("power lost (simulated crash)") }
}

impl SimState {
    /// Where an armed crash strikes: fails this operation (and every later one) once the count
    /// runs out. `interrupted` is the write this operation would make, torn by the power failure.
    fn crash_point(
        &mut self,
        op: &'static str,
        name: &str,
        interrupted: Option<(usize, &[u8])>,
    ) -> Result<(), DiskError> {
        if self.crashed {
            return Err(power_lost(op, name));
        }
        let Some((left, _)) = &mut self.crash_in else { return Ok(()) };
        if *left > 0 {
            *left -= 1;
            return Ok(());
        }
        let (_, latch) = self.crash_in.take().expect("armed above");
        self.crashed = true;
        self.stats.crashes_in_ops += 1;
        if let (Some((offset, data)), Some(id)) = (interrupted, self.names.get(name)) {
            self.last_write = Some(LastWrite { file: *id, offset, data: data.to_vec() });
        }
        latch.set();
        Err(power_lost(op, name))
    }

    fn before_write(&mut self, op: &'static str, name: &str, growth: u64) -> Result<(), DiskError> {
        if self.fail_writes > 0 {
            self.fail_writes -= 1;
            self.stats.injected_failures += 1;
            return Err(injected(op, name));
        }
        if let Some(cap) = self.capacity {
            let used: u64 = self.names.values().map(|id| self.files[id].current.len() as u64).sum();
            if used + growth > cap {
                self.stats.injected_failures += 1;
                return Err(DiskError::NoSpace { op, path: name.to_string() });
            }
        }
        self.stats.writes += 1;
        self.charge(false);
        Ok(())
    }

    /// Adds what one write (or fsync) costs to the time owed.
    fn charge(&mut self, fsync: bool) {
        let Some((l, rng)) = &mut self.latency else { return };
        let mut us = if fsync { l.fsync_us } else { l.write_us };
        if l.spike_per_mille > 0 && rng.random_range(0..1000) < l.spike_per_mille {
            us += l.spike_us;
            self.stats.latency_spikes += 1;
        }
        self.owed_us += us;
        self.stats.busy_us += us;
    }

    /// An injected [`DiskFault::TooManyOpenFiles`] for an operation that opens a descriptor.
    fn before_open(&mut self, op: &'static str, name: &str) -> Result<(), DiskError> {
        if self.fail_opens > 0 {
            self.fail_opens -= 1;
            self.stats.injected_failures += 1;
            return Err(DiskError::TooManyOpenFiles { op, path: name.to_string() });
        }
        Ok(())
    }

    fn before_sync(&mut self, op: &'static str, name: &str) -> Result<(), DiskError> {
        if self.fail_syncs > 0 {
            self.fail_syncs -= 1;
            self.stats.injected_failures += 1;
            return Err(injected(op, name));
        }
        self.stats.syncs += 1;
        self.charge(true);
        Ok(())
    }

    /// A failed fsync of file `id` drops its unsynced writes ([`SimFile::lost`]); the write a
    /// power failure could tear is among them, so nothing of it lands either.
    fn drop_unsynced(&mut self, id: FileId) {
        let f = self.files.get_mut(&id).expect("named file exists");
        let n = f.drop_unsynced();
        if n > 0 {
            self.stats.dropped_on_fsync_error += n;
        }
        if self.last_write.as_ref().is_some_and(|lw| lw.file == id) {
            self.last_write = None;
        }
    }

    fn create(&mut self, name: &str) -> FileId {
        if let Some(id) = self.names.get(name) {
            return *id;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.files.insert(id, SimFile::default());
        self.names.insert(name.to_string(), id);
        id
    }

    fn id(&self, op: &'static str, name: &str) -> Result<FileId, DiskError> {
        self.names.get(name).copied().ok_or_else(|| DiskError::NotFound { op, path: name.to_string() })
    }
}

impl Disk for SimDisk {
    fn read(&self, name: &str) -> Result<Vec<u8>, DiskError> {
        check_name("read", name)?;
        let st = self.lock();
        let id = st.id("read", name)?;
        Ok(st.files[&id].current.clone())
    }

    fn read_range(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>, DiskError> {
        check_name("read", name)?;
        let st = self.lock();
        let data = &st.files[&st.id("read", name)?].current;
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(data.len());
        Ok(data[start..start.saturating_add(len).min(data.len())].to_vec())
    }

    fn size(&self, name: &str) -> Result<Option<u64>, DiskError> {
        check_name("size", name)?;
        let st = self.lock();
        Ok(st.names.get(name).map(|id| st.files[id].current.len() as u64))
    }

    fn append(&self, name: &str, data: &[u8]) -> Result<(), DiskError> {
        check_name("append", name)?;
        let mut st = self.lock();
        let end = st.names.get(name).map_or(0, |id| st.files[id].current.len());
        st.crash_point("append", name, Some((end, data)))?;
        if !st.names.contains_key(name) {
            st.before_open("append", name)?;
        }
        st.before_write("append", name, data.len() as u64)?;
        let id = st.create(name);
        let f = st.files.get_mut(&id).expect("created above");
        let offset = f.current.len();
        f.current.extend_from_slice(data);
        st.stats.appended_bytes += data.len() as u64;
        st.last_write = Some(LastWrite { file: id, offset, data: data.to_vec() });
        Ok(())
    }

    fn write(&self, name: &str, data: &[u8]) -> Result<(), DiskError> {
        check_name("write", name)?;
        let mut st = self.lock();
        st.crash_point("write", name, Some((0, data)))?;
        st.before_open("write", name)?;
        let old = st.names.get(name).map(|id| st.files[id].current.len() as u64).unwrap_or(0);
        st.before_write("write", name, (data.len() as u64).saturating_sub(old))?;
        let id = st.create(name);
        let f = st.files.get_mut(&id).expect("created above");
        f.current = data.to_vec();
        f.appended_only = false;
        f.lost.clear();
        st.rotted.retain(|(file, _)| *file != id);
        st.last_write = Some(LastWrite { file: id, offset: 0, data: data.to_vec() });
        Ok(())
    }

    fn truncate(&self, name: &str, len: u64) -> Result<(), DiskError> {
        check_name("truncate", name)?;
        let mut st = self.lock();
        st.crash_point("truncate", name, None)?;
        st.before_write("truncate", name, 0)?;
        let id = st.id("truncate", name)?;
        let f = st.files.get_mut(&id).expect("named file exists");
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len < f.current.len() {
            f.current.truncate(len);
            f.appended_only &= len >= f.durable.len();
            f.lost.retain_mut(|r| {
                r.end = r.end.min(len);
                r.start < r.end
            });
            if st.torn_files.remove(&id) {
                st.stats.repaired_tails += 1;
            }
            let cut: Vec<(FileId, usize)> = st.rotted.range((id, len)..=(id, usize::MAX)).copied().collect();
            if !cut.is_empty() {
                st.stats.rot_cut_off += 1;
                cut.iter().for_each(|k| _ = st.rotted.remove(k));
            }
        }
        Ok(())
    }

    fn sync(&self, name: &str) -> Result<(), DiskError> {
        check_name("sync", name)?;
        let mut st = self.lock();
        st.crash_point("fsync", name, None)?;
        let id = st.id("fsync", name)?;
        if let Err(e) = st.before_sync("fsync", name) {
            st.drop_unsynced(id);
            return Err(e);
        }
        st.files.get_mut(&id).expect("named file exists").sync();
        if st.last_write.as_ref().is_some_and(|lw| lw.file == id) {
            st.last_write = None;
        }
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), DiskError> {
        check_name("rename", from)?;
        check_name("rename", to)?;
        let mut st = self.lock();
        st.crash_point("rename", from, None)?;
        let id = st.id("rename", from)?;
        st.names.remove(from);
        st.names.insert(to.to_string(), id);
        gc(&mut st);
        Ok(())
    }

    fn remove(&self, name: &str) -> Result<(), DiskError> {
        check_name("remove", name)?;
        let mut st = self.lock();
        st.crash_point("remove", name, None)?;
        st.names.remove(name);
        gc(&mut st);
        Ok(())
    }

    fn take_latency(&self) -> std::time::Duration {
        std::time::Duration::from_micros(std::mem::take(&mut self.lock().owed_us))
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, DiskError> {
        let st = self.lock();
        Ok(st.names.keys().filter(|n| n.starts_with(prefix)).cloned().collect())
    }

    fn sync_dir(&self) -> Result<(), DiskError> {
        let mut st = self.lock();
        st.crash_point("fsync_dir", "", None)?;
        st.before_sync("fsync_dir", "")?;
        st.durable_names = st.names.clone();
        gc(&mut st);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rt::rng::rng_from_seed;

    #[cfg(unix)]
    #[test]
    #[allow(clippy::disallowed_methods)] // a real temp dir
    fn file_disk_creates_owner_only_files_and_directories() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("esc-disk-mode-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let root = base.join("data");
        let d = FileDisk::open_exclusive(&root).unwrap();
        d.append("wal", b"abc").unwrap();
        d.write_atomic("state", b"v1").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        for f in ["wal", "state", "LOCK"] {
            assert_eq!(mode(&root.join(f)), 0o600, "{f}");
        }
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&base), 0o700);
        drop(d);
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn unsynced_append_is_lost_on_power_failure() {
        let d = SimDisk::new();
        d.append("wal", b"abc").unwrap();
        d.sync("wal").unwrap();
        d.sync_dir().unwrap();
        d.append("wal", b"def").unwrap();
        assert_eq!(d.read("wal").unwrap(), b"abcdef");
        assert_eq!(d.read_range("wal", 2, 3).unwrap(), b"cde");
        assert_eq!(d.read_range("wal", 5, 3).unwrap(), b"f");
        d.power_fail(None);
        assert_eq!(d.read("wal").unwrap(), b"abc");
    }

    #[test]
    fn synced_data_of_a_file_whose_name_is_not_durable_is_lost() {
        let d = SimDisk::new();
        d.append("new", b"data").unwrap();
        d.sync("new").unwrap();
        d.power_fail(None);
        assert!(d.read("new").unwrap_err().is_not_found());
    }

    #[test]
    fn rename_is_durable_only_after_sync_dir() {
        let d = SimDisk::new();
        d.write_atomic("state", b"v1").unwrap();
        d.write("state.tmp", b"v2").unwrap();
        d.sync("state.tmp").unwrap();
        d.rename("state.tmp", "state").unwrap();
        assert_eq!(d.read("state").unwrap(), b"v2");
        d.power_fail(None);
        assert_eq!(d.read("state").unwrap(), b"v1", "rename without sync_dir reverts");
        d.write_atomic("state", b"v3").unwrap();
        d.power_fail(None);
        assert_eq!(d.read("state").unwrap(), b"v3");
        assert_eq!(d.list("").unwrap(), vec!["state".to_string()]);
    }

    #[test]
    fn remove_reverts_without_sync_dir() {
        let d = SimDisk::new();
        d.write_atomic("a", b"1").unwrap();
        d.remove("a").unwrap();
        assert!(d.size("a").unwrap().is_none());
        d.power_fail(None);
        assert_eq!(d.read("a").unwrap(), b"1");
        d.remove("a").unwrap();
        d.sync_dir().unwrap();
        d.power_fail(None);
        assert!(d.size("a").unwrap().is_none());
    }

    #[test]
    fn torn_write_keeps_a_strict_prefix_of_the_last_unsynced_write() {
        let mut seen_partial = false;
        for seed in 0..64 {
            let d = SimDisk::new();
            d.append("wal", b"head").unwrap();
            d.sync("wal").unwrap();
            d.sync_dir().unwrap();
            d.append("wal", b"0123456789").unwrap();
            let mut rng = rng_from_seed(seed);
            d.power_fail(Some(&mut rng));
            let got = d.read("wal").unwrap();
            assert!(got.starts_with(b"head"));
            let tail = &got[4..];
            assert!(tail.len() < 10, "a torn write never lands whole");
            assert_eq!(tail, &b"0123456789"[..tail.len()]);
            seen_partial |= !tail.is_empty();
            // The torn state is itself durable: a second power failure keeps it.
            d.power_fail(None);
            assert_eq!(d.read("wal").unwrap(), got);
        }
        assert!(seen_partial, "some seed must tear mid-write");
    }

    #[test]
    fn tear_is_reproducible_from_the_seed() {
        let run = |seed| {
            let d = SimDisk::new();
            d.write_atomic("f", b"").unwrap();
            d.append("f", &[7u8; 100]).unwrap();
            d.power_fail(Some(&mut rng_from_seed(seed)));
            d.read("f").unwrap().len()
        };
        assert_eq!(run(42), run(42));
    }

    #[test]
    fn injected_faults_fail_and_change_nothing() {
        let d = SimDisk::new();
        d.write_atomic("f", b"ok").unwrap();
        d.inject(DiskFault::FailWrites(1));
        assert!(matches!(d.append("f", b"x"), Err(DiskError::Io { .. })));
        assert_eq!(d.read("f").unwrap(), b"ok");
        d.append("f", b"y").unwrap();
        d.inject(DiskFault::FailSyncs(1));
        assert!(d.sync("f").is_err());
        d.power_fail(None);
        assert_eq!(d.read("f").unwrap(), b"ok", "a failed fsync made nothing durable");
        d.inject(DiskFault::Capacity(4));
        d.append("f", b"zz").unwrap();
        assert!(matches!(d.append("f", b"!"), Err(DiskError::NoSpace { .. })));
        d.clear_faults();
        d.append("f", b"!").unwrap();
        assert_eq!(d.stats().injected_failures, 3);
    }

    #[test]
    fn a_retried_fsync_after_a_failed_one_does_not_make_the_dropped_writes_durable() {
        let d = SimDisk::new();
        d.append("wal", b"ok").unwrap();
        d.sync("wal").unwrap();
        d.sync_dir().unwrap();
        d.append("wal", b"lost").unwrap();
        d.inject(DiskFault::FailSyncs(1));
        assert!(d.sync("wal").is_err());
        assert_eq!(d.read("wal").unwrap(), b"oklost", "the page cache still serves the dropped bytes");
        d.sync("wal").unwrap(); // the retry "succeeds": the pages are clean, nothing is written
        assert_eq!(d.stats().dropped_on_fsync_error, 4);
        d.power_fail(None);
        assert_eq!(d.read("wal").unwrap(), b"ok\0\0\0\0", "the retry made the size durable, not the bytes");
    }

    #[test]
    fn writes_after_a_failed_fsync_become_durable_around_a_hole() {
        let d = SimDisk::new();
        d.append("wal", b"ab").unwrap();
        d.sync_dir().unwrap();
        d.inject(DiskFault::FailSyncs(1));
        assert!(d.sync("wal").is_err());
        d.append("wal", b"cd").unwrap();
        d.sync("wal").unwrap();
        d.append("wal", b"ef").unwrap();
        d.sync("wal").unwrap();
        d.power_fail(None);
        assert_eq!(d.read("wal").unwrap(), b"\0\0cdef");
        d.append("wal", b"g").unwrap();
        d.sync("wal").unwrap();
        d.power_fail(None);
        assert_eq!(d.read("wal").unwrap(), b"\0\0cdefg", "a power failure ends the dropped state");
    }

    #[test]
    fn rewriting_or_cutting_the_dropped_bytes_makes_the_file_durable_again() {
        let d = SimDisk::new();
        d.write_atomic("state", b"v1").unwrap();
        d.write("state", b"v2").unwrap();
        d.inject(DiskFault::FailSyncs(1));
        assert!(d.sync("state").is_err());
        d.sync("state").unwrap();
        d.power_fail(None);
        assert_eq!(d.read("state").unwrap(), b"v1", "a rewrite whose fsync failed never lands");
        d.write("state", b"v3").unwrap();
        d.sync("state").unwrap();
        d.power_fail(None);
        assert_eq!(d.read("state").unwrap(), b"v3");

        d.append("wal", b"ab").unwrap();
        d.sync("wal").unwrap();
        d.sync_dir().unwrap();
        d.append("wal", b"cd").unwrap();
        d.inject(DiskFault::FailSyncs(1));
        assert!(d.sync("wal").is_err());
        d.truncate("wal", 2).unwrap(); // recovery cuts the unsynced tail and writes it again
        d.append("wal", b"cd").unwrap();
        d.sync("wal").unwrap();
        d.power_fail(None);
        assert_eq!(d.read("wal").unwrap(), b"abcd");
    }

    #[test]
    fn a_failed_fsync_leaves_nothing_for_a_power_failure_to_tear() {
        let mut rng = rng_from_seed(7);
        let d = SimDisk::new();
        d.append("wal", b"ab").unwrap();
        d.sync("wal").unwrap();
        d.sync_dir().unwrap();
        d.append("wal", &[9; 64]).unwrap();
        d.inject(DiskFault::FailSyncs(1));
        assert!(d.sync("wal").is_err());
        d.power_fail(Some(&mut rng));
        assert_eq!(d.read("wal").unwrap(), b"ab");
        assert_eq!(d.stats().torn_writes, 0);
    }

    #[test]
    fn injected_descriptor_exhaustion_fails_only_opens_and_creates_nothing() {
        let d = SimDisk::new();
        d.append("old", b"a").unwrap();
        d.write_atomic("state", b"v1").unwrap();
        d.inject(DiskFault::TooManyOpenFiles(2));
        d.append("old", b"b").unwrap(); // an open file needs no new descriptor
        assert!(d.append("new", b"x").unwrap_err().is_fd_exhaustion());
        assert!(d.write_atomic("state", b"v2").unwrap_err().is_fd_exhaustion());
        assert_eq!(d.size("new").unwrap(), None, "the failed open created nothing");
        assert_eq!(d.read("state").unwrap(), b"v1");
        assert_eq!(d.list("state").unwrap(), vec!["state".to_string()], "no temporary left");
        d.append("new", b"x").unwrap();
        d.write_atomic("state", b"v2").unwrap();
        assert_eq!(d.read("old").unwrap(), b"ab");
        assert_eq!(d.stats().injected_failures, 2);
    }

    #[test]
    fn an_armed_crash_strikes_inside_the_kth_operation_and_fails_every_later_one() {
        let d = SimDisk::new();
        d.append("wal", b"head").unwrap();
        d.sync("wal").unwrap();
        d.sync_dir().unwrap();
        let latch = d.arm_crash(1);
        d.append("wal", b"one").unwrap();
        assert!(!latch.is_set() && !d.crashed());
        // The second operation (a sync) is where the power goes: it and everything after fail.
        assert!(d.sync("wal").is_err());
        assert!(latch.is_set() && d.crashed());
        assert!(d.append("wal", b"two").is_err());
        assert!(d.write_atomic("state", b"x").is_err());
        assert_eq!(d.read("wal").unwrap(), b"headone", "reads still see what the process wrote");
        d.power_fail(None);
        assert_eq!(d.read("wal").unwrap(), b"head", "the unsynced append died with the power");
        assert!(!d.crashed());
        d.append("wal", b"!").unwrap();
        assert_eq!(d.stats().crashes_in_ops, 1);
    }

    #[test]
    fn a_crash_inside_an_append_tears_that_append_and_recovery_repairs_it() {
        let mut torn = 0;
        for seed in 0..32 {
            let d = SimDisk::new();
            d.append("wal", b"head").unwrap();
            d.sync("wal").unwrap();
            d.sync_dir().unwrap();
            d.arm_crash(0);
            assert!(d.append("wal", b"0123456789").is_err());
            d.power_fail(Some(&mut rng_from_seed(seed)));
            let got = d.read("wal").unwrap();
            assert!(got.starts_with(b"head") && got.len() < 14);
            assert_eq!(&got[4..], &b"0123456789"[..got.len() - 4], "a prefix of the interrupted write");
            if got.len() > 4 {
                torn += 1;
                d.truncate("wal", 4).unwrap();
                assert_eq!(d.stats().repaired_tails, 1);
            }
        }
        assert!(torn > 0, "some seed must leave part of the interrupted append");
    }

    #[test]
    fn a_crash_that_never_struck_is_disarmed() {
        let d = SimDisk::new();
        d.arm_crash(5);
        d.append("f", b"a").unwrap();
        assert!(!d.disarm_crash());
        for _ in 0..10 {
            d.append("f", b"a").unwrap();
        }
        assert_eq!(d.stats().crashes_in_ops, 0);
    }

    #[test]
    fn operations_cost_the_simulated_time_the_latency_says_and_spikes_come_from_the_seed() {
        let d = SimDisk::new();
        d.append("f", b"x").unwrap();
        assert_eq!(d.take_latency(), std::time::Duration::ZERO, "no latency set: no time");
        let l = DiskLatency { write_us: 10, fsync_us: 1_000, spike_per_mille: 500, spike_us: 50_000 };
        d.set_latency(l, rng_from_seed(3));
        d.append("f", b"x").unwrap();
        d.sync("f").unwrap();
        d.sync_dir().unwrap();
        let st = d.stats();
        let want = 10 + 2 * 1_000 + st.latency_spikes * 50_000;
        assert_eq!(d.take_latency(), std::time::Duration::from_micros(want));
        assert_eq!(d.take_latency(), std::time::Duration::ZERO, "taken once");
        assert_eq!(st.busy_us, want);
        let spikes = |seed| {
            let d = SimDisk::new();
            d.set_latency(l, rng_from_seed(seed));
            (0..200).for_each(|_| d.append("f", b"x").unwrap());
            d.stats().latency_spikes
        };
        assert_eq!(spikes(9), spikes(9), "the same seed, the same spikes");
        assert!((50..150).contains(&spikes(9)), "about half of 200: {}", spikes(9));
    }

    #[test]
    fn rot_flips_one_bit_of_a_synced_file_with_the_prefix_and_survives_power_failure() {
        let d = SimDisk::new();
        let mut rng = rng_from_seed(7);
        assert_eq!(d.rot(&["wal-"], &[], &mut rng), None, "nothing synced yet");
        d.append("wal-1", b"synced bytes").unwrap();
        d.append("other", b"never touched").unwrap();
        d.sync("wal-1").unwrap();
        d.sync("other").unwrap();
        d.sync_dir().unwrap();
        d.append("wal-1", b" and unsynced ones").unwrap();
        for _ in 0..20 {
            let before = d.read("wal-1").unwrap();
            let rot = d.rot(&["wal-"], &[], &mut rng).expect("wal-1 holds synced bytes");
            assert_eq!(rot.file, "wal-1");
            assert!(rot.offset < b"synced bytes".len(), "only synced bytes rot: {rot:?}");
            assert_eq!(rot.mask.count_ones(), 1);
            let after = d.read("wal-1").unwrap();
            let diff: Vec<usize> = (0..before.len()).filter(|&i| before[i] != after[i]).collect();
            assert_eq!(diff, vec![rot.offset], "reads see the flipped bit, and only it");
        }
        d.power_fail(None);
        assert_eq!(d.read("other").unwrap(), b"never touched");
        assert_ne!(&d.read("wal-1").unwrap()[..], b"synced bytes", "rot is durable");
        assert_eq!(d.stats().rot_injected, 20);
        d.truncate("wal-1", 0).unwrap();
        assert_eq!(d.stats().rot_cut_off, 1, "a truncate that cuts rotted bytes off is counted");
    }

    #[test]
    fn rot_spares_the_named_tail_and_the_durable_copy_holds_only_synced_bytes() {
        let d = SimDisk::new();
        let mut rng = rng_from_seed(11);
        d.append("wal-1", b"0123456789").unwrap();
        d.sync("wal-1").unwrap();
        d.sync_dir().unwrap();
        d.append("wal-1", b" unsynced").unwrap();
        d.write("new", b"never synced").unwrap();
        let copy = d.durable_copy();
        assert_eq!(copy.read("wal-1").unwrap(), b"0123456789");
        assert!(copy.read("new").unwrap_err().is_not_found(), "{:?}", copy.list(""));
        let spare = [("wal-1".to_string(), 4)];
        for _ in 0..40 {
            let rot = d.rot(&["wal-"], &spare, &mut rng).expect("bytes 0..4 may rot");
            assert!(rot.offset < 4, "bytes from 4 on are spared: {rot:?}");
        }
        assert_eq!(d.rot(&["wal-"], &[("wal-1".to_string(), 0)], &mut rng), None, "all spared");
        assert_eq!(copy.stats().rot_injected, 0, "the copy is a separate disk");
    }

    #[test]
    fn truncate_is_not_durable_until_sync() {
        let d = SimDisk::new();
        d.write_atomic("f", b"abcdef").unwrap();
        d.truncate("f", 2).unwrap();
        assert_eq!(d.read("f").unwrap(), b"ab");
        d.power_fail(None);
        assert_eq!(d.read("f").unwrap(), b"abcdef");
        d.truncate("f", 2).unwrap();
        d.sync("f").unwrap();
        d.power_fail(None);
        assert_eq!(d.read("f").unwrap(), b"ab");
    }

    #[test]
    fn names_are_flat() {
        let d = SimDisk::new();
        assert!(matches!(d.write("../x", b""), Err(DiskError::InvalidName { .. })));
        assert!(matches!(d.write("a/b", b""), Err(DiskError::InvalidName { .. })));
    }

    #[cfg(not(madsim))]
    #[test]
    fn file_disk_round_trip() {
        let dir = std::env::temp_dir().join(format!("esc-filedisk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let d = FileDisk::open(&dir).unwrap();
        d.append("wal-1", b"ab").unwrap();
        d.append("wal-1", b"cd").unwrap();
        d.sync("wal-1").unwrap();
        d.write_atomic("hard", b"state").unwrap();
        assert_eq!(d.read("wal-1").unwrap(), b"abcd");
        assert_eq!(d.size("wal-1").unwrap(), Some(4));
        assert_eq!(d.read_range("wal-1", 1, 2).unwrap(), b"bc");
        assert_eq!(d.read_range("wal-1", 3, 10).unwrap(), b"d");
        assert_eq!(d.read_range("wal-1", 9, 10).unwrap(), b"");
        d.truncate("wal-1", 1).unwrap();
        d.append("wal-1", b"Z").unwrap();
        assert_eq!(d.read("wal-1").unwrap(), b"aZ");
        assert_eq!(d.list("wal-").unwrap(), vec!["wal-1".to_string()]);
        assert_eq!(d.read("hard").unwrap(), b"state");
        d.remove("wal-1").unwrap();
        d.remove("wal-1").unwrap();
        assert!(d.read("wal-1").unwrap_err().is_not_found());
        assert!(d.size("nope").unwrap().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
