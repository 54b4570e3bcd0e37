//! Helpers for the tests that take a real server's file descriptors away.

use std::time::Duration;

use eventstreamcore::client::{Client, ClientError};
use eventstreamcore::event::Event;
use eventstreamcore::wire::{AckItem, ErrorCode};

/// How many descriptors process `pid` holds open.
pub fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count() as u64
}

/// Lowers the running process's soft and hard descriptor limit.
pub fn set_fd_limit(pid: u32, limit: u64) {
    let lim = libc::rlimit { rlim_cur: limit, rlim_max: limit };
    // SAFETY: prlimit reads the struct we pass; the old limit is not asked for.
    let rc = unsafe { libc::prlimit(pid as libc::pid_t, libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// The outcome of publishing `event` once: its offset and whether it was a duplicate, or the
/// error code.
pub async fn publish_once(client: &mut Client, event: Event) -> Result<(u64, bool), ErrorCode> {
    let seq = event.sequence;
    match client.publish(vec![event]).await {
        Ok(acks) => match &acks[..] {
            [AckItem::Stored { offset, duplicate, .. }] => Ok((*offset, *duplicate)),
            other => panic!("publish {seq}: {other:?}"),
        },
        Err(ClientError::Server(e)) => Err(e.code),
        Err(e) => panic!("publish {seq}: {e}"),
    }
}

/// Publishes `event` until it is taken, while the server answers "retry".
pub async fn publish_retrying(client: &mut Client, event: &Event) -> (u64, bool) {
    for _ in 0..400 {
        match publish_once(client, event.clone()).await {
            Ok(r) => return r,
            Err(ErrorCode::Overloaded | ErrorCode::Unavailable) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(code) => panic!("publish {}: {code:?}", event.sequence),
        }
    }
    panic!("publish {} never taken", event.sequence);
}
