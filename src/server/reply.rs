//! Which SOCKS reply a failed connect gets (RFC 1928 section 6): the connector says
//! what went wrong, this says what the client is told.

use std::io;

use crate::connector::ConnectError;
use crate::protocol::socks5::ReplyCode;

/// The reply for a CONNECT whose upstream could not be had.
pub(super) fn for_connect_error(e: &ConnectError) -> ReplyCode {
    match e {
        ConnectError::Resolve { .. }
        | ConnectError::NoAddress { .. }
        | ConnectError::Timeout { .. } => ReplyCode::HostUnreachable,
        ConnectError::Refused { .. } => ReplyCode::NotAllowed,
        ConnectError::Connect { source, .. } => for_io(source),
    }
}

/// Maps the errno of a failed `connect(2)` to a reply code.
fn for_io(err: &io::Error) -> ReplyCode {
    match err.kind() {
        io::ErrorKind::ConnectionRefused => ReplyCode::ConnectionRefused,
        io::ErrorKind::NetworkUnreachable | io::ErrorKind::NetworkDown => {
            ReplyCode::NetworkUnreachable
        }
        io::ErrorKind::HostUnreachable | io::ErrorKind::TimedOut => ReplyCode::HostUnreachable,
        _ => ReplyCode::GeneralFailure,
    }
}

/// The label of a failed connect's reply in `upstream_connect_failures_total`.
pub(super) fn label(code: ReplyCode) -> &'static str {
    match code {
        ReplyCode::ConnectionRefused => "connection_refused",
        ReplyCode::NetworkUnreachable => "network_unreachable",
        ReplyCode::HostUnreachable => "host_unreachable",
        _ => "general_failure",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::Refusal;

    #[test]
    fn io_errors_map_to_rfc_1928_codes() {
        let code = |kind: io::ErrorKind| for_io(&io::Error::from(kind));
        assert_eq!(
            code(io::ErrorKind::ConnectionRefused),
            ReplyCode::ConnectionRefused
        );
        assert_eq!(
            code(io::ErrorKind::NetworkUnreachable),
            ReplyCode::NetworkUnreachable
        );
        assert_eq!(
            code(io::ErrorKind::HostUnreachable),
            ReplyCode::HostUnreachable
        );
        assert_eq!(code(io::ErrorKind::TimedOut), ReplyCode::HostUnreachable);
        assert_eq!(
            code(io::ErrorKind::PermissionDenied),
            ReplyCode::GeneralFailure
        );
    }

    #[test]
    fn connector_failures_map_to_their_replies() {
        let refused = ConnectError::Refused {
            dest: "192.0.2.1:80".into(),
            refusal: Refusal {
                label: "own_address",
                reason: "x".into(),
            },
        };
        assert_eq!(for_connect_error(&refused), ReplyCode::NotAllowed);
        let dns = ConnectError::NoAddress { host: "h".into() };
        assert_eq!(for_connect_error(&dns), ReplyCode::HostUnreachable);
        let timeout = ConnectError::Timeout {
            dest: "h:1".into(),
            after: std::time::Duration::from_secs(1),
        };
        assert_eq!(for_connect_error(&timeout), ReplyCode::HostUnreachable);
    }
}
