//! The file-descriptor budget: at start the server compares its fd limit (`RLIMIT_NOFILE`) with
//! the sum of its connection limits plus a reserve for its own files, raises the soft limit if the
//! hard one allows, and otherwise refuses to start with a message saying what to change. Without
//! this, running out of descriptors shows up later as a failed WAL segment roll.

use crate::config::Config;

/// Descriptors kept for the server's own files and sockets: WAL segments and hard state,
/// snapshots, the DLQ, the data-directory lock, listeners, stdio and the runtime.
pub const RESERVED_FDS: u64 = 64;

/// Inbound peer connections the peer port serves at once (strangers' handshakes included).
pub const PEER_INBOUND_FDS: u64 = crate::transport::MAX_INBOUND_CONNECTIONS as u64;

/// What the configuration needs, part by part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdBudget {
    /// (config key or purpose, descriptors).
    pub parts: Vec<(&'static str, u64)>,
}

impl FdBudget {
    /// What `config` may open at once.
    pub fn of(config: &Config) -> FdBudget {
        let i = &config.ingest;
        let mut parts = vec![("ingest.max_connections", i.max_connections as u64)];
        if i.metrics_listen.is_some() {
            parts.push(("ingest.metrics_max_connections", i.metrics_max_connections as u64));
        }
        // With a secret the peer port listens: anyone who reaches it holds an inbound connection
        // until its handshake times out, so every inbound slot counts, plus one outbound
        // connection per other member.
        if !config.cluster.secret.is_empty() {
            let peers = config.cluster.members.len().saturating_sub(1) as u64;
            parts.push(("peer port (256 inbound + 1 outbound per other member)", PEER_INBOUND_FDS + peers));
        }
        // Each topic keeps its active segment open.
        parts.push(("cluster.max_topics", config.cluster.max_topics));
        parts.push(("reserved for WAL, snapshots, DLQ, listeners", RESERVED_FDS));
        FdBudget { parts }
    }

    /// The total.
    pub fn total(&self) -> u64 {
        self.parts.iter().map(|(_, n)| n).sum()
    }

    fn describe(&self) -> String {
        self.parts.iter().map(|(what, n)| format!("{what} {n}")).collect::<Vec<_>>().join(" + ")
    }
}

/// The outcome of a successful check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FdCheck {
    /// The soft limit already covered the budget.
    Enough { soft: u64, needed: u64 },
    /// The soft limit was raised (up to the hard limit) to cover it.
    Raised { from: u64, to: u64, needed: u64 },
    /// Not checked (the simulator, or a platform without `getrlimit`).
    Unchecked,
}

/// Why the server refuses to start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "file descriptor limit too low: the config may need {needed} ({parts}) but the limit is {soft} \
     (hard {hard}); raise it (e.g. `ulimit -n {needed}`, or LimitNOFILE={needed} under systemd) or lower \
     ingest.max_connections to at most {fits} (or cluster.max_topics)"
)]
pub struct FdLimitError {
    pub needed: u64,
    pub parts: String,
    pub soft: u64,
    pub hard: u64,
    /// The largest `ingest.max_connections` that fits under the hard limit.
    pub fits: u64,
}

/// Decides from the limits alone (pure, so it is testable): `Ok(None)` if `soft` is enough,
/// `Ok(Some(new_soft))` if raising the soft limit to `new_soft` (≤ `hard`) is enough, or the error.
pub fn plan(budget: &FdBudget, soft: u64, hard: u64) -> Result<Option<u64>, FdLimitError> {
    let needed = budget.total();
    if soft >= needed {
        return Ok(None);
    }
    if hard >= needed {
        return Ok(Some(needed));
    }
    let others = needed - budget.parts.first().map_or(0, |(_, n)| *n);
    Err(FdLimitError { needed, parts: budget.describe(), soft, hard, fits: hard.saturating_sub(others) })
}

/// Checks (and if needed raises) this process's fd limit for `config`.
#[cfg(all(unix, not(madsim)))]
pub fn ensure(config: &Config) -> Result<FdCheck, FdLimitError> {
    let budget = FdBudget::of(config);
    let (soft, hard) = match get() {
        Some(l) => l,
        None => return Ok(FdCheck::Unchecked),
    };
    match plan(&budget, soft, hard)? {
        None => Ok(FdCheck::Enough { soft, needed: budget.total() }),
        Some(to) => {
            set_soft(to, hard);
            // Re-check: the kernel may cap it (e.g. at fs.nr_open).
            let (now, hard) = get().unwrap_or((soft, hard));
            match plan(&budget, now, now) {
                Ok(_) => Ok(FdCheck::Raised { from: soft, to: now, needed: budget.total() }),
                Err(mut e) => {
                    e.hard = hard;
                    Err(e)
                }
            }
        }
    }
}

