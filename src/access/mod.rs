//! Access stage: what a client may reach. Today: the proxy's own addresses (never a
//! destination) and the per-IP connection limit; rules per user come next.
//!
//! Receives a destination (before a dial, or each address a name resolved to) or a
//! client address (at accept); answers allowed or not. Knows nothing of sockets
//! beyond addresses.

mod own;
mod per_ip;

pub use own::{HeldPort, OwnAddresses};
pub use per_ip::{client_key, PerIpLimit, PerIpSlot};
