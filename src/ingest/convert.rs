//! Where the client protocol meets the service seam: service errors become error frames, admin
//! requests become [`AdminCommand`]s.

use crate::service::{AdminCommand, ServiceError};
use crate::wire::{AdminRequest, ErrorCode, ErrorFrame};

/// The error frame a client receives for `e`.
pub fn error_frame(e: &ServiceError) -> ErrorFrame {
    let mut f = ErrorFrame::new(ErrorCode::Internal, e.to_string());
    match e {
        ServiceError::NotLeader { leader } => {
            f.code = ErrorCode::NotLeader;
            f.leader = leader.clone().unwrap_or_default();
        }
        ServiceError::Overloaded { retry_after_ms } => {
            f.code = ErrorCode::Overloaded;
            f.retry_after_ms = *retry_after_ms;
        }
        ServiceError::ShuttingDown => {
            f.code = ErrorCode::Overloaded;
            f.retry_after_ms = 1000;
        }
        ServiceError::Unavailable { retry_after_ms, .. } => {
            f.code = ErrorCode::Unavailable;
            f.retry_after_ms = *retry_after_ms;
        }
        ServiceError::Unsupported(_) => f.code = ErrorCode::Unsupported,
        ServiceError::Internal(_) => {}
        ServiceError::Consumer(_) => f.code = ErrorCode::InvalidCommit,
        ServiceError::OutOfRange(_) => f.code = ErrorCode::OutOfRange,
    }
    f
}

/// The domain command an admin request asks for.
/// Refuses an ADMIN add whose addresses cannot be dialled (empty, or not `host:port`): such a
/// learner could never be reached.
pub fn check_admin(req: &AdminRequest) -> Result<(), ErrorFrame> {
    let AdminRequest::AddNode { raft_addr, client_addr, .. } = req else { return Ok(()) };
    let host_port =
        |a: &str| a.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
    if host_port(raft_addr) && host_port(client_addr) {
        return Ok(());
    }
    let msg = format!(
        "ADMIN add needs a raft address and a client address as host:port (got raft {raft_addr:?}, client {client_addr:?})"
    );
    Err(ErrorFrame::new(ErrorCode::Malformed, msg))
}

pub fn admin_command(req: AdminRequest) -> AdminCommand {
    match req {
        AdminRequest::Status => AdminCommand::Status,
        AdminRequest::AddNode { id, raft_addr, client_addr } => {
            AdminCommand::AddNode { id, raft_addr, client_addr }
        }
        AdminRequest::RemoveNode { id } => AdminCommand::RemoveNode { id },
        AdminRequest::TransferLeader { id } => AdminCommand::TransferLeader { id },
        AdminRequest::Topics => AdminCommand::Topics,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_service_error_has_its_code() {
        let cases = [
            (ServiceError::NotLeader { leader: Some("a:1".into()) }, ErrorCode::NotLeader, 0),
            (ServiceError::Overloaded { retry_after_ms: 7 }, ErrorCode::Overloaded, 7),
            (ServiceError::ShuttingDown, ErrorCode::Overloaded, 1000),
            (ServiceError::Unavailable { retry_after_ms: 9, reason: "x".into() }, ErrorCode::Unavailable, 9),
            (ServiceError::Unsupported("x".into()), ErrorCode::Unsupported, 0),
            (ServiceError::Internal("x".into()), ErrorCode::Internal, 0),
            (ServiceError::OutOfRange("x".into()), ErrorCode::OutOfRange, 0),
        ];
        for (e, code, retry) in cases {
            let f = error_frame(&e);
            assert_eq!((f.code, f.retry_after_ms), (code, retry), "{e:?}");
            assert_eq!(f.message, e.to_string());
        }
        assert_eq!(error_frame(&ServiceError::NotLeader { leader: Some("a:1".into()) }).leader, "a:1");
    }

    #[test]
    fn admin_requests_convert_field_by_field() {
        let add = AdminRequest::AddNode { id: 4, raft_addr: "r".into(), client_addr: "c".into() };
        assert_eq!(
            admin_command(add),
            AdminCommand::AddNode { id: 4, raft_addr: "r".into(), client_addr: "c".into() }
        );
        assert_eq!(admin_command(AdminRequest::RemoveNode { id: 2 }), AdminCommand::RemoveNode { id: 2 });
        assert_eq!(
            admin_command(AdminRequest::TransferLeader { id: 3 }),
            AdminCommand::TransferLeader { id: 3 }
        );
        assert_eq!(admin_command(AdminRequest::Status), AdminCommand::Status);
        assert_eq!(admin_command(AdminRequest::Topics), AdminCommand::Topics);
    }

    #[test]
    fn admin_add_needs_dialable_addresses() {
        let add =
            |r: &str, c: &str| AdminRequest::AddNode { id: 4, raft_addr: r.into(), client_addr: c.into() };
        assert_eq!(check_admin(&add("127.0.0.1:7173", "node4.local:7073")), Ok(()));
        for (r, c) in [("", ""), ("127.0.0.1:7173", ""), ("127.0.0.1", "127.0.0.1:7073"), (":7173", "h:1")] {
            let e = check_admin(&add(r, c)).unwrap_err();
            assert_eq!(e.code, ErrorCode::Malformed);
            assert!(e.message.contains("host:port"), "{e:?}");
        }
        assert_eq!(check_admin(&AdminRequest::Status), Ok(()));
    }
}
