"""Snappy framing format (as NSQ's snappy feature uses it) and CRC-32C, for the parity scripts'
clients: stdlib only, shared by scripts/parity-tcp.py and scripts/parity-random.py."""

_CRCT = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRCT.append(_c)

def crc32c(d):
    c = 0xFFFFFFFF
    for x in d:
        c = _CRCT[(c ^ x) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF

def masked_crc(d):
    c = crc32c(d)
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF

def snappy_block_decode(b):
    n = shift = i = 0
    while True:
        c = b[i]; i += 1
        n |= (c & 0x7F) << shift; shift += 7
        if c < 0x80:
            break
    out = bytearray()
    while i < len(b):
        tag = b[i]; i += 1
        t = tag & 3
        if t == 0:
            ln = tag >> 2
            if ln < 60:
                ln += 1
            else:
                nb = ln - 59
                ln = int.from_bytes(b[i:i + nb], "little") + 1; i += nb
            out += b[i:i + ln]; i += ln
        else:
            if t == 1:
                ln = ((tag >> 2) & 7) + 4; off = ((tag >> 5) << 8) | b[i]; i += 1
            elif t == 2:
                ln = (tag >> 2) + 1; off = int.from_bytes(b[i:i + 2], "little"); i += 2
            else:
                ln = (tag >> 2) + 1; off = int.from_bytes(b[i:i + 4], "little"); i += 4
            for _ in range(ln):
                out.append(out[-off])
    if len(out) != n:
        raise ValueError("snappy length mismatch")
    return bytes(out)

class SnappyFrameDecoder:
    def __init__(self):
        self.buf = bytearray(); self.err = None
    def feed(self, data):
        self.buf += data
        out = bytearray()
        while len(self.buf) >= 4 and not self.err:
            t = self.buf[0]; ln = int.from_bytes(self.buf[1:4], "little")
            if len(self.buf) < 4 + ln:
                break
            chunk = bytes(self.buf[4:4 + ln]); del self.buf[:4 + ln]
            if t == 0xFF:
                if chunk != b"sNaPpY":
                    self.err = "bad stream identifier"
            elif t in (0x00, 0x01):
                crc = int.from_bytes(chunk[:4], "little")
                d = chunk[4:]
                if t == 0:
                    try:
                        d = snappy_block_decode(d)
                    except Exception as e:  # noqa
                        self.err = "snappy decode: %s" % e; break
                if masked_crc(d) != crc:
                    self.err = "crc mismatch"
                out += d
            elif 0x02 <= t <= 0x7F:
                self.err = "reserved unskippable chunk 0x%02x" % t
        return bytes(out)

def snappy_frame_encode(data, first):
    out = bytearray(b"\xff\x06\x00\x00sNaPpY") if first else bytearray()
    for i in range(0, len(data), 65536):
        d = data[i:i + 65536]
        out += b"\x01" + (len(d) + 4).to_bytes(3, "little") + masked_crc(d).to_bytes(4, "little") + d
    return bytes(out)
