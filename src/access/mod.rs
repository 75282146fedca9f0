//! Access stage: what a client may reach: the access rules (per user, group, client,
//! destination, port and command) with the destination guard, the proxy's own
//! addresses (never a destination) and the per-IP connection limit.
//!
//! Receives a destination (before a dial, or each address a name resolved to) or a
//! client address (at accept); answers allowed or not. Knows nothing of sockets
//! beyond addresses.

pub mod acl;
mod groups;
mod guard;
mod own;
mod per_ip;

pub use acl::{Access, AclControl, Check, Policy, Verdict};
pub use groups::SystemGroups;
pub use guard::private_range;
pub use own::{HeldPort, OwnAddresses};
pub use per_ip::{client_key, PerIpLimit, PerIpSlot};