/// Smallest `ingest.max_connections` the server lowers an unset limit to; below it, it refuses.
pub const MIN_FITTED_CONNECTIONS: u64 = 256;

/// Like [`ensure`], but a `max_connections` left at its default (the operator chose nothing) is
/// lowered to what the hard limit fits, if that is at least [`MIN_FITTED_CONNECTIONS`], so
/// `esc serve` on embedded defaults starts on a machine whose hard limit is below the default
/// budget; returns the warning to log. A limit the operator set is never lowered: it refuses.
pub fn ensure_or_fit(config: &mut Config) -> Result<(FdCheck, Option<String>), FdLimitError> {
    match ensure(config) {
        Ok(check) => Ok((check, None)),
        Err(e) if fits_default(config, &e) => {
            let warning = format!("{e}; ingest.max_connections was not set, so it is lowered to {}", e.fits);
            config.ingest.max_connections = usize::try_from(e.fits).unwrap_or(usize::MAX);
            Ok((ensure(config)?, Some(warning)))
        }
        Err(e) => Err(e),
    }
}

/// The refusal can be mended by lowering a default `max_connections` to a useful size.
fn fits_default(config: &Config, e: &FdLimitError) -> bool {
    let default = crate::config::IngestConfig::default().max_connections;
    config.ingest.max_connections == default && e.fits >= MIN_FITTED_CONNECTIONS
}

/// The simulator opens no real descriptors.
#[cfg(not(all(unix, not(madsim))))]
pub fn ensure(_config: &Config) -> Result<FdCheck, FdLimitError> {
    Ok(FdCheck::Unchecked)
}

#[cfg(all(unix, not(madsim)))]
fn get() -> Option<(u64, u64)> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass and nothing else.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every unix
    (rc == 0).then_some((lim.rlim_cur as u64, lim.rlim_max as u64))
}

#[cfg(all(unix, not(madsim)))]
fn set_soft(soft: u64, hard: u64) {
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every unix
    let lim = libc::rlimit { rlim_cur: soft as libc::rlim_t, rlim_max: hard as libc::rlim_t };
    // SAFETY: setrlimit reads the struct we pass; failure leaves the limit as it was.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(max_connections: usize, metrics: bool, members: usize) -> FdBudget {
        let mut c = Config::default();
        c.ingest.max_connections = max_connections;
        if metrics {
            c.ingest.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        }
        if members > 0 {
            c.cluster.secret = "s".into();
        }
        for id in 1..=members as u64 {
            c.cluster.members.push(crate::config::MemberConfig {
                id,
                raft_addr: String::new(),
                client_addr: String::new(),
            });
        }
        FdBudget::of(&c)
    }

    #[test]
    fn every_listener_and_the_reserve_count() {
        let b = budget(1_000, true, 3);
        let topics = Config::default().cluster.max_topics;
        assert_eq!(b.total(), 1_000 + 64 + 256 + 2 + topics + RESERVED_FDS);
        assert_eq!(budget(1_000, false, 0).total(), 1_000 + topics + RESERVED_FDS);
        assert!(b.describe().contains("cluster.max_topics 1000"), "{}", b.describe());
    }

    #[test]
    fn enough_raise_or_refuse_with_what_to_change() {
        let b = budget(1_000, false, 0);
        assert_eq!(plan(&b, 4_096, 4_096), Ok(None));
        assert_eq!(plan(&b, 256, 4_096), Ok(Some(2_064)));
        let e = plan(&b, 256, 1_512).unwrap_err();
        assert_eq!(e.fits, 1_512 - 1_000 - RESERVED_FDS);
        let msg = e.to_string();
        for want in [
            "2064",
            "ingest.max_connections 1000",
            "cluster.max_topics 1000",
            "limit is 256",
            "hard 1512",
            "ulimit -n 2064",
            "at most 448",
        ] {
            assert!(msg.contains(want), "{want} missing from: {msg}");
        }
    }

    #[test]
    fn only_a_default_connection_limit_is_fitted_and_only_to_a_useful_size() {
        let mut c = Config::default();
        let e = plan(&FdBudget::of(&c), 1_024, 4_096).unwrap_err();
        assert!(fits_default(&c, &e), "the default limit is lowered to fit a 4096 hard limit");
        let small = plan(&FdBudget::of(&c), 128, 300).unwrap_err();
        assert!(!fits_default(&c, &small), "fitting to {} connections is no use: refuse", small.fits);
        c.ingest.max_connections = 20_000;
        let e = plan(&FdBudget::of(&c), 1_024, 4_096).unwrap_err();
        assert!(!fits_default(&c, &e), "a limit the operator chose is never lowered");
    }
}
