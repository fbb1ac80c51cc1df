//! Protocol V2: the wire format (pure) and the per-connection IO loop.

pub mod codec;
pub mod connection;
pub mod errors;
pub mod frame;
pub mod handoff;
pub mod identify;
pub mod names;
pub mod transport;
