//! Connector stage: turns a requested destination into a connected upstream socket.
//!
//! Receives the destination from the request stage; hands a connected `TcpStream` to
//! the relay, or a `ConnectError` that knows its SOCKS reply code.

mod dial;

pub use dial::{ConnectError, Dialer};

use tokio::net::TcpStream;

use crate::config::PoolSection;
use crate::protocol::TargetAddr;

/// What the CONNECT handler asks for an upstream connection.
pub struct Connector {
    dialer: Dialer,
}

impl Connector {
    pub fn new(config: &PoolSection) -> Self {
        Self {
            dialer: Dialer::new(config.connect_timeout()),
        }
    }

    pub async fn connect(&self, dest: &TargetAddr) -> Result<TcpStream, ConnectError> {
        self.dialer.dial(dest).await
    }
}
