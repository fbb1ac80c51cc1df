//! The on-disk readers a corrupt or hand-edited data directory reaches: diskqueue segment
//! records, diskqueue meta files and nsqd.dat. Any bytes are a value or an error, never a
//! panic; whatever parses re-encodes to bytes that parse to the same value.
//!
//! The first input byte picks the reader (and, for segments, the max message size).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use nsqd_uring::storage::diskqueue::Meta;
use nsqd_uring::storage::metadata::Metadata;
use nsqd_uring::storage::record::{LEN_PREFIX, MIN_MSG_SIZE, Parsed, encode_record, next_record};

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            // A segment read front to back, as the disk queue reader walks it.
            let max_msg_size = 1 + usize::from(which >> 2) * 64;
            let mut buf = Bytes::copy_from_slice(rest);
            while let Ok(Parsed::Record(msg, used)) = next_record(&buf, max_msg_size) {
                assert!(used >= LEN_PREFIX + MIN_MSG_SIZE && used <= buf.len());
                assert!(msg.body.len() <= max_msg_size);
                let mut again = Vec::new();
                encode_record(&msg, &mut again);
                assert_eq!(&again[..], &buf[..used], "record does not re-encode");
                buf = buf.slice(used..);
            }
        }
        1 => {
            if let Ok(meta) = Meta::parse(&String::from_utf8_lossy(rest)) {
                assert_eq!(Meta::parse(&meta.encode()), Ok(meta));
            }
        }
        _ => {
            if let Ok(meta) = Metadata::parse(&String::from_utf8_lossy(rest)) {
                assert_eq!(Metadata::parse(&meta.encode()), Ok(meta));
            }
        }
    }
});
