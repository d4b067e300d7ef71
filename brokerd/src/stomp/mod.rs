//! The STOMP protocol, in layers the broker builds on:
//!
//! - [`frame`]: the STOMP codec (the `stomp-codec` crate, shared with `stomp-client`).
//! - [`stream`]: a client's bytes, over TCP or TLS.
//! - [`connection`]: one client stream and its read buffer, reading and writing whole frames.
//! - [`command`]: what each command name means to this broker.
//! - [`session`]: one client's conversation, from CONNECT to close.
//! - [`receipt_order`]: a session's RECEIPTs before the MESSAGEs their SENDs cause on it.
//!
//! The protocol versions and their negotiation are the codec's ([`Version`]).

pub mod command;
pub mod connection;
pub mod receipt_order;
pub mod session;
pub mod stream;

pub use stomp_codec::{frame, Escaping, Version};
