#!/usr/bin/env python3
"""Randomized differential tester: nsqd-uring (ours) vs real nsqd v1.3.0 (ref), TCP protocol V2.

usage:
  scripts/parity-random.py OURS_BIN REF_BIN [--seconds N | --count N] [--seed S] [--flagset NAME[,NAME]]
                           [--cores 1,2] [--steps 40] [--conns 3] [--out DIR] [--no-reduce] [-v]
  scripts/parity-random.py OURS_BIN REF_BIN --replay SEED --flagset NAME -v     (one sequence, print everything)

For every seed a random sequence of V2 steps is generated (<= --steps steps; <= --conns connections open
at a time, a replacement opened when one is closed or killed by a fatal error, <= 9 per sequence):
magic (valid / bad / split), IDENTIFY with random valid and invalid JSON fields, SUB/PUB/MPUB/DPUB/RDY/
FIN/REQ/TOUCH/NOP/CLS/AUTH valid and invalid (bad names, wrong arity, bad/negative/huge sizes, unknown
and lowercase commands, wrong state, FIN/REQ/TOUCH of bogus, own and foreign IDs), '\\r\\n' line endings,
commands split across writes or sent byte by byte, a few pipelined pairs, waits, client close / half-close.

The same sequence runs at once against four brokers of one flag set: ref, a second ref (ref2: if ref and
ref2 disagree the sequence is timing-dependent and is ignored), ours --cores 1 and ours --cores 2.
Topics a/b of each run are pre-created with channels c0..c2 >= 5.4 s before use and deleted afterwards
(see Harness.nonce). After every step all connections are read until they are quiet. Per connection we compare:
  * the ordered list of frames: responses / errors byte for byte, message frames as attempts + body with
    the 16-byte ID replaced by a label id#N (numbered per run, in order of first appearance, connections
    taken in name order) -- also inside error texts; timestamps are only checked for plausibility;
  * heartbeats only as a count (+-1 tolerated);
  * whether the server closed the connection, and after which of *this connection's* sends it did
    (robust against cross-connection timing); EOF vs RST is ignored.
A difference with ref == ref2 is re-run once; only if it reproduces is it reported. Each distinct difference
(signature = first differing frame pair, IDs/names masked) is reduced by delta debugging over the steps
(ref, ref2 and the differing ours variant re-run for every candidate), and written to OUT/report.md with
the exact bytes of the reduced sequence. A difference where only the interleaving of message frames vs
other frames differs is counted as 'soft' and not reduced.

Stdlib only. Ports 50000-52999 on 127.0.0.1 only; temp data dirs are removed; brokers killed at exit.
"""
import argparse, hashlib, json, os, random, re, select, shutil, signal, socket, struct, subprocess, sys
import tempfile, threading, time, traceback, zlib

PORT_LO, PORT_HI = 50000, 52999
REF2_DELAY = 2.5
_port_lock = threading.Lock()
_ports_used = set()

sys.dont_write_bytecode = True  # no __pycache__ beside the scripts
from loopback_ports import free_ports as free_ports_in  # noqa: E402


def free_ports(n):
    with _port_lock:
        out = free_ports_in(n, PORT_LO, PORT_HI, _ports_used)
        _ports_used.update(out)
    return out

# ============================================================================ flag sets
DEF = dict(max_msg=1048576, max_body=5242880, max_rdy=2500, max_req=3600000, max_mt=900000, msg_timeout=60000,
           max_hb=60000, max_obs=65536, min_obt=25, max_obt=30000, snappy=True, deflate=True, max_dl=6)

def FS(flags, **kw):
    d = dict(DEF); d.update(kw); d["flags"] = flags
    return d

FLAGSETS = {
    "default": FS([]),
    "small": FS(["--max-msg-size", "100", "--max-body-size", "1000", "--max-rdy-count", "50",
                 "--max-req-timeout", "10s", "--max-msg-timeout", "20s", "--msg-timeout", "3s"],
                max_msg=100, max_body=1000, max_rdy=50, max_req=10000, max_mt=20000, msg_timeout=3000),
    "disk": FS(["--mem-queue-size", "0", "--max-rdy-count", "20", "--msg-timeout", "2s"],
               max_rdy=20, msg_timeout=2000),
    "mem2": FS(["--mem-queue-size", "2", "--max-rdy-count", "5", "--msg-timeout", "1s", "--max-req-timeout", "2s"],
               max_rdy=5, msg_timeout=1000, max_req=2000),
    "tiny": FS(["--max-msg-size", "16", "--max-body-size", "64", "--max-heartbeat-interval", "2s",
                "--max-output-buffer-size", "128", "--min-output-buffer-timeout", "10ms",
                "--max-output-buffer-timeout", "200ms", "--output-buffer-timeout", "20ms", "--max-msg-timeout", "5s"],
               max_msg=16, max_body=64, max_hb=2000, max_obs=128, min_obt=10, max_obt=200, max_mt=5000),
    "nocomp": FS(["--snappy=false", "--deflate=false", "--max-deflate-level", "9", "--max-channel-consumers", "1"],
                 snappy=False, deflate=False, max_dl=9),
}

# ============================================================================ snappy / crc32c (framing format)
from nsq_snappy import SnappyFrameDecoder as SnappyDec, snappy_frame_encode as snappy_encode  # noqa: E402

