//! An NBD server that exports Quarry images (`quarry nbd serve`): the protocol of
//! NetworkBlockDevice/nbd `doc/proto.md` (fixed newstyle negotiation, structured replies,
//! the `base:allocation` metadata context), with every image operation done by
//! `quarry-rbd` — this crate holds no image logic of its own.
//!
//! # What it owns
//! - The wire format ([`proto`]): pure encoders and decoders.
//! - The server ([`server`]): negotiation, the transmission phase, error mapping, flush/FUA
//!   semantics (a reply means durable in the cluster), several connections per export.
//!
//! Dependencies: `quarry-rbd` (the images), `tokio` (the connections are async, as the image
//! library is), `bytes`, `thiserror`, `tracing`.

#![warn(missing_docs)]

pub mod proto;
pub mod server;

pub use server::{Export, Server};
