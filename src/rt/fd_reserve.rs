//! One file descriptor held back for a listener: when `accept` fails because the process is out
//! of descriptors (EMFILE/ENFILE), releasing it lets the listener accept one waiting client and
//! tell it "overloaded, retry" instead of leaving every client hanging in the backlog. In the
//! simulator it holds nothing (simulated sockets never run out of descriptors).
#![allow(clippy::disallowed_methods)] // the one real file this seam opens

/// A descriptor held in reserve (of `/dev/null`).
#[derive(Debug, Default)]
pub struct FdReserve {
    #[cfg(not(madsim))]
    file: Option<std::fs::File>,
}

impl FdReserve {
    /// Takes a descriptor now (none if even that fails; [`FdReserve::rearm`] retries).
    pub fn new() -> Self {
        let mut r = FdReserve::default();
        r.rearm();
        r
    }

    /// Gives the descriptor back to the process; true if one was held.
    pub fn release(&mut self) -> bool {
        #[cfg(not(madsim))]
        {
            self.file.take().is_some()
        }
        #[cfg(madsim)]
        {
            false
        }
    }

    /// Takes a descriptor again if none is held (best effort: fails quietly while exhausted).
    pub fn rearm(&mut self) {
        #[cfg(not(madsim))]
        if self.file.is_none() {
            self.file = std::fs::File::open("/dev/null").ok();
        }
    }

    /// True while a descriptor is held.
    pub fn is_armed(&self) -> bool {
        #[cfg(not(madsim))]
        {
            self.file.is_some()
        }
        #[cfg(madsim)]
        {
            false
        }
    }
}

/// True for EMFILE / ENFILE (the process or the system is out of file descriptors).
pub fn is_fd_exhaustion(e: &std::io::Error) -> bool {
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