# ============================================================================ brokers
class Broker:
    def __init__(self, label, binpath, flags, cores=None):
        self.label, self.bin, self.flags, self.cores = label, binpath, list(flags), cores
        self.proc = None; self.dir = None

    def start(self):
        self.dir = tempfile.mkdtemp(prefix="parity-random-")
        self.tcp, self.http = free_ports(2)
        args = [self.bin, "--data-path=" + self.dir, "--tcp-address=127.0.0.1:%d" % self.tcp,
                "--http-address=127.0.0.1:%d" % self.http]
        if self.cores:
            args += ["--cores", str(self.cores)]
        args += self.flags
        self.logf = open(os.path.join(self.dir, "log.txt"), "wb")
        self.proc = subprocess.Popen(args, stdout=self.logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        t0 = time.time()
        while time.time() - t0 < 10:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited at start: %r" % (self.label, open(self.logf.name, "rb").read()[-1500:]))
            try:
                socket.create_connection(("127.0.0.1", self.tcp), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("%s did not come up" % self.label)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self):
        try:
            self.logf.flush(); return open(self.logf.name, "rb").read()[-1500:]
        except Exception:
            return b""

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill(); self.proc.wait()
        self.proc = None
        if self.dir:
            try:
                self.logf.close()
            except Exception:
                pass
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        with _port_lock:
            _ports_used.discard(getattr(self, "tcp", None)); _ports_used.discard(getattr(self, "http", None))

# ============================================================================ sequence generation
# A step is a dict:
#   {"k":"C", "c":i, "data":magic bytes or b"", "split":[...]}            connect (+ magic)
#   {"k":"S", "c":i, "data":bytes, "split":None|"byte"|[fractions], "d":desc, "nocoalesce":bool}   send
#   {"k":"W", "t":seconds}                                                 wait (reading all conns)
#   {"k":"X", "c":i}  client close          {"k":"H", "c":i}  client half-close (SHUT_WR)
# data may contain placeholders rendered at run time (lengths are preserved):
#   @NNNNN@  (7 bytes)  -> 7-digit run nonce (topic names stay unique per run, identical across brokers)
#   @I<c><w>@@@@@@@@@@@ (16 bytes) -> a real message ID seen by connection c (w: L last, P previous, F first)
NONCE_PH = b"@NNNNN@"

def IDPH(c, w):
    return (b"@I%d%s" % (c, w.encode())).ljust(16, b"@")

BOGUS_ID = b"0123456789abcdef"

def i32(n):
    return struct.pack(">I", n & 0xFFFFFFFF)

class Gen:
    """Random step sequences. Each command is drawn either 'good' (valid in the state the generator believes the
    connection is in) or, with probability p_bad, 'bad' (invalid syntax/values/sizes/state; mostly fatal, so the
    generator then treats the connection as dead and opens another one, keeping <= max_conns open at a time)."""
    def __init__(self, seed, fs, max_steps=40, max_conns=3, p_bad=None):
        self.r = random.Random(seed)
        self.fs = fs
        self.max_steps = max_steps
        self.max_conns = max_conns
        self.p_bad = p_bad if p_bad is not None else self.r.choice([0.04, 0.08, 0.12, 0.2])
        self.topics = [b"t" + NONCE_PH + b"a", b"t" + NONCE_PH + b"b", b"t" + NONCE_PH + b"e#ephemeral",
                       b"t" + NONCE_PH + b"c"]   # a, b: pre-created with channels c0, c1, c2; c and e: not
        self.chans = [b"c0", b"c1", b"c2", b"e#ephemeral"]
        self.cs = {}      # conn -> generator's belief: state init/sub/closing, hbdisabled, compress_req, dead
        self.subbed = set()

    def wpick(self, pairs):
        tot = sum(w for w, _ in pairs)
        x = self.r.random() * tot
        for w, v in pairs:
            x -= w
            if x <= 0:
                return v
        return pairs[-1][1]

    # ---- names
    def topic(self, bad=False, pub_from=None):
        r = self.r
        if pub_from is not None:
            # publishing connections never publish to a topic they SUBscribed to: the order of the OK and of the
            # resulting message frame differs by design (known, documented difference), and it cascades
            for _ in range(20):
                t = self.topic(bad)
                if t not in self.cs[pub_from].get("subs", ()):
                    return t
            return b"t" + NONCE_PH + b"p"
        if not bad:
            x = r.random()
            if self.subbed and r.random() < 0.6:
                return r.choice(sorted(self.subbed))
            if x < 0.78:
                return r.choice(self.topics[:2])
            if x < 0.86:
                return self.topics[2]
            if x < 0.93:
                return self.topics[3]
            return r.choice([b"t" + NONCE_PH + b".-_Z9", (b"t" + NONCE_PH + b"x" * 64)[:64],
                             (b"t" + NONCE_PH + b"x" * 64)[:54] + b"#ephemeral", b"T" + NONCE_PH + b"a"])
        return r.choice([b"", b"a*b", b"t" + NONCE_PH + b"\xc3\xa9", b"#ephemeral", b"t" + NONCE_PH + b"#ephemeralx",
                         b"t" + NONCE_PH + b"#Ephemeral", (b"t" + NONCE_PH + b"x" * 65)[:65],
                         (b"t" + NONCE_PH + b"x" * 64)[:55] + b"#ephemeral", b"t" + NONCE_PH + b"\t",
                         b"t" + NONCE_PH + b"\x00", b"t/" + NONCE_PH, b"t:" + NONCE_PH])

    def chan(self, c, bad=False):
        r = self.r
        if not bad:
            x = r.random()
            if x < 0.8:
                return self.chans[c % 3]
            if x < 0.9:
                return b"e#ephemeral"
            return r.choice([self.chans[(c + 1) % 3], b"x" * 64, b"x" * 54 + b"#ephemeral", b"c.d-e_F"])
        return r.choice([b"", b"c*", b"#ephemeral", b"x" * 65, b"c#ephemeralx", b"ch\xff",
                         b"x" * 55 + b"#ephemeral", b"c:d"])

    def body(self):
        r = self.r
        n = self.wpick([(6, r.randint(1, 12)), (2, r.randint(13, 60)), (1, 300)])
        n = min(n, self.fs["max_msg"])
        kind = r.random()
        if kind < 0.6:
            return bytes(r.choice(b"abcdefxyz0123") for _ in range(n))
        if kind < 0.85:
            return bytes(r.randrange(256) for _ in range(n))
        return (b"NOP\nPUB x\n" * 40)[:n]

    def eol(self):
        return b"\r\n" if self.r.random() < 0.1 else b"\n"

    def bad_size(self, line, body, maxv):
        """line + size + body with a bad size field"""
        r = self.r
        choice = r.choice(["zero", "neg", "minint", "max+1", "huge", "short", "long"])
        if choice == "zero":
            return line + i32(0), choice
        if choice == "neg":
            return line + i32(-r.randint(1, 5)), choice
        if choice == "minint":
            return line + i32(0x80000000), choice
        if choice == "max+1":
            return line + i32(maxv + 1), choice
        if choice == "huge":
            return line + i32(0x7FFFFFFF), choice
        if choice == "short" and len(body) > 1:       # the rest of the body is parsed as commands
            return line + i32(len(body) - 1) + body, choice
        return line + i32(len(body) + r.randint(1, 8)) + body, "long"   # following bytes consumed as body

    def good_size(self, line, body, maxv):
        if maxv <= 2000 and self.r.random() < 0.08:
            body = bytes(self.r.choice(b"mx") for _ in range(maxv))      # exactly the maximum
        return line + i32(len(body)) + body

    # ---- IDENTIFY
    def ident_good_value(self, key):
        fs = self.fs; r = self.r
        if key == "heartbeat_interval":
            return r.choice([0, 1000, 1000, 1500, 2000, 3000, fs["max_hb"], 30000, None, -1])
        if key == "msg_timeout":
            return r.choice([0, 1000, 1000, 1500, 2500, fs["max_mt"], 60000, None])
        if key == "output_buffer_size":
            return r.choice([-1, 0, 64, 100, 16384, fs["max_obs"], None])
        if key == "output_buffer_timeout":
            return r.choice([-1, 0, fs["min_obt"], 100, 1000, fs["max_obt"], None])
        if key == "sample_rate":
            return r.choice([0, 0, 0, 99, None] + ([50] if r.random() < 0.15 else []))
        if key == "feature_negotiation":
            return r.choice([True, True, True, False, None])
        if key in ("client_id", "hostname", "user_agent", "topology_region", "topology_zone"):
            return r.choice(["", "cli", "h\u00e9\"\\x\u2028", "a" * 300, None])
        if key == "tls_v1":
            return r.choice([True, False])
        if key == "deflate_level":
            return r.choice([0, 1, 3, 6, 9, 10, -1])
        if key in ("long_id", "short_id"):
            return r.choice(["x", "y"])
        return r.choice([1, "x", None, {}, []])

    def ident_bad_value(self, key):
        fs = self.fs; r = self.r
        if key == "heartbeat_interval":
            return r.choice([fs["max_hb"] + 1, 999, 1, -2, "1000", 1000.5, True])
        if key == "msg_timeout":
            return r.choice([999, fs["max_mt"] + 1, -1, "x", 1.5])
        if key == "output_buffer_size":
            return r.choice([63, 1, fs["max_obs"] + 1, -2, 1.0, "64"])
        if key == "output_buffer_timeout":
            return r.choice([fs["min_obt"] - 1, fs["max_obt"] + 1, -2, 1, "25"])
        if key == "sample_rate":
            return r.choice([100, -1, 2147483648, 0.5, "0"])
        if key == "feature_negotiation":
            return r.choice(["true", 1])
        return r.choice([5, ["x"], {}])

    IDKEYS = ["heartbeat_interval", "msg_timeout", "output_buffer_size", "output_buffer_timeout", "sample_rate",
              "feature_negotiation", "client_id", "hostname", "user_agent", "tls_v1", "deflate_level", "long_id",
              "unknown_key", "topology_zone"]

    def ident_body(self, c, bad):
        r = self.r; st = self.cs[c]
        if bad and r.random() < 0.35:
            return r.choice([b"{", b"[]", b"null", b"{}x", b'{"a":1,}', b"\xef\xbb\xbf{}", b"{}{}", b"1",
                             b'{"heartbeat_interval":1e3}', b'{"msg_timeout":01000}', b"{'a':1}",
                             b'{"heartbeat_interval":99999999999999999999}', b'{"sample_rate":4294967296}',
                             b'{"client_id":"\xff\xfe"}'])
        if not bad and r.random() < 0.1:
            return r.choice([b" {}", b"{}\n", b'{"FEATURE_NEGOTIATION":true}', b'{"Heartbeat_Interval":1000,"feature_negotiation":true}',
                             b'{"feature_negotiation":true,"feature_negotiation":false}', b'{"client_id":"\\ud800"}',
                             b'{"msg_timeout":1000,"msg_timeout":null,"feature_negotiation":true}'])
        obj = {}
        for k in r.sample(self.IDKEYS, r.choice([0, 1, 1, 2, 2, 3, 4])):
            obj[k] = self.ident_good_value(k)
        if bad:
            k = r.choice(self.IDKEYS[:6] + ["client_id"])
            obj[k] = self.ident_bad_value(k)
        if r.random() < 0.5:
            obj["feature_negotiation"] = True
        if not st.get("compress_req") and r.random() < 0.12:
            which = r.choice(["snappy", "deflate", "deflate", "both"])
            if which in ("snappy", "both"):
                obj["snappy"] = True
            if which in ("deflate", "both"):
                obj["deflate"] = True
                if r.random() < 0.5:
                    obj["deflate_level"] = r.choice([1, 6, 9])
            obj["feature_negotiation"] = True
            st["compress_req"] = True
        if not bad and obj.get("heartbeat_interval") == -1:
            st["hbdis"] = True
        js = json.dumps(obj, separators=(",", ":"))
        if r.random() < 0.1:     # duplicate key (maybe other case), the later one null or another valid value
            k = r.choice(self.IDKEYS[:6])
            if r.random() < 0.3:
                k = k.upper() if r.random() < 0.5 else k.title()
            v = None if r.random() < 0.5 else self.ident_good_value(k.lower())
            if v == -1 and k.lower() == "heartbeat_interval":
                v = None
            js = js[:-1] + ("," if len(js) > 2 else "") + '"%s":%s}' % (k, json.dumps(v))
        return js.encode()

    # ---- IDs (all 16 bytes unless bad)
    def mid(self, c, bad=False):
        r = self.r
        if bad:
            return r.choice([b"", b"0123456789abcde", b"0123456789abcdef0", b"x", b"\xff" * 15])
        x = r.random()
        if x < 0.55:
            return IDPH(c, "L")
        if x < 0.75:
            return IDPH(r.choice(sorted(self.cs)), r.choice("LLPF"))
        if x < 0.85:
            return IDPH(c, r.choice("PF"))
        return r.choice([BOGUS_ID, b"0123456789ABCDEF", b"\xff" * 16, b"                "])

    # ---- one command: returns (data, desc, is_identify, bad)
    def command(self, c):
        r = self.r; fs = self.fs; st = self.cs[c]
        state = st["state"]
        bad = r.random() < self.p_bad
        eol = self.eol()
        if not bad:
            w = [(3, "PUB"), (2, "MPUB"), (1.5, "DPUB"), (1.5, "NOP")]
            if state == "init":
                w += [(4 if not st.get("identified") else 1, "IDENTIFY")]
                if not st.get("hbdis"):
                    w += [(4, "SUB")]
            else:
                w += [(3 if state == "sub" else 1, "RDY"), (4, "FIN"), (2.5, "REQ"), (1.5, "TOUCH")]
                if state == "sub":
                    w += [(0.7, "CLS")]
            cmd = self.wpick(w)
        else:
            cmd = self.wpick([(3, "IDENTIFY"), (3, "SUB"), (3, "PUB"), (3, "MPUB"), (2, "DPUB"), (2, "RDY"),
                              (1.5, "FIN"), (1.5, "REQ"), (1, "TOUCH"), (1, "CLS"), (1.5, "AUTH"), (3, "JUNK")])
        if cmd == "IDENTIFY":
            body = self.ident_body(c, bad and r.random() < 0.6)
            line = r.choice([b"IDENTIFY", b"IDENTIFY", b"IDENTIFY", b"IDENTIFY x", b"IDENTIFY "]) + eol
            if bad and r.random() < 0.3:
                data, how = self.bad_size(line, body, fs["max_body"])
            else:
                data, how = line + i32(len(body)) + body, "ok"
            st["identified"] = True
            return data, "IDENTIFY", True, bad
        if cmd == "SUB":
            if not bad:
                t = self.topic()
                if st["state"] == "init":
                    self.subbed.add(t)
                st["state"] = "sub"
                line = b"SUB " + t + b" " + self.chan(c)
                if r.random() < 0.05:
                    line += b" extra"
            else:
                line = r.choice([b"SUB " + self.topic(True) + b" " + self.chan(c), b"SUB " + self.topic() + b" " + self.chan(c, True),
                                 b"SUB " + self.topic(), b"SUB", b"SUB " + self.topic() + b" " + self.chan(c)])  # last: maybe wrong state
            w = line.split(b" ")
            if len(w) > 1:
                st.setdefault("subs", set()).add(w[1])
            return line + eol, "SUB", False, bad
        if cmd == "PUB":
            if not bad:
                return self.good_size(b"PUB " + self.topic(pub_from=c) + eol, self.body(), fs["max_msg"]), "PUB", False, bad
            if r.random() < 0.5:
                data, how = self.bad_size(b"PUB " + self.topic(pub_from=c) + eol, self.body(), fs["max_msg"])
                return data, "PUB size " + how, False, bad
            line = r.choice([b"PUB", b"PUB " + self.topic(True), b"PUB  " + self.topic(pub_from=c)])
            return line + eol + i32(3) + b"abc", "PUB badline", False, bad
        if cmd == "DPUB":
            t = self.topic(pub_from=c)
            if not bad:
                d = r.choice([b"0", b"100", b"250", b"400", b"1200", b"%d" % fs["max_req"], b""])
                return self.good_size(b"DPUB " + t + b" " + d + eol, self.body(), fs["max_msg"]), "DPUB", False, bad
            if r.random() < 0.3:
                data, how = self.bad_size(b"DPUB " + t + b" 100" + eol, self.body(), fs["max_msg"])
                return data, "DPUB size " + how, False, bad
            line = r.choice([b"DPUB " + t + b" %d" % (fs["max_req"] + 1), b"DPUB " + t + b" -1", b"DPUB " + t + b" abc",
                             b"DPUB " + t + b" 1.5", b"DPUB " + t + b" 99999999999999999999", b"DPUB " + t, b"DPUB",
                             b"DPUB " + self.topic(True) + b" 5"])
            return line + eol + i32(2) + b"xy", "DPUB badline", False, bad
        if cmd == "MPUB":
            t = self.topic(bad and r.random() < 0.15, pub_from=c)
            line = (b"MPUB " + t if not bad or r.random() < 0.9 else r.choice([b"MPUB", b"MPUB " + t + b" x"])) + eol
            n = r.choice([1, 1, 2, 3, 5])
            msgs = [self.body() for _ in range(n)]
            enc = b"".join(i32(len(m)) + m for m in msgs)
            how = "ok"
            inner = i32(n) + enc
            if bad and r.random() < 0.7:
                how = r.choice(["count0", "countneg", "countbig", "msg0", "msgneg", "msgbig", "countmore", "countless"])
                if how == "count0":
                    inner = i32(0)
                elif how == "countneg":
                    inner = i32(-1)
                elif how == "countbig":
                    inner = i32((fs["max_body"] - 4) // 5 + r.choice([0, 1])) + enc
                elif how == "msg0":
                    inner = i32(n + 1) + enc + i32(0)
                elif how == "msgneg":
                    inner = i32(n) + i32(-7)
                elif how == "msgbig":
                    inner = i32(n + 1) + enc + i32(fs["max_msg"] + 1)
                elif how == "countmore":
                    inner = i32(n + 1) + enc
                else:
                    inner = i32(max(1, n - 1)) + enc
            data = line + i32(len(inner)) + inner; bs = "ok"
            if bad and (how == "ok" or r.random() < 0.2):
                bs = r.choice(["zero", "neg", "max+1", "small", "large"])
                size = {"zero": 0, "neg": -1, "max+1": fs["max_body"] + 1, "small": max(1, len(inner) // 2),
                        "large": len(inner) + 7}[bs]
                data = line + i32(size) + (b"" if bs in ("zero", "neg", "max+1") else inner)
            elif not bad and r.random() < 0.1:       # outer size is only range checked
                data = line + i32(r.choice([1, len(inner) + 100])) + inner; bs = "mismatch"
            return data, "MPUB n=%d inner=%s bodysize=%s" % (n, how, bs), False, bad
        if cmd == "RDY":
            if not bad:
                v = r.choice([b"0", b"1", b"1", b"2", b"3", b"5", b"10", b"%d" % fs["max_rdy"], b"", None])
            else:
                v = r.choice([b"%d" % (fs["max_rdy"] + 1), b"-1", b"abc", b"18446744073709551616", b"+1", b"1 "])
            line = b"RDY" if v is None else b"RDY " + v
            return line + eol, "RDY", False, bad
        if cmd in ("FIN", "TOUCH"):
            line = cmd.encode() + b" " + self.mid(c)
            if bad:
                line = r.choice([cmd.encode(), cmd.encode() + b" " + self.mid(c, True), line])   # last: wrong state?
            elif r.random() < 0.04:
                line += b" extra"
            return line + eol, cmd, False, bad
        if cmd == "REQ":
            if not bad:
                t = r.choice([b"0", b"0", b"100", b"300", b"700", b"", b"%d" % (fs["max_req"] + 1), b"99999999999999999999"])
                return b"REQ " + self.mid(c) + b" " + t + eol, "REQ", False, bad
            line = r.choice([b"REQ " + self.mid(c) + b" -1", b"REQ " + self.mid(c) + b" x", b"REQ " + self.mid(c) + b" 1.5",
                             b"REQ " + self.mid(c), b"REQ", b"REQ " + self.mid(c, True) + b" 0", b"REQ " + self.mid(c) + b" 0"])
            return line + eol, "REQ", False, bad
        if cmd == "NOP":
            return r.choice([b"NOP", b"NOP", b"NOP x y"]) + eol, "NOP", False, bad
        if cmd == "CLS":
            if not bad:
                st["state"] = "closing"
            return r.choice([b"CLS", b"CLS", b"CLS x"]) + eol, "CLS", False, bad
        if cmd == "AUTH":
            line = r.choice([b"AUTH", b"AUTH", b"AUTH x"]) + eol
            if r.random() < 0.4:
                data, how = self.bad_size(line, b"secret", fs["max_body"])
            else:
                data = line + i32(6) + b"secret"
            return data, "AUTH", False, bad
        j = r.choice([b"FOO", b"pub " + self.topic(pub_from=c), b"nop", b"", b" NOP", b"NOP\t", b"Sub x y", b"RDY\x00",
                      b"IDENTIFYX", b"\xff\xfe", b"MPUBX t", b"FIN\r", b"GET / HTTP/1.1", b"CLS\r\r", b"rdy 1",
                      b"sub " + self.topics[0] + b" c0"])
        return j + eol, "JUNK", False, bad

    def alive(self):
        return [c for c in sorted(self.cs) if not self.cs[c].get("dead")]

    def generate(self):
        r = self.r
        steps = []
        n = r.randint(4, self.max_steps)
        steps.append(self.connect_step(0))
        while len(steps) < n:
            x = r.random()
            alive = self.alive()
            if not alive and len(self.cs) >= 9:
                break
            if len(self.cs) < 9 and len(alive) < self.max_conns and (not alive or x < 0.08):
                steps.append(self.connect_step(len(self.cs))); continue
            if x < 0.13:
                steps.append({"k": "W", "t": r.choice([0.15, 0.3, 0.6, 1.2, 2.3])}); continue
            c = r.choice(alive)
            if x < 0.14:
                steps.append({"k": "X", "c": c}); self.cs[c]["dead"] = True; continue
            if x < 0.145:
                steps.append({"k": "H", "c": c}); self.cs[c]["dead"] = True; continue
            data, desc, is_ident, bad = self.command(c)
            if bad:
                self.cs[c]["dead"] = True
            elif not is_ident and r.random() < 0.06:        # pipeline a second command in the same write
                d2, desc2, is2, bad2 = self.command(c)
                if not is2:
                    data += d2; desc += " + " + desc2
                    if bad2:
                        self.cs[c]["dead"] = True
            split = None
            y = r.random()
            if y < 0.1:
                split = sorted(r.random() for _ in range(r.randint(1, 3)))
            elif y < 0.13 and len(data) <= 80:
                split = "byte"
            steps.append({"k": "S", "c": c, "data": data, "split": split, "d": desc})
            if desc == "SUB" and not bad and r.random() < 0.6:
                v = r.choice([b"1", b"1", b"2", b"5", b"%d" % self.fs["max_rdy"]])
                steps.append({"k": "S", "c": c, "data": b"RDY " + v + b"\n", "split": None, "d": "RDY"})
        return steps

    def connect_step(self, c):
        r = self.r
        self.cs[c] = {"state": "init"}
        if r.random() < 0.95:
            magic = b"  V2"
        else:
            magic = r.choice([b"  V1", b"  v2", b"V2  ", b"ABCD", b"\x00\x00\x00\x00"])
            self.cs[c]["dead"] = True
        return {"k": "C", "c": c, "data": magic, "split": [0.5] if r.random() < 0.1 else None}

# ============================================================================ execution
class Conn:
    def __init__(self, idx, port):
        self.idx = idx
        self.s = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.s.setblocking(False)
        self.buf = bytearray()
        self.dec = None; self.enc = None; self.snappy_first = True
        self.frames = []          # (kind, payload)  kind: R(esponse) E(rror) M(essage) X(other) G(garbage)
        self.hb = 0
        self.ids = []             # raw IDs received, in order
        self.closed = None        # (kind, after_send_no, seconds_after_last_send)
        self.client_closed = False
        self.sends = 0            # number of send steps on this conn
        self.last_send_t = time.time()
        self.flags = []

    def send(self, data):
        if self.enc == "snappy":
            data = snappy_encode(data, self.snappy_first); self.snappy_first = False
        elif self.enc is not None:
            data = self.enc.compress(data) + self.enc.flush(zlib.Z_SYNC_FLUSH)
        try:
            self.s.setblocking(True); self.s.settimeout(2)
            self.s.sendall(data)
        except OSError:
            pass
        finally:
            try:
                self.s.setblocking(False)
            except OSError:
                pass

    def on_data(self, raw):
        if self.dec is not None:
            try:
                raw = self.dec.decompress(raw) if hasattr(self.dec, "decompress") else self.dec.feed(raw)
            except Exception as e:
                self.frames.append(("X", b"DECODE-ERROR %s" % str(e).encode())); self.dec = None; return
            if getattr(self.dec, "err", None):
                self.frames.append(("X", b"DECODE-ERROR %s" % self.dec.err.encode())); self.dec.err = None
        self.buf += raw
        self.parse()

    def parse(self):
        while len(self.buf) >= 4:
            size = struct.unpack(">i", self.buf[:4])[0]
            if size < 4 or size > 64 * 1024 * 1024:
                self.frames.append(("G", bytes(self.buf[:64]))); self.buf.clear(); return
            if len(self.buf) < 4 + size:
                return
            ft = struct.unpack(">i", self.buf[4:8])[0]
            data = bytes(self.buf[8:4 + size]); del self.buf[:4 + size]
            if ft == 0 and data == b"_heartbeat_":
                self.hb += 1
                continue
            if ft == 2:
                if len(data) >= 26:
                    self.ids.append(data[10:26])
                    ts = struct.unpack(">q", data[:8])[0]
                    if abs(ts - time.time_ns()) > 120e9:
                        self.flags.append("timestamp-off")
                self.frames.append(("M", data))
            elif ft == 0:
                self.frames.append(("R", data))
                if data.startswith(b"{") and b'"max_rdy_count"' in data:
                    try:
                        js = json.loads(data)
                    except Exception:
                        js = {}
                    up = "snappy" if js.get("snappy") else "deflate" if js.get("deflate") else None
                    if up and self.dec is None:
                        rest = bytes(self.buf); self.buf.clear()
                        if up == "snappy":
                            self.dec = SnappyDec(); self.enc = "snappy"
                        else:
                            self.dec = zlib.decompressobj(-15); self.enc = zlib.compressobj(6, zlib.DEFLATED, -15)
                        self.frames.append(("X", b"UPGRADE-" + up.encode()))
                        if rest:
                            self.on_data(rest)
                        return
            elif ft == 1:
                self.frames.append(("E", data))
            else:
                self.frames.append(("X", b"FRAME type=%d %r" % (ft, data)))

class Execution:
    def __init__(self, port, steps, nonce, quiet=0.06, step_max=1.5, final_quiet=0.4, final_max=2.0):
        self.port, self.steps, self.nonce = port, steps, nonce
        self.quiet, self.step_max, self.final_quiet, self.final_max = quiet, step_max, final_quiet, final_max
        self.conns = {}
        self.errors = []

    def render(self, data):
        data = data.replace(NONCE_PH, self.nonce)
        def rep(m):
            c = int(m.group(1)); w = m.group(2)
            cn = self.conns.get(c)
            if cn is None or not cn.ids:
                return b"feedfacefeedface"
            if w == b"L":
                return cn.ids[-1]
            if w == b"P":
                return cn.ids[-2] if len(cn.ids) >= 2 else cn.ids[0]
            return cn.ids[0]
        return re.sub(rb"@I(\d)([LPF])@{12}", rep, data)

    def readable(self):
        return [c for c in self.conns.values() if c.closed is None and not c.client_closed]

    def pump(self, quiet, maxt, fixed=None):
        t0 = time.time(); last = t0
        while True:
            now = time.time()
            left = (t0 + fixed - now) if fixed is not None else min(last + quiet, t0 + maxt) - now
            if left <= 0:
                return
            live = self.readable()
            if not live:
                if fixed is not None:
                    time.sleep(left)
                return
            r, _, _ = select.select([c.s for c in live], [], [], left)
            for c in live:
                if c.s not in r:
                    continue
                try:
                    d = c.s.recv(65536)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    d = "RST"
                except OSError as e:
                    d = "ERR"
                if isinstance(d, str) or d == b"":
                    c.closed = ("EOF" if d == b"" else d, c.sends, round(time.time() - c.last_send_t, 2))
                    if c.buf:
                        c.frames.append(("P", b"PARTIAL-FRAME %d bytes" % len(c.buf)))
                else:
                    c.on_data(d)
                last = time.time()

    def send_split(self, c, data, split):
        if split is None:
            c.send(data)
        elif split == "byte":
            for i in range(len(data)):
                c.send(data[i:i + 1]); time.sleep(0.003)
        else:
            cuts = sorted(set(min(len(data), max(0, int(f * len(data)))) for f in split))
            prev = 0
            for cut in cuts + [len(data)]:
                if cut > prev:
                    c.send(data[prev:cut]); time.sleep(0.02)
                prev = cut
        c.sends += 1
        c.last_send_t = time.time()

    def run(self, stop_event=None):
        for st in self.steps:
            k = st["k"]
            try:
                if k == "C":
                    c = Conn(st["c"], self.port)
                    self.conns[st["c"]] = c
                    if st["data"]:
                        self.send_split(c, st["data"], st["split"])
                elif k == "S":
                    c = self.conns.get(st["c"])
                    if c is None or c.closed is not None or c.client_closed:
                        continue
                    self.send_split(c, self.render(st["data"]), st["split"])
                elif k == "W":
                    self.pump(0, 0, fixed=st["t"])
                elif k == "X":
                    c = self.conns.get(st["c"])
                    if c is not None and not c.client_closed:
                        self.pump(self.quiet, self.step_max)
                        c.client_closed = True
                        try:
                            c.s.close()
                        except OSError:
                            pass
                elif k == "H":
                    c = self.conns.get(st["c"])
                    if c is not None and not c.client_closed and c.closed is None:
                        try:
                            c.s.shutdown(socket.SHUT_WR)
                        except OSError:
                            pass
                        c.sends += 1; c.last_send_t = time.time()
            except Exception as e:
                self.errors.append("%s: %s" % (e.__class__.__name__, e))
            self.pump(self.quiet, self.step_max)
        self.pump(self.final_quiet, self.final_max)
        for c in self.conns.values():
            if c.closed is None and c.buf:
                c.frames.append(("P", b"PARTIAL-FRAME %d bytes" % len(c.buf)))
            try:
                c.s.close()
            except OSError:
                pass
        return self

    def result(self):
        """normalised, comparable result"""
        labels = {}
        for i in sorted(self.conns):
            for mid in self.conns[i].ids:
                if mid not in labels:
                    labels[mid] = "id#%d" % (len(labels) + 1)
        out = {}
        for i in sorted(self.conns):
            c = self.conns[i]
            fr = []
            for kind, data in c.frames:
                if kind == "M":
                    if len(data) < 26:
                        fr.append("MSG-SHORT %r" % data); continue
                    att = struct.unpack(">H", data[8:10])[0]; mid = data[10:26]; body = data[26:]
                    b = repr(body) if len(body) <= 60 else "len=%d sha1=%s" % (len(body), hashlib.sha1(body).hexdigest()[:10])
                    extra = "" if re.fullmatch(rb"[0-9a-f]{16}", mid) else " !id-format"
                    fr.append("MSG att=%d %s %s%s" % (att, labels[mid], b, extra))
                else:
                    txt = data
                    for mid, lab in labels.items():
                        if mid in txt:
                            txt = txt.replace(mid, lab.encode())
                    txt = txt.replace(self.nonce, b"<N>")
                    fr.append("%s %r" % ({"R": "RESP", "E": "ERR", "X": "X", "G": "GARBAGE", "P": ""}[kind], txt))
            if c.client_closed and c.closed is None:
                close = "client-closed"
            elif c.closed is None:
                close = "OPEN"
            else:
                close = "CLOSED after send #%d" % c.closed[1]
            out[i] = dict(frames=fr, close=close, hb=c.hb, close_kind=c.closed[0] if c.closed else None,
                          close_dt=c.closed[2] if c.closed else None, flags=sorted(set(c.flags)))
        return out

# ============================================================================ comparison
def mask(s):
    s = re.sub(r"id#\d+", "id#", s)
    return re.sub(r"^(MSG att=\d+ id#) .*$", r"\1 <body>", s)

def compare(a, b):
    """-> (status, signature, detail); status in same/soft/diff"""
    problems = []
    soft = []
    for i in sorted(set(a) | set(b)):
        x = a.get(i); y = b.get(i)
        if x is None or y is None:
            problems.append(("conn", "conn %d missing" % i, "")); continue
        if x["frames"] != y["frames"]:
            fx, fy = x["frames"], y["frames"]
            if sorted(f for f in fx if f.startswith("MSG")) == sorted(f for f in fy if f.startswith("MSG")) and \
                    [f for f in fx if not f.startswith("MSG")] == [f for f in fy if not f.startswith("MSG")]:
                soft.append("conn %d: only the order of message frames vs other frames differs" % i)
            else:
                k = 0
                while k < min(len(fx), len(fy)) and fx[k] == fy[k]:
                    k += 1
                ra = fx[k] if k < len(fx) else "<end>"; rb_ = fy[k] if k < len(fy) else "<end>"
                problems.append(("frames", "conn %d frame %d: ref %s | ours %s" % (i, k, ra, rb_),
                                 "%s | %s" % (mask(ra), mask(rb_))))
                continue
        if x["close"] != y["close"]:
            problems.append(("close", "conn %d: ref %s | ours %s" % (i, x["close"], y["close"]),
                             "%s | %s" % (re.sub(r"#\d+", "#", x["close"]), re.sub(r"#\d+", "#", y["close"]))))
        elif x["close_dt"] is not None and y["close_dt"] is not None and \
                max(x["close_dt"], y["close_dt"]) > 0.6 and abs(x["close_dt"] - y["close_dt"]) > 0.6:
            problems.append(("closetime", "conn %d: server closed %.2fs after last send (ref) vs %.2fs (ours)" % (
                i, x["close_dt"], y["close_dt"]), "close timing"))
        if abs(x["hb"] - y["hb"]) > 1:
            problems.append(("hb", "conn %d: heartbeats ref %d ours %d" % (i, x["hb"], y["hb"]),
                             "heartbeats %s" % ("more" if y["hb"] > x["hb"] else "fewer")))
        if y["flags"] and not x["flags"]:
            problems.append(("flags", "conn %d: %s" % (i, y["flags"]), str(y["flags"])))
    if problems:
        kind, text, sig = problems[0]
        return "diff", kind + ": " + sig, [p[1] for p in problems]
    if soft:
        return "soft", "interleave", soft
    return "same", None, []

# ============================================================================ pretty printing of steps
def show_bytes(b):
    return repr(bytes(b))

def fmt_steps(steps):
    out = []
    for n, st in enumerate(steps):
        k = st["k"]
        if k == "C":
            out.append("%2d  conn%d CONNECT, send %s%s" % (n, st["c"], show_bytes(st["data"]),
                                                          "  split at %s" % st["split"] if st["split"] else ""))
        elif k == "S":
            sp = ""
            if st["split"] == "byte":
                sp = "  (sent byte by byte, 3 ms apart)"
            elif st["split"]:
                cuts = sorted(set(int(f * len(st["data"])) for f in st["split"]))
                sp = "  (split into writes at byte offsets %s, 20 ms apart)" % cuts
            out.append("%2d  conn%d SEND %s%s" % (n, st["c"], show_bytes(st["data"]), sp))
        elif k == "W":
            out.append("%2d  WAIT %.2fs" % (n, st["t"]))
        elif k == "X":
            out.append("%2d  conn%d client CLOSE" % (n, st["c"]))
        elif k == "H":
            out.append("%2d  conn%d client HALF-CLOSE (SHUT_WR)" % (n, st["c"]))
    out.append("    (@NNNNN@ = 7-digit run nonce; @I<c><L|P|F>@@@@@@@@@@@@ = last/previous/first message ID "
               "received so far on conn c, or 'feedfacefeedface' if none)")
    return "\n".join(out)

def fmt_result(res):
    out = []
    for i in sorted(res):
        r = res[i]
        out.append("  conn%d: %s; heartbeats=%d%s%s" % (i, r["close"], r["hb"],
                                                       "; close kind %s, %.2fs after last send" % (r["close_kind"], r["close_dt"]) if r["close_kind"] else "",
                                                       "; FLAGS %s" % r["flags"] if r["flags"] else ""))
        for f in r["frames"]:
            out.append("      " + (f if len(f) < 400 else f[:300] + "...(%d chars)" % len(f)))
    return "\n".join(out)

# ============================================================================ driver
class Harness:
    def __init__(self, a):
        self.a = a
        self.brokers = {}
        self.fsname = None
        self.nonce_ctr = random.Random(time.time_ns()).randint(0, 10 ** 6) * 3

    # Every run uses fresh topic names (a 7-digit nonce). Topics a and b with channels c0,c1,c2 are created over
    # HTTP on all brokers >= AGE s before the run uses them, and all topics of a run are deleted afterwards:
    # nsqd's timeout/deferred scanner only knows channels that existed at its last 5-s refresh and samples at most
    # 20 channels per 100 ms, so fresh channels or many channels make ref's REQ/DPUB/msg_timeout latency erratic.
    AGE = 5.4
    AHEAD = 2

    def http(self, b, method, path):
        import urllib.request, urllib.error
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (b.http, path), method=method,
                                     data=b"" if method == "POST" else None)
        try:
            return urllib.request.urlopen(req, timeout=3).read()
        except urllib.error.HTTPError as e:
            return e.read()
        except Exception as e:
            return str(e).encode()

    def prepare(self, nonce):
        n = nonce.decode()
        for b in self.brokers.values():
            for t in ("a", "b"):
                self.http(b, "POST", "/topic/create?topic=t%s%s" % (n, t))
                for c in ("c0", "c1", "c2"):
                    self.http(b, "POST", "/channel/create?topic=t%s%s&channel=%s" % (n, t, c))

    def cleanup(self, nonce, labels):
        from urllib.parse import quote
        n = nonce.decode()
        for lb in labels:
            b = self.brokers[lb]
            try:
                st = json.loads(self.http(b, "GET", "/stats?format=json&include_clients=false&include_mem=false"))
                names = [t["topic_name"] for t in st.get("topics") or [] if n in t["topic_name"]]
            except Exception:
                names = ["t%sa" % n, "t%sb" % n]
            for t in names:
                self.http(b, "POST", "/topic/delete?topic=" + quote(t))

    def nonce(self):
        while len(self.pool) < self.AHEAD + 1:
            self.nonce_ctr += 1
            nn = b"%07d" % (self.nonce_ctr % 10 ** 7)
            self.prepare(nn)
            self.pool.append((nn, time.time()))
        nn, t = self.pool.pop(0)
        time.sleep(max(0, t + self.AGE - time.time()))
        return nn

    def start(self, fsname):
        self.stop()
        self.pool = []
        fs = FLAGSETS[fsname]
        self.fsname = fsname
        self.brokers = {"ref": Broker("ref", self.a.ref, fs["flags"]), "ref2": Broker("ref2", self.a.ref, fs["flags"])}
        for c in self.cores:
            self.brokers["ours-c%d" % c] = Broker("ours-c%d" % c, self.a.ours, fs["flags"], cores=c)
        # ref2 starts REF2_DELAY s after ref: nsqd refreshes the channel list its timeout/deferred scanner samples
        # only every 5 s, so fresh channels see REQ/DPUB/msg_timeout expiry up to 5 s late depending on that phase
        # (ours scans every channel every 100 ms, a documented difference). With ref and ref2 out of phase such
        # sequences show up as ref-vs-ref unstable and are ignored instead of being reported.
        t0 = time.time()
        for lb, b in self.brokers.items():
            if lb != "ref2":
                b.start()
        time.sleep(max(0, t0 + REF2_DELAY - time.time()))
        self.brokers["ref2"].start()

    def stop(self):
        for b in self.brokers.values():
            b.stop()
        self.brokers = {}

    def execute(self, steps, labels):
        nonce = self.nonce()
        outs = {}
        def work(lb):
            try:
                ex = Execution(self.brokers[lb].tcp, steps, nonce, quiet=self.a.quiet).run()
                outs[lb] = ex.result()
            except Exception:
                outs[lb] = {"__exc__": traceback.format_exc()}
        th = [threading.Thread(target=work, args=(lb,)) for lb in labels]
        for t in th:
            t.start()
        for t in th:
            t.join()
        self.cleanup(nonce, labels)
        crashes = {}
        for lb in labels:
            b = self.brokers[lb]
            if not b.alive():
                crashes[lb] = b.log_tail()
                b.stop(); b.start()
        return outs, crashes

def self_publishers(steps):
    """connections that published to a topic they also sent a SUB for (known interleave difference)"""
    subs, pubs = {}, {}
    for st in steps:
        if st["k"] != "S":
            continue
        for line in st["data"].split(b"\n"):
            w = line.rstrip(b"\r").split(b" ")
            if w[0] == b"SUB" and len(w) > 1:
                subs.setdefault(st["c"], set()).add(w[1])
            elif w[0] in (b"PUB", b"MPUB", b"DPUB") and len(w) > 1:
                pubs.setdefault(st["c"], set()).add(w[1])
    return {c for c in subs if subs[c] & pubs.get(c, set())}

def judge(outs, crashes, ours_labels, steps=None):
    """-> ('unstable'|'same'|'soft'|'diff', {label: (status, sig, details)})"""
    if "__exc__" in outs.get("ref", {}) or "__exc__" in outs.get("ref2", {}):
        return "unstable", {}
    if "ref2" in outs:
        st, _, _ = compare(outs["ref"], outs["ref2"])
        if st != "same" or "ref" in crashes or "ref2" in crashes:
            return "unstable", {}
    per = {}
    for lb in ours_labels:
        if lb in crashes:
            per[lb] = ("diff", "CRASH", ["broker crashed: %r" % crashes[lb][-800:]]); continue
        if "__exc__" in outs[lb]:
            per[lb] = ("diff", "TESTER-EXC", [outs[lb]["__exc__"]]); continue
        per[lb] = compare(outs["ref"], outs[lb])
        if per[lb][0] == "soft" and steps is not None:
            selfp = self_publishers(steps)
            other = [d for d in per[lb][2] if int(d.split()[1].rstrip(":")) not in selfp]
            if other:       # interleaving differs on a connection that never published to its own topic
                per[lb] = ("diff", "interleave (not self-publish)", other)
    sts = [v[0] for v in per.values()]
    return ("diff" if "diff" in sts else "soft" if "soft" in sts else "same"), per

def confirm(h, steps, outs0, all_labels, ours_labels, n):
    """re-run n times; -> (True, summary) if all ref outputs equal and ours differs from them every time"""
    refs = [outs0["ref"], outs0.get("ref2")]
    ours_all = {lb: [outs0[lb]] for lb in ours_labels}
    for _ in range(n):
        o, cr = h.execute(steps, all_labels)
        if cr.get("ref") or cr.get("ref2"):
            return False, "ref crashed"
        refs += [o["ref"], o["ref2"]]
        for lb in ours_labels:
            if lb in cr:
                o[lb] = {"__crash__": True}
            ours_all[lb].append(o[lb])
    for r in refs[1:]:
        if r is None or "__exc__" in r or compare(refs[0], r)[0] != "same":
            return False, "ref varies across %d ref runs" % len(refs)
    differing = []
    for lb, lst in ours_all.items():
        bad = sum(1 for x in lst if "__crash__" in x or "__exc__" in x or compare(refs[0], x)[0] == "diff")
        if bad == len(lst):
            differing.append(lb)
    if not differing:
        return False, "ours matched ref in some run"
    return True, "ref identical in %d runs; %s differ in every run (%d)" % (len(refs), ",".join(differing), n + 1)

def ddmin(steps, test, budget_s):
    """classic delta debugging over the step list; test(steps)->bool (True = still failing)"""
    t_end = time.time() + budget_s
    n = 2
    cur = list(steps)
    while len(cur) >= 2 and time.time() < t_end:
        chunk = max(1, len(cur) // n)
        reduced = False
        for i in range(0, len(cur), chunk):
            if time.time() >= t_end:
                break
            cand = cur[:i] + cur[i + chunk:]
            if not cand or cand[0]["k"] != "C":
                continue
            if test(cand):
                cur = cand; n = max(n - 1, 2); reduced = True
                break
        if not reduced:
            if chunk == 1:
                break
            n = min(len(cur), n * 2)
    # simplify: unsplit sends, then drop waits one by one shorter
    for i in range(len(cur)):
        if time.time() >= t_end:
            break
        st = cur[i]
        if st["k"] in ("S", "C") and st.get("split"):
            cand = cur[:i] + [dict(st, split=None)] + cur[i + 1:]
            if test(cand):
                cur = cand
    return cur

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ours"); ap.add_argument("ref")
    ap.add_argument("--seconds", type=float, default=None, help="total fuzzing time budget (default 300 if no --count)")
    ap.add_argument("--count", type=int, default=None, help="number of sequences")
    ap.add_argument("--seed", type=int, default=1, help="first seed (seeds are consecutive)")
    ap.add_argument("--flagset", default=",".join(FLAGSETS), help="comma list of: " + ",".join(FLAGSETS))
    ap.add_argument("--per-flagset", type=int, default=12, help="sequences per flag-set block before switching")
    ap.add_argument("--cores", default="1,2")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--conns", type=int, default=3)
    ap.add_argument("--quiet", type=float, default=0.06, help="quiet time that ends the read after a step")
    ap.add_argument("--out", default="/tmp/parity-random")
    ap.add_argument("--no-reduce", action="store_true")
    ap.add_argument("--confirm", type=int, default=3, help="extra runs to confirm a difference")
    ap.add_argument("--reduce-seconds", type=float, default=180)
    ap.add_argument("--replay", type=int, default=None, help="run one seed (with --flagset NAME) and print everything")
    ap.add_argument("-v", action="store_true")
    a = ap.parse_args()
    cores = [int(x) for x in a.cores.split(",") if x]
    fsnames = [x for x in a.flagset.split(",") if x]
    for f in fsnames:
        if f not in FLAGSETS:
            ap.error("unknown flag set %s" % f)
    os.makedirs(a.out, exist_ok=True)
    h = Harness(a); h.cores = cores
    ours_labels = ["ours-c%d" % c for c in cores]
    all_labels = ["ref", "ref2"] + ours_labels

    def cleanup(*_):
        h.stop()
        sys.exit(3)
    signal.signal(signal.SIGTERM, cleanup)

    try:
        if a.replay is not None:
            fsn = fsnames[0]
            h.start(fsn)
            steps = Gen(a.replay, FLAGSETS[fsn], a.steps, a.conns).generate()
            print(fmt_steps(steps))
            outs, crashes = h.execute(steps, all_labels)
            verdict, per = judge(outs, crashes, ours_labels, steps)
            for lb in all_labels:
                print("== %s" % lb); print(fmt_result(outs[lb]) if "__exc__" not in outs[lb] else outs[lb]["__exc__"])
            print("verdict:", verdict)
            for lb, (st, sig, det) in per.items():
                print(lb, st, sig); [print("   ", d) for d in det]
            return 0

        budget = a.seconds if a.seconds is not None else (None if a.count else 300)
        t_start = time.time()
        stats = dict(run=0, same=0, soft=0, diff=0, unstable=0, confirmed=0, flaky_diff=0)
        per_fs = {f: dict(run=0, same=0, soft=0, diff=0, unstable=0) for f in fsnames}
        distinct = {}      # signature -> record
        soft_examples = []
        seed = a.seed
        fsi = 0
        log = open(os.path.join(a.out, "log.txt"), "a")
        def P(*x):
            s = " ".join(str(y) for y in x)
            print(s, flush=True); log.write(s + "\n"); log.flush()
        P("=== parity-random start %s: ours=%s ref=%s flagsets=%s seed=%d" % (time.ctime(), a.ours, a.ref, fsnames, a.seed))
        def done():
            if a.count is not None and stats["run"] >= a.count:
                return True
            return budget is not None and time.time() - t_start >= budget
        while not done():
            fsn = fsnames[fsi % len(fsnames)]; fsi += 1
            fs = FLAGSETS[fsn]
            h.start(fsn)
            for _ in range(a.per_flagset):
                if done():
                    break
                steps = Gen(seed, fs, a.steps, a.conns).generate()
                t0 = time.time()
                outs, crashes = h.execute(steps, all_labels)
                verdict, per = judge(outs, crashes, ours_labels, steps)
                stats["run"] += 1; per_fs[fsn]["run"] += 1
                if verdict == "diff":
                    # confirm: CONFIRM more runs; every ref output (2 per run) must be identical and ours must
                    # differ from it every time; a ref that varies (e.g. Go's random select between a channel's
                    # memory and disk queue) makes the sequence unstable
                    ok, why = confirm(h, steps, outs, all_labels, ours_labels, a.confirm)
                    if not ok:
                        stats["flaky_diff"] += 1
                        verdict = "unstable"
                        P("[%s seed %d] diff not confirmed (%s) -> counted unstable" % (fsn, seed, why))
                stats[verdict] += 1; per_fs[fsn][verdict] += 1
                P("[%s seed %d] %d steps %.1fs: %s%s" % (fsn, seed, len(steps), time.time() - t0, verdict,
                                                      "" if verdict != "diff" else " " + "; ".join(
                                                          "%s: %s" % (lb, v[1]) for lb, v in per.items() if v[0] == "diff")))
                if verdict == "soft" and len(soft_examples) < 5:
                    soft_examples.append((fsn, seed, per))
                if verdict == "diff":
                    for lb, (st, sig, det) in per.items():
                        if st != "diff":
                            continue
                        key = sig
                        rec = distinct.get(key)
                        if rec is None:
                            rec = distinct[key] = dict(sig=sig, fs=fsn, seed=seed, labels=set(), count=0, steps=steps,
                                                       details={}, outs=outs, reduced=None)
                        rec["labels"].add(lb); rec["count"] += 1
                        if lb not in rec["details"]:
                            rec["details"][lb] = det
                if a.v and verdict in ("diff",):
                    for lb in all_labels:
                        P("== %s" % lb); P(fmt_result(outs[lb]) if "__exc__" not in outs[lb] else outs[lb]["__exc__"])
                seed += 1
            # reduce new distinct diffs of this flag set while its brokers are up
            if not a.no_reduce:
                for rec in distinct.values():
                    if rec["reduced"] is not None or rec["fs"] != fsn:
                        continue
                    twin = [x for x in distinct.values() if x is not rec and x["seed"] == rec["seed"] and x["fs"] == fsn
                            and x["reduced"] not in (None, "skipped")]
                    if twin:        # same sequence, other ours variant with another first difference: reduced once
                        rec["reduced"] = "skipped"; continue
                    lb = sorted(rec["labels"])[0]
                    target = rec["sig"]
                    ntests = [0]
                    def test(cand, lb=lb, target=target):
                        ntests[0] += 1
                        o, cr = h.execute(cand, ["ref", "ref2", lb])
                        v, p = judge(o, cr, [lb], cand)
                        return v == "diff" and p[lb][1] == target
                    P("reducing [%s seed %d] %s (%d steps) on %s ..." % (fsn, rec["seed"], target, len(rec["steps"]), lb))
                    red = ddmin(rec["steps"], test, a.reduce_seconds)
                    # final: run the reduced sequence again on everything, 1 + CONFIRM times
                    o1, c1 = h.execute(red, all_labels)
                    v1, p1 = judge(o1, c1, ours_labels, red)
                    ok, why = confirm(h, red, o1, all_labels, ours_labels, a.confirm) if v1 == "diff" else (False, v1)
                    rec["reduced"] = dict(steps=red, outs=o1, verdict=(v1, why), per=p1, tests=ntests[0], ref_stable=ok)
                    v2 = why
                    P("  -> %d steps after %d tests; final verdicts %s/%s" % (len(red), ntests[0], v1, v2))
            write_report(a, stats, per_fs, distinct, soft_examples, t_start)
        h.stop()
        write_report(a, stats, per_fs, distinct, soft_examples, t_start)
        P("=== done: %s; %d distinct differences; report %s" % (stats, len(distinct), os.path.join(a.out, "report.md")))
        return 1 if distinct else 0
    finally:
        h.stop()

def write_report(a, stats, per_fs, distinct, soft_examples, t_start):
    L = ["# parity-random report", "", "ours `%s`, ref `%s`, %s, %.0f s" % (a.ours, a.ref, time.ctime(), time.time() - t_start), "",
         "sequences run: %(run)d, matched: %(same)d, soft (interleave only): %(soft)d, differing (confirmed): %(diff)d, "
         "ref-vs-ref unstable (ignored): %(unstable)d (of which a diff that did not reproduce: %(flaky_diff)d)" % stats, "",
         "| flag set | run | same | soft | diff | unstable |", "|---|---|---|---|---|---|"]
    for f, s in per_fs.items():
        L.append("| %s | %d | %d | %d | %d | %d |" % (f, s["run"], s["same"], s["soft"], s["diff"], s["unstable"]))
    L += ["", "## distinct differences (%d)" % len(distinct), ""]
    for n, rec in enumerate(distinct.values(), 1):
        L += ["### %d. `%s`" % (n, rec["sig"]), "",
              "flag set `%s` (%s), first seed %d, seen %d times, variants: %s" % (
                  rec["fs"], " ".join(FLAGSETS[rec["fs"]]["flags"]) or "defaults", rec["seed"], rec["count"],
                  ", ".join(sorted(rec["labels"]))), ""]
        for lb, det in rec["details"].items():
            L.append("- %s: %s" % (lb, "; ".join(det)[:1500]))
        red = rec.get("reduced")
        if red == "skipped":
            L.append("(not reduced separately: the same sequence was reduced for another variant above)")
            red = None
        steps = red["steps"] if red else rec["steps"]
        outs = red["outs"] if red else rec["outs"]
        L += ["", "%s sequence (%d steps):" % ("reduced" if red else "original (not reduced)", len(steps)), "```", fmt_steps(steps), "```"]
        if red:
            L.append("reduction: %d test runs; reduced sequence re-run: verdict %s; confirmation (ref stable and ours differing in all re-runs): %s" % (
                red["tests"], red["verdict"], red["ref_stable"]))
            for lb, (st, sig, det) in red["per"].items():
                L.append("- %s on reduced: %s %s" % (lb, st, "; ".join(det)[:800]))
        for lb in outs:
            if "__exc__" in outs[lb]:
                L += ["%s: exception" % lb, "```", outs[lb]["__exc__"], "```"]
            else:
                L += ["%s:" % lb, "```", fmt_result(outs[lb]), "```"]
        L.append("")
    if soft_examples:
        L += ["## soft examples (only interleaving differs)", ""]
        for fsn, seed, per in soft_examples:
            L.append("- [%s seed %d] %s" % (fsn, seed, {lb: v[2] for lb, v in per.items() if v[0] == "soft"}))
    with open(os.path.join(a.out, "report.md"), "w") as f:
        f.write("\n".join(L) + "\n")

if __name__ == "__main__":
    sys.exit(main())
