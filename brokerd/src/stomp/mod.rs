//! The STOMP protocol, in layers the broker builds on:
//!
//! - [`frame`]: the STOMP codec (the `stomp-codec` crate, shared with `stomp-client`).
//! - [`connection`]: one client socket and its read buffer, reading and writing whole frames.
//! - [`command`]: what each command name means to this broker.
//! - [`session`]: one client's conversation, from CONNECT to close.
//!
//! The protocol versions and their negotiation are the codec's ([`Version`]).

pub mod command;
pub mod connection;
pub mod session;

pub use stomp_codec::{frame, Escaping, Version};
