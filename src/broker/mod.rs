//! The message model, independent of IO: messages and their IDs, topics, channels.

pub mod channel;
pub mod chunked;
pub mod guid;
pub mod in_flight;
pub mod latency;
pub mod message;
pub mod settle;
pub mod topic;
