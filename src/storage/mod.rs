//! Disk persistence in nsqd's own formats, so a data directory moves between nsqd and
//! nsqd-uring both ways: go-diskqueue segments and meta files, message records, `nsqd.dat`,
//! and the data-path lock. Pure format code is kept apart from the glommio IO that uses it.

pub mod backlog;
pub mod board;
pub mod diskqueue;
pub mod files;
pub mod go_error;
pub mod lock;
pub mod metadata;
pub mod queue_io;
pub mod record;
