#!/usr/bin/env python3
"""Byte-level comparison of two nsqd-compatible brokers over protocol V2.

usage: scripts/compare-transcripts.py REF_TCP_PORT OURS_TCP_PORT

Both brokers must already run on 127.0.0.1 (for example nsqd v1.3.0 built with
../shared/tools/ref-nsqd-build.sh, and this repo's `nsqd --cores 2`). Each scenario opens a fresh
connection to each broker, sends the magic, optional setup lines, then the scenario's bytes, and
reads until 0.4 s of silence or the close; the bytes received and how the connection ended
(open, closed, reset) must match. Prints each difference and a summary line; exits 1 on any.
Developer tool only: nothing in the test suite depends on a reference broker.
"""
import socket
import struct
import sys
import time


def b(n): return struct.pack(">i", n)
def body(line, data): return line + b"\n" + b(len(data)) + data
def mpub(msgs):
    inner = b(len(msgs)) + b"".join(b(len(m)) + m for m in msgs)
    return inner
CASES = [
 ([], b"FOO\n"), ([], b"\n"), ([], b"PUB\n"), ([], b"PUB a*b\n"), ([], b"PUB t\n"+b(-1)),
 ([], b"PUB t\n"+struct.pack(">I",0x7fffffff)), ([], b"MPUB a*b\n"), ([], b"MPUB t\n"+struct.pack(">I",0x7fffffff)),
 ([], body(b"MPUB t", mpub([b"a", b""]))), ([], b"MPUB t\n"+b(4)+b(0)), ([], b"DPUB t x\n"), ([], b"DPUB t 3600001\n"), ([], b"DPUB t\n"),
 ([], b"SUB t\n"), ([], b"SUB t c*\n"), ([], b"SUB a\xffb c\n"), ([], b"RDY 1\n"), ([], b"FIN 0123456789abcdef\n"), ([], b"REQ\n"), ([], b"TOUCH\n"), ([], b"CLS\n"),
 ([], b"IDENTIFY\n"+struct.pack(">I",0x7fffffff)), ([], body(b"IDENTIFY", b"{x}")), ([], b"AUTH x\n"), ([], body(b"AUTH", b"abc")),
 ([], body(b"IDENTIFY", b'{"heartbeat_interval":999}')), ([], body(b"IDENTIFY", b'{"output_buffer_size":10}')),
 ([], body(b"IDENTIFY", b'{"output_buffer_timeout":10}')), ([], body(b"IDENTIFY", b'{"sample_rate":100}')),
 ([], body(b"IDENTIFY", b'{"msg_timeout":900001}')), ([], body(b"IDENTIFY", b'{"client_id":5}')), ([], body(b"IDENTIFY", b'{"heartbeat_interval":1.5}')),
 ([], body(b"IDENTIFY", b'{"feature_negotiation":true,"snappy":true,"deflate":true,"tls_v1":true}')),
 ([], body(b"IDENTIFY", b'{"feature_negotiation":true,"output_buffer_size":-1,"msg_timeout":5000,"sample_rate":5}')),
 ([], body(b"IDENTIFY", b'[]')), ([], body(b"IDENTIFY", b'null')), ([], body(b"IDENTIFY", b'{"Client_ID":"x","FEATURE_NEGOTIATION":true}')),
 ([], body(b"IDENTIFY", b'{"heartbeat_interval":-1}')+b"SUB t c\n"),
 ([b"SUB t c\n"], b"SUB t c\n"), ([b"SUB t c\n"], b"IDENTIFY\n"), ([b"SUB t c\n"], b"RDY 2501\n"), ([b"SUB t c\n"], b"RDY x\n"), ([b"SUB t c\n"], b"RDY -1\n"),
 ([b"SUB t c\n"], b"FIN\n"), ([b"SUB t c\n"], b"FIN abc\n"), ([b"SUB t c\n"], b"REQ 0123456789abcdef\n"), ([b"SUB t c\n"], b"REQ 0123456789abcdef x\n"),
 ([b"SUB t c\n"], b"TOUCH\n"), ([b"SUB t c\n"], b"FIN 0123456789abcdef\nREQ 0123456789abcdef 0\nTOUCH 0123456789abcdef\nNOP\nCLS\nRDY 5\nCLS\n"),
 ([], b"PUB t\n\x00\x00\x00\x10abc"), ([], b"NOP\r\n"), ([], b"NOP x y\n"), ([], b"PUB t x\n"+b(1)+b"y"),
 ([], body(b"DPUB t 0", b"x")), ([], body(b"MPUB t", mpub([b"a"])) ), ([], b"RDY\n"),
 ([], b"A"*17000), ([], b"F\xffO\n"), ([b"SUB t c\n"], b"RDY \xfe\n"), ([b"SUB t c\n"], b"FIN \xff123456789abcdef\n"), ([], b"DPUB t \xff\n"),
 ([b"SUB t c\n"], b"REQ 0123456789abcdef \x80\n"), ([], b"\x00\x01\x02garbage\n"), ([], bytes(range(256))),
]
def run(port, setup, data, shut=False):
    s = socket.create_connection(("127.0.0.1", port)); s.settimeout(0.4)
    s.sendall(b"  V2")
    for l in setup:
        s.sendall(l); time.sleep(0.05)
        try: s.recv(100)
        except Exception: pass
    s.sendall(data)
    if data.endswith(b"abc"): s.shutdown(socket.SHUT_WR)
    out = b""; closed = False
    while True:
        try:
            d = s.recv(65536)
            if not d: closed = True; break
            out += d
        except socket.timeout: break
        except ConnectionResetError: closed = "reset"; break
    s.close()
    return out, closed
if len(sys.argv) != 3:
    sys.exit(__doc__)
ref, ours = int(sys.argv[1]), int(sys.argv[2])
diffs = 0
for setup, data in CASES:
    a = run(ref, setup, data); o = run(ours, setup, data)
    if a != o:
        diffs += 1
        print("DIFF", setup, data[:80]); print("  ref :", a); print("  ours:", o)
print(f"{len(CASES)} cases, {diffs} differ")
sys.exit(1 if diffs else 0)
