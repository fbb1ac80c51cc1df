//! Packing statsd lines into UDP datagrams as nsqd's `BoundaryBufferedWriter` does: lines are
//! appended while they fit in `--statsd-udp-packet-size`, a line never spans two datagrams, and
//! a line longer than the size travels alone.

/// Go's `bufio` default, which nsqd gets for a packet size that is not positive.
const DEFAULT_SIZE: usize = 4096;

/// The packet size to use for the `--statsd-udp-packet-size` value.
pub fn packet_size(option: i64) -> usize {
    usize::try_from(option)
        .ok()
        .filter(|&n| n > 0)
        .unwrap_or(DEFAULT_SIZE)
}

/// The datagrams carrying `lines`, in order.
pub fn pack(lines: &[String], size: usize) -> Vec<Vec<u8>> {
    let mut packets = Vec::new();
    let mut current: Vec<u8> = Vec::with_capacity(size);
    for line in lines {
        if !current.is_empty() && current.len() + line.len() > size {
            packets.push(std::mem::replace(&mut current, Vec::with_capacity(size)));
        }
        if line.len() > size {
            packets.push(line.as_bytes().to_vec());
        } else {
            current.extend_from_slice(line.as_bytes());
        }
    }
    if !current.is_empty() {
        packets.push(current);
    }
    packets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(lens: &[usize]) -> Vec<String> {
        lens.iter()
            .map(|&n| format!("{}\n", "x".repeat(n - 1)))
            .collect()
    }

    #[test]
    fn lines_fill_packets_without_spanning() {
        let packets = pack(&lines(&[4, 4, 4, 3, 10]), 10);
        let sizes: Vec<usize> = packets.iter().map(Vec::len).collect();
        assert_eq!(sizes, [8, 7, 10], "4+4, then 4+3, then exactly 10");
        assert!(packets.iter().all(|p| p.ends_with(b"\n")));
    }

    #[test]
    fn an_oversized_line_travels_alone() {
        let packets = pack(&lines(&[3, 25, 3]), 10);
        let sizes: Vec<usize> = packets.iter().map(Vec::len).collect();
        assert_eq!(sizes, [3, 25, 3]);
    }

    #[test]
    fn nothing_to_send_is_no_packet() {
        assert!(pack(&[], 508).is_empty());
    }

    #[test]
    fn non_positive_sizes_fall_back_to_gos_default() {
        assert_eq!(packet_size(508), 508);
        assert_eq!(packet_size(0), 4096);
        assert_eq!(packet_size(-1), 4096);
    }
}
