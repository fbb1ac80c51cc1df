#!/usr/bin/env python3
"""Differential tester: nsqd-uring (ours) vs real nsqd v1.3.0 (ref), TCP protocol V2.

usage: scripts/parity-tcp.py OURS_BIN REF_BIN [--only SUBSTR] [--cores 1,2] [--out FILE] [-v]

Runs every scripted scenario against ref, ours --cores 1 and ours --cores 2 (the
three brokers of one flag-config run side by side, one thread each) and compares
what a client sees:
  * every response / error frame (type + body, byte for byte),
  * message frames (attempts + body; the 16-byte ID is replaced by a per-scenario
    label id#N so re-deliveries of the same message are recognisable, the 8-byte
    timestamp is only checked for plausibility),
  * heartbeats, connection close by the server (and, for timed steps, when),
  * topic/channel counters in /stats (delta over the scenario) as a side-effect check,
  * broker crashes.
Stdlib only. Ports 45000-49999, 127.0.0.1 only, temp data dirs removed afterwards.
"""
import argparse, hashlib, http.server, json, os, random, re, select, shutil, signal, socket, ssl
import struct, subprocess, sys, tempfile, threading, time, urllib.error, urllib.request, zlib

# Results go under the repository's target/ (ignored by git), not beside the script.
HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "parity")
os.makedirs(HERE, exist_ok=True)
PORT_LO, PORT_HI = 45000, 49999

# ----------------------------------------------------------------------------- helpers
sys.dont_write_bytecode = True  # no __pycache__ beside the scripts
from loopback_ports import free_ports  # noqa: E402


def ports(n):
    return free_ports(n, PORT_LO, PORT_HI)

def L(s):
    """a command line (str or bytes) + \\n"""
    return (s.encode() if isinstance(s, str) else s) + b"\n"

def B(cmd, body):
    return L(cmd) + struct.pack(">i", len(body)) + body

def SZ(cmd, size, body=b""):
    """command line + explicit 4-byte size (taken mod 2**32) + raw body"""
    return L(cmd) + struct.pack(">I", size & 0xFFFFFFFF) + body

def J(obj):
    return json.dumps(obj, separators=(",", ":")).encode()

def IDENT(x):
    return B("IDENTIFY", x if isinstance(x, bytes) else J(x))

def PUB(t, body=b"x"):
    return B("PUB " + t, body)

def DPUB(t, d, body=b"x"):
    return B("DPUB %s %s" % (t, d), body)

def MPUB(t, msgs):
    return B("MPUB " + t, MPB(msgs))

def MPB(msgs):
    return struct.pack(">i", len(msgs)) + b"".join(struct.pack(">i", len(m)) + m for m in msgs)

# ----------------------------------------------------------------------------- snappy / crc32c
from nsq_snappy import SnappyFrameDecoder, snappy_frame_encode  # noqa: E402

# ----------------------------------------------------------------------------- fake auth server
AUTH_REPLIES = {
    b"good": (200, {"ttl": 3600, "identity": "idy", "identity_url": "http://x/y",
                    "authorizations": [{"topic": ".*", "channels": [".*"], "permissions": ["subscribe", "publish"]}]}),
    b"pubonly": (200, {"ttl": 3600, "identity": "p", "identity_url": "",
                       "authorizations": [{"topic": "^p", "channels": [".*"], "permissions": ["publish"]}]}),
    b"none": (200, {"ttl": 3600, "identity": "n", "identity_url": "", "authorizations": []}),
    b"bad": (403, {"message": "nope"}),
    b"garbage": (200, None),
}

class AuthHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        from urllib.parse import urlparse, parse_qs
        q = parse_qs(urlparse(self.path).query)
        secret = q.get("secret", [""])[0].encode()
        code, obj = AUTH_REPLIES.get(secret, (403, {"message": "unknown"}))
        body = b"not json{" if obj is None else json.dumps(obj).encode()
        self.send_response(code); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

# ----------------------------------------------------------------------------- brokers
class Broker:
    def __init__(self, label, binpath, flags, cores=None):
        self.label, self.bin, self.flags, self.cores = label, binpath, list(flags), cores
        self.proc = None; self.dir = None; self.crashes = []

    def start(self):
        self.dir = tempfile.mkdtemp(prefix="difftcp-")
        self.tcp, self.http, self.https = ports(3)
        args = [self.bin, "--data-path", self.dir, "--tcp-address", "127.0.0.1:%d" % self.tcp,
                "--http-address", "127.0.0.1:%d" % self.http, "--https-address", "127.0.0.1:%d" % self.https]
        if self.cores:
            args += ["--cores", str(self.cores)]
        args += self.flags
        self.log = open(os.path.join(self.dir, "log.txt"), "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        t0 = time.time()
        while time.time() - t0 < 8:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited at start: %s" % (self.label, open(self.log.name, "rb").read()[-2000:]))
            try:
                socket.create_connection(("127.0.0.1", self.tcp), timeout=0.5).close()
                try:
                    urllib.request.urlopen("http://127.0.0.1:%d/ping" % self.http, timeout=1).read()
                except urllib.error.HTTPError:
                    pass   # e.g. --tls-required: HTTP answers 403, still up
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("%s did not come up" % self.label)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill(); self.proc.wait()
        if self.dir:
            try:
                self.log.close()
            except Exception:
                pass
            shutil.rmtree(self.dir, ignore_errors=True)
        self.proc = None; self.dir = None

    def restart(self):
        tail = b""
        try:
            self.log.flush(); tail = open(self.log.name, "rb").read()[-1500:]
        except Exception:
            pass
        self.stop(); self.start()
        return tail

    def stats(self):
        try:
            d = json.loads(urllib.request.urlopen("http://127.0.0.1:%d/stats?format=json" % self.http, timeout=3).read())
        except urllib.error.HTTPError as e:
            return {"__error__": "HTTP %d" % e.code}
        except Exception as e:
            return {"__error__": str(e)}
        out = {}
        for t in d.get("topics") or []:
            chans = {}
            for c in t.get("channels") or []:
                chans[c["channel_name"]] = (
                    "depth=%s inflight=%s deferred=%s msgs=%s requeue=%s timeout=%s clients=%d paused=%s" % (
                        c.get("depth"), c.get("in_flight_count"), c.get("deferred_count"), c.get("message_count"),
                        c.get("requeue_count"), c.get("timeout_count"), len(c.get("clients") or []), c.get("paused")))
            out[t["topic_name"]] = ("depth=%s msgs=%s bytes=%s paused=%s" % (
                t.get("depth"), t.get("message_count"), t.get("message_bytes"), t.get("paused")), chans)
        return out

# ----------------------------------------------------------------------------- client connection
class Conn:
    def __init__(self, name, port, magic, run, sock=None):
        self.name, self.run = name, run
        self.s = sock or socket.create_connection(("127.0.0.1", port), timeout=5)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()          # decoded (plain) byte stream not yet parsed into frames
        self.dec = None                 # decompressor for receive
        self.enc = None                 # 'deflate' compressobj or 'snappy'
        self.snappy_first = True
        self.pending = []               # pending upgrades after IDENTIFY response
        self.wait_ok = False
        self.closed = False
        self.last_id = None
        if magic:
            self.send(magic)

    # -- sending
    def send(self, data):
        if self.closed:
            return "send-skipped(closed)"
        if self.enc == "snappy":
            data = snappy_frame_encode(data, self.snappy_first); self.snappy_first = False
        elif self.enc is not None:
            data = self.enc.compress(data) + self.enc.flush(zlib.Z_SYNC_FLUSH)
        try:
            self.s.sendall(data)
        except OSError as e:
            return "send-error(%s)" % e.__class__.__name__
        return None

    def send_bytewise(self, data, gap=0.002):
        for i in range(len(data)):
            r = self.send(data[i:i + 1])
            if r:
                return r
            time.sleep(gap)
        return None

    # -- receiving
    def _recv(self, timeout):
        """returns bytes, b'' on EOF, None on timeout, 'RST' on reset"""
        if isinstance(self.s, ssl.SSLSocket) and self.s.pending():
            return self.s.recv(65536)
        r, _, _ = select.select([self.s], [], [], max(0, timeout))
        if not r:
            return None
        try:
            return self.s.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return "RST"
        except ssl.SSLError as e:
            return "SSLERR:%s" % e
        except OSError as e:
            return "ERR:%s" % e

    def read(self, quiet, maxt, fixed, until_msg=False):
        """collect events; returns list of (t, text, note)"""
        evs = []
        t0 = time.time(); last = t0
        while not self.closed:
            now = time.time()
            if fixed:
                left = t0 + fixed - now
            else:
                left = min(last + quiet, t0 + maxt) - now
            if left <= 0:
                break
            d = self._recv(left)
            if d is None:
                continue
            if isinstance(d, str) or d == b"":
                self._ingest(b"", evs, t0)
                kind = "EOF" if d == b"" else d
                evs.append((time.time() - t0, "CLOSED", kind))
                self.closed = True
                break
            last = time.time()
            self._ingest(d, evs, t0)
            if until_msg and any(e[1].startswith("MSG") for e in evs):
                break
        return evs

    def _ingest(self, raw, evs, t0):
        if raw:
            if self.dec is not None:
                try:
                    raw = self.dec.decompress(raw) if hasattr(self.dec, "decompress") else self.dec.feed(raw)
                except Exception as e:
                    evs.append((time.time() - t0, "DECODE-ERROR %s" % e, None)); self.dec = None; return
                if getattr(self.dec, "err", None):
                    evs.append((time.time() - t0, "DECODE-ERROR %s" % self.dec.err, None))
            self.buf += raw
        while len(self.buf) >= 4:
            size = struct.unpack(">i", self.buf[:4])[0]
            if size < 4 or size > 64 * 1024 * 1024:
                evs.append((time.time() - t0, "GARBAGE %r" % bytes(self.buf[:64]), None))
                self.buf.clear(); return
            if len(self.buf) < 4 + size:
                return
            ft = struct.unpack(">i", self.buf[4:8])[0]
            data = bytes(self.buf[8:4 + size]); del self.buf[:4 + size]
            evs.append((time.time() - t0, self._fmt(ft, data), None))
            if ft == 0 and data.startswith(b"{") and b'"max_rdy_count"' in data:
                try:
                    js = json.loads(data)
                    self.pending = (["tls"] if js.get("tls_v1") else []) + \
                        (["snappy"] if js.get("snappy") else ["deflate"] if js.get("deflate") else [])
                    self.deflate_level = js.get("deflate_level", 6)
                except Exception:
                    self.pending = []
                self._advance(evs, t0)
            elif self.wait_ok:
                self.wait_ok = False
                self._advance(evs, t0)

    def _advance(self, evs, t0):
        if not self.pending:
            return
        u = self.pending.pop(0)
        if u == "tls":
            if self.buf:
                evs.append((time.time() - t0, "PLAINTEXT-BEFORE-TLS %r" % bytes(self.buf), None)); self.buf.clear()
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
            try:
                self.s = ctx.wrap_socket(self.s, server_hostname="localhost")
                evs.append((time.time() - t0, "TLS-HANDSHAKE-OK", None))
            except Exception as e:
                evs.append((time.time() - t0, "TLS-HANDSHAKE-FAILED %s" % e.__class__.__name__, None))
                self.closed = True; return
            self.wait_ok = True
        else:
            rest = bytes(self.buf); self.buf.clear()
            if u == "snappy":
                self.dec = SnappyFrameDecoder(); self.enc = "snappy"
            else:
                self.dec = zlib.decompressobj(-15)
                self.enc = zlib.compressobj(6, zlib.DEFLATED, -15)
            evs.append((time.time() - t0, "UPGRADE-%s" % u, None))
            if rest:
                self._ingest(rest, evs, t0)
            self.wait_ok = True if self.pending else False

    def _fmt(self, ft, data):
        if ft == 0:
            if data == b"_heartbeat_":
                return "HB"
            return "RESP %r" % data
        if ft == 1:
            for mid, lab in self.run.ids.items():
                data = data.replace(mid, ("<%s>" % lab).encode())
            return "ERR %r" % data
        if ft == 2:
            if len(data) < 26:
                return "MSG-SHORT %r" % data
            ts, att = struct.unpack(">qH", data[:10]); mid = data[10:26]; body = data[26:]
            self.last_id = mid
            lab = self.run.id_label(mid)
            flags = ""
            if not re.fullmatch(rb"[0-9a-f]{16}", mid):
                flags += " !id-not-lowercase-hex"
            if abs(ts - time.time_ns()) > 120e9:
                flags += " !timestamp-off"
            b = repr(body) if len(body) <= 80 else "len=%d sha1=%s" % (len(body), hashlib.sha1(body).hexdigest()[:12])
            return "MSG att=%d %s body=%s%s" % (att, lab, b, flags)
        return "FRAME type=%d %r" % (ft, data)

# ----------------------------------------------------------------------------- steps DSL
def C(name, magic=b"  V2"):       return ("C", name, magic)
def U(name):                      return ("U", name)
def S(data, conn=None):           return ("S", data, conn)
def SB(data, conn=None):          return ("SB", data, conn)       # send byte by byte
def R(q=0.15, conn=None, maxt=4.0, timed=False, tol=0.35):
    return ("R", q, conn, maxt, timed, tol)
def F(dur, conn=None, tol=None):  return ("F", dur, conn, tol)    # read for a fixed time (timing compared if tol)
def RM(maxt, fin=True, conn=None): return ("RM", maxt, fin, conn)  # read until a message arrives, then FIN it
def H(conn=None):                 return ("H", conn)              # client half-close (SHUT_WR)
def X(conn=None):                 return ("X", conn)              # client close
def W(d):                         return ("W", d)
def RS(q=0.3, maxt=10.0, total=None, conn=None):
    """read until quiet, summarise message frames as a count bucket (for non-deterministic counts)"""
    return ("RS", q, maxt, total, conn)
def CS(name, rcvbuf=4096):         return ("CS", name, rcvbuf)   # connect with a tiny receive buffer (slow consumer)
def HTTP(method, path):           return ("HTTP", method, path)   # call the broker's HTTP API (response recorded)
def SR(data, q=0.15, conn=None):  return [S(data, conn), R(q, conn)]

def flatten(x):
    out = []
    for i in x:
        if isinstance(i, list):
            out += flatten(i)
        else:
            out.append(i)
    return out

class Run:
    """one scenario on one broker"""
    def __init__(self, broker, steps, auto):
        self.b = broker; self.steps = flatten(steps); self.auto = auto
        self.ids = {}; self.conns = {}; self.cur = None
        self.events = []   # (stepno, conn, t, text, timed, tol)

    def id_label(self, mid):
        if mid not in self.ids:
            self.ids[mid] = "id#%d" % (len(self.ids) + 1)
        return self.ids[mid]

    def sub(self, data):
        def rep(m):
            c = self.conns.get(m.group(1).decode()) if m.group(1) else self.conns.get(self.cur)
            return c.last_id if c is not None and c.last_id else b"NOIDNOIDNOIDNOID"
        return re.sub(rb"\{ID(?::(\w+))?\}", rep, data)

    def ev(self, i, conn, t, text, timed=False, tol=0.35, note=None):
        self.events.append((i, conn, round(t, 2), text, timed, tol, note))

    def execute(self):
        if self.auto:
            self.steps.insert(0, C("a"))
        for i, st in enumerate(self.steps):
            k = st[0]
            try:
                if k == "C":
                    self.conns[st[1]] = Conn(st[1], self.b.tcp, st[2], self); self.cur = st[1]
                elif k == "CS":
                    c = Conn.__new__(Conn)
                    sk = socket.socket(); sk.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, st[2])
                    sk.settimeout(5); sk.connect(("127.0.0.1", self.b.tcp))
                    Conn.__init__(c, st[1], None, b"  V2", self, sock=sk)
                    self.conns[st[1]] = c; self.cur = st[1]
                elif k == "RS":
                    _, q, maxt, total, cn = st
                    c = self.conns[cn or self.cur]
                    evs = c.read(q, maxt, None)
                    n = sum(1 for e in evs if e[1].startswith("MSG"))
                    if total:
                        b = "none" if n == 0 else "all" if n == total else "few(<=%d%%)" % 15 if n <= total * 0.15 else \
                            "most(>=85%)" if n >= total * 0.85 else "about-half" if total * 0.3 <= n <= total * 0.7 else "other"
                    else:
                        b = "none" if n == 0 else "some"
                    self.ev(i, c.name, 0, "MSG-COUNT %s" % b, note="n=%d" % n)
                    for t, text, kind in evs:
                        if not text.startswith("MSG"):
                            self.ev(i, c.name, t, text, False, None, kind)
                elif k == "U":
                    self.cur = st[1]
                elif k in ("S", "SB"):
                    c = self.conns[st[2] or self.cur]
                    data = self.sub(st[1])
                    r = c.send(data) if k == "S" else c.send_bytewise(data)
                    if r:
                        self.ev(i, c.name, 0, r)
                elif k == "R":
                    _, q, cn, maxt, timed, tol = st
                    c = self.conns[cn or self.cur]
                    for t, text, kind in c.read(q, maxt, None):
                        self.ev(i, c.name, t, text, timed, tol, kind)
                elif k == "F":
                    _, dur, cn, tol = st
                    c = self.conns[cn or self.cur]
                    for t, text, kind in c.read(0, 0, dur):
                        self.ev(i, c.name, t, text, tol is not None, tol, kind)
                elif k == "RM":
                    _, maxt, fin, cn = st
                    c = self.conns[cn or self.cur]
                    evs = c.read(maxt, maxt, None, until_msg=True)
                    for t, text, kind in evs:
                        self.ev(i, c.name, t, text, False, None, "timing only informative" if text.startswith("MSG") else kind)
                    if fin and any(e[1].startswith("MSG") for e in evs):
                        c.send(b"FIN " + c.last_id + b"\n")
                elif k == "H":
                    self.conns[st[1] or self.cur].s.shutdown(socket.SHUT_WR)
                elif k == "X":
                    c = self.conns.pop(st[1] or self.cur); c.s.close()
                elif k == "W":
                    time.sleep(st[1])
                elif k == "HTTP":
                    req = urllib.request.Request("http://127.0.0.1:%d%s" % (self.b.http, st[2]), method=st[1], data=b"" if st[1] == "POST" else None)
                    try:
                        r = urllib.request.urlopen(req, timeout=3); code, body = r.status, r.read()
                    except urllib.error.HTTPError as e:
                        code, body = e.code, e.read()
                    self.ev(i, "http", 0, "HTTP %s %d %r" % (st[1], code, body[:200]))
            except Exception as e:
                self.ev(i, self.cur, 0, "TESTER-EXCEPTION %s: %s" % (e.__class__.__name__, e))
        # final drain: what is left, and is the connection still open?
        for name, c in sorted(self.conns.items()):
            for t, text, kind in c.read(0.2, 1.0, None):
                self.ev("end", name, t, text, False, 0.35, kind)
            if not c.closed:
                self.ev("end", name, 0, "OPEN")
            if c.buf:
                self.ev("end", name, 0, "PARTIAL-FRAME", note="%d bytes" % len(c.buf))
            try:
                c.s.close()
            except Exception:
                pass

# ----------------------------------------------------------------------------- comparison
def norm_events(evs, hb_tol):
    """-> list of (key, t, timed, tol)"""
    out = []
    for (i, conn, t, text, timed, tol, note) in evs:
        out.append(("%s:%s %s" % (i, conn, text), t, timed, tol))
    if hb_tol:
        groups = {}
        rest = []
        for e in out:
            if e[0].endswith(" HB"):
                g = e[0][:-3]; groups[g] = groups.get(g, 0) + 1
            else:
                rest.append(e)
        for g, n in sorted(groups.items()):
            rest.append(("%s HB*~%d" % (g, n), 0, False, 0))
        out = rest
    return out

def compare(ref, ours, hb_tol):
    a = norm_events(ref, hb_tol); b = norm_events(ours, hb_tol)
    ka = [x[0] for x in a]; kb = [x[0] for x in b]
    problems = []
    if hb_tol:
        ha = {k.rsplit(" HB*~", 1)[0]: int(k.rsplit("~", 1)[1]) for k in ka if " HB*~" in k}
        hb_ = {k.rsplit(" HB*~", 1)[0]: int(k.rsplit("~", 1)[1]) for k in kb if " HB*~" in k}
        for g in set(ha) | set(hb_):
            if abs(ha.get(g, 0) - hb_.get(g, 0)) > 1:
                problems.append("heartbeat count %s: ref %d ours %d" % (g, ha.get(g, 0), hb_.get(g, 0)))
        ka2 = [k for k in ka if " HB*~" not in k]; kb2 = [k for k in kb if " HB*~" not in k]
    else:
        ka2, kb2 = ka, kb
    if ka2 != kb2:
        def canon(keys):
            g = {}
            for k in keys:
                grp, _, text = k.partition(" ")
                g.setdefault(grp, ([], []))[1 if text.startswith("MSG") else 0].append(text)
            return g
        if canon(ka2) == canon(kb2):
            problems.append("soft: only the interleaving of message frames vs response/error frames differs")
        else:
            problems.append("event sequence differs")
    else:
        na = [(e[0], e[1], e[3], e[6]) for e in ref if e[3] == "CLOSED"]
        nb = [(e[0], e[1], e[3], e[6]) for e in ours if e[3] == "CLOSED"]
        if na != nb:
            problems.append("soft: close kind differs (ref %s, ours %s)" % ([x[3] for x in na], [x[3] for x in nb]))
        ea = [x for x in a if " HB*~" not in x[0]]; eb = [x for x in b if " HB*~" not in x[0]]
        for x, y in zip(ea, eb):
            if x[2] and abs(x[1] - y[1]) > x[3]:
                problems.append("timing of [%s]: ref %.2fs ours %.2fs" % (x[0], x[1], y[1]))
    return problems

def fmt_events(evs):
    def cut(x):
        return x if len(x) <= 400 else x[:300] + "...<%d chars, sha1 %s>" % (len(x), hashlib.sha1(x.encode()).hexdigest()[:10])
    return "\n".join("  %-5s %-2s %6.2fs  %s%s" % (i, c, t, cut(text), " (%s)" % n if n else "")
                     for (i, c, t, text, _, _, n) in evs)

def stats_delta(before, after, T):
    """topics of this scenario (prefix T, or newly created) whose counters changed"""
    d = {}
    if "__error__" in before or "__error__" in after:
        return {"__error__": before.get("__error__") or after.get("__error__")}
    for t in set(before) | set(after):
        if not t.startswith(T) and t in before:
            continue
        if before.get(t) != after.get(t):
            d[t] = after.get(t, "GONE")
    return d

def fmt_delta(d):
    lines = []
    for t in sorted(d):
        v = d[t]
        if isinstance(v, tuple):
            lines.append("  topic %r %s" % (t, v[0]))
            for c in sorted(v[1]):
                lines.append("    channel %r %s" % (c, v[1][c]))
        else:
            lines.append("  topic %r %s" % (t, v))
    return "\n".join(lines) or "  (no change)"

# ----------------------------------------------------------------------------- scenarios
SCEN = []
def add(name, steps_fn, cfg="def", auto=True, hb_tol=False, stats=True):
    SCEN.append(dict(name=name, cfg=cfg, fn=steps_fn, auto=auto, hb_tol=hb_tol, stats=stats))

ID0 = "0123456789abcdef"

def consumer(T, ch="c", rdy=None, conn=None, ident=None):
    """steps: (optional IDENTIFY) + SUB T ch (+ RDY)"""
    st = []
    if ident is not None:
        st += SR(IDENT(ident), conn=conn)
    st += SR(L("SUB %s %s" % (T, ch)), conn=conn)
    if rdy is not None:
        st += [S(L("RDY %s" % rdy), conn)]
    return st

def with_msg(T, body=b"m1", rdy=1, ident=None):
    """conn a = consumer holding one in-flight message (published from conn p)"""
    return [consumer(T, rdy=rdy, ident=ident), C("p"), SR(PUB(T, body)), U("a"), R(0.3)]

# ---- magic
for nm, mg in [("magic V1", b"  V1"), ("magic garbage ABCD", b"ABCD"), ("magic lowercase '  v2'", b"  v2"),
               ("magic NULs", b"\0\0\0\0"), ("magic HTTP request", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
               ("magic 'V2  ' (misaligned)", b"V2  "), ("magic V2 + pipelined PUBs", None)]:
    if mg is None:
        add(nm, lambda T: [C("a", b"  V2" + PUB(T, b"1") + PUB(T, b"2") + L("NOP")), R()], auto=False)
    else:
        add(nm, (lambda mg: lambda T: [C("a", mg), R(0.3)])(mg), auto=False)
add("magic short (3 bytes) then half-close", lambda T: [C("a", b"  V"), H(), R(0.5)], auto=False)
add("magic short (2 bytes) wait, then rest + PUB", lambda T: [C("a", b"  "), R(0.4), S(b"V2" + PUB(T)), R()], auto=False)
add("magic bytewise", lambda T: [C("a", None), SB(b"  V2" + PUB(T)), R()], auto=False)
add("no magic, immediate half-close", lambda T: [C("a", None), H(), R(0.5)], auto=False)

# ---- commands before IDENTIFY / in init state
add("init: SUB without IDENTIFY", lambda T: SR(L("SUB %s c" % T)))
add("init: PUB without IDENTIFY", lambda T: SR(PUB(T)))
add("init: NOP then PUB", lambda T: [S(L("NOP")), SR(PUB(T))])
for cmd in ["RDY 1", "FIN " + ID0, "REQ %s 0" % ID0, "TOUCH " + ID0, "CLS", "RDY", "FIN", "REQ", "TOUCH"]:
    add("init: %s" % cmd, (lambda cmd: lambda T: SR(L(cmd)))(cmd))
add("init: AUTH (auth disabled)", lambda T: SR(B("AUTH", b"secret")))

# ---- IDENTIFY: JSON parsing
ident_raw = [
    b"{}", b"{", b'{"a":}', b"[]", b"null", b'"x"', b"1", b"true", b"{}x", b"{} ", b" {}", b"{}\n", b"\n{}",
    b'{"a":1,}', b"\xef\xbb\xbf{}", b"{}{}", b'{"client_id":"\xff\xfe"}', b'{"client_id":"\\u0000"}',
    b'{"client_id":"\\ud800"}', b'{"foo":{"bar":[1,2,{"x":null}]}}', b'{"foo":1}',
    b'{"FEATURE_NEGOTIATION":true}', b'{"Feature_Negotiation":true}', b'{"feature_negotiation":true,"feature_negotiation":false}',
    b'{"feature_negotiation":"true"}', b'{"feature_negotiation":1}', b'{"feature_negotiation":null}',
    b'{"heartbeat_interval":"1000"}', b'{"heartbeat_interval":1000.0}', b'{"heartbeat_interval":1e3}',
    b'{"heartbeat_interval":true}', b'{"heartbeat_interval":99999999999999999999}', b'{"heartbeat_interval":01000}',
    b'{"heartbeat_interval":-0}', b'{"heartbeat_interval":null}', b'{"sample_rate":4294967296}',
    b'{"sample_rate":2147483648}', b'{"client_id":123}', b'{"user_agent":null}', b'{"deflate_level":"x"}',
    b'{"long_id":"x","short_id":"y"}', b'{"long_id":5,"short_id":true}', b'{"tls_v1":"yes"}', b'{"msg_timeout":-0}',
    b'{"heartbeat_interval":1000,"heartbeat_interval":"x"}', b'{"heartbeat_interval":"x","feature_negotiation":true}',
    b'{"msg_timeout":1.5}', b'{"output_buffer_size":[]}', b'{"hostname":{}}', b"{'a':1}", b'{"a":NaN}',
    b'{"feature_negotiation":true,"feature_negotiation":"x"}', b'{"feature_negotiation":tru}', b"{} // c",
    b'{"user_agent":"' + b"u" * 3000 + b'"}', b'{"client_id":"' + b"c" * 300 + b'","hostname":"h\\n\\"x"}',
]
for raw in ident_raw:
    add("IDENTIFY body %r" % (raw if len(raw) < 60 else raw[:40] + b"...(%d)" % len(raw)),
        (lambda raw: lambda T: [SR(IDENT(raw)), SR(PUB(T))])(raw))

# ---- IDENTIFY: field values with feature_negotiation (response JSON shows effective values)
field_vals = {
    "heartbeat_interval": [-2, -1, 0, 1, 999, 1000, 1001, 59999, 60000, 60001, 2147483647, 2147483648, -2147483649],
    "output_buffer_size": [-2, -1, 0, 1, 63, 64, 65, 16384, 65536, 65537],
    "output_buffer_timeout": [-2, -1, 0, 1, 24, 25, 26, 30000, 30001],
    "msg_timeout": [-1, 0, 1, 999, 1000, 900000, 900001],
    "sample_rate": [-1, 0, 1, 50, 99, 100, 2147483647],
}
for f, vals in field_vals.items():
    for v in vals:
        add("IDENTIFY fn %s=%d" % (f, v),
            (lambda f, v: lambda T: [SR(IDENT({"feature_negotiation": True, f: v})), SR(PUB(T))])(f, v))
for obj in [
    {"feature_negotiation": True},
    {"feature_negotiation": False},
    {"feature_negotiation": True, "output_buffer_size": -1, "output_buffer_timeout": 100},
    {"feature_negotiation": True, "output_buffer_size": 100, "output_buffer_timeout": -1},
    {"feature_negotiation": True, "output_buffer_size": -1, "output_buffer_timeout": -1},
    {"feature_negotiation": True, "tls_v1": True},
    {"feature_negotiation": True, "deflate": False, "deflate_level": 9},
    {"feature_negotiation": True, "deflate_level": 3},
    {"feature_negotiation": True, "snappy": True, "deflate": True},
    {"feature_negotiation": False, "snappy": True, "deflate": True},
    {"feature_negotiation": False, "deflate": True},
    {"feature_negotiation": False, "snappy": True},
    {"feature_negotiation": True, "user_agent": "x/1", "client_id": "cid", "hostname": "h"},
    {"feature_negotiation": True, "heartbeat_interval": 5, "output_buffer_timeout": 5, "output_buffer_size": 5, "sample_rate": 500, "msg_timeout": 5},
    {"feature_negotiation": True, "output_buffer_timeout": 5, "output_buffer_size": 5, "sample_rate": 500, "msg_timeout": 5},
    {"feature_negotiation": True, "output_buffer_size": 5, "sample_rate": 500, "msg_timeout": 5},
    {"feature_negotiation": True, "sample_rate": 500, "msg_timeout": 5},
    {"feature_negotiation": True, "msg_timeout": 5, "heartbeat_interval": 1000},
    {"feature_negotiation": True, "snappy": True, "deflate": True, "heartbeat_interval": 5},
    {"feature_negotiation": True, "topology_region": "r", "topology_zone": "z"},
]:
    add("IDENTIFY %s" % json.dumps(obj, separators=(",", ":")), (lambda obj: lambda T: [SR(IDENT(obj)), SR(PUB(T))])(obj))

# compression negotiation (default config: deflate & snappy enabled, max level 6)
for lvl in [-1, 0, 1, 5, 6, 7, 9, 10, 100]:
    add("IDENTIFY fn deflate level %d, then PUB/SUB/msg compressed" % lvl,
        (lambda lvl: lambda T: [SR(IDENT({"feature_negotiation": True, "deflate": True, "deflate_level": lvl}), q=0.3),
                                SR(PUB(T, b"hello")), SR(L("SUB %s c" % T)), S(L("RDY 1")), R(0.4),
                                S(L("FIN {ID}")), SR(L("BOGUS")) ])(lvl))
add("IDENTIFY fn snappy, then PUB/SUB/msg compressed",
    lambda T: [SR(IDENT({"feature_negotiation": True, "snappy": True}), q=0.3), SR(PUB(T, b"hello" * 50)),
               SR(L("SUB %s c" % T)), S(L("RDY 1")), R(0.4), S(L("FIN {ID}")), SR(L("BOGUS"))])
add("IDENTIFY fn snappy, compressed MPUB of 3",
    lambda T: [SR(IDENT({"feature_negotiation": True, "snappy": True}), q=0.3), SR(MPUB(T, [b"a" * 100, b"b", b"c"]))])
add("IDENTIFY fn deflate, pipelined plain PUB after IDENTIFY (garbled)",
    lambda T: [S(IDENT({"feature_negotiation": True, "deflate": True}) + PUB(T)), R(0.4)])

# ---- IDENTIFY framing / state
add("IDENTIFY size 0", lambda T: SR(SZ("IDENTIFY", 0)))
add("IDENTIFY size -1", lambda T: SR(SZ("IDENTIFY", -1)))
add("IDENTIFY size 0x80000000", lambda T: SR(SZ("IDENTIFY", 0x80000000)))
add("IDENTIFY size > max-body-size (5242881)", lambda T: SR(SZ("IDENTIFY", 5242881)))
add("IDENTIFY size = max-body-size, short body, half-close", lambda T: [S(SZ("IDENTIFY", 5242880, b"{}")), H(), R(0.4)])
add("IDENTIFY short body then half-close", lambda T: [S(SZ("IDENTIFY", 10, b"{}")), H(), R(0.4)])
add("IDENTIFY partial size then half-close", lambda T: [S(L("IDENTIFY") + b"\0\0"), H(), R(0.4)])
add("IDENTIFY no size then half-close", lambda T: [S(L("IDENTIFY")), H(), R(0.4)])
add("IDENTIFY body split with a pause", lambda T: [S(SZ("IDENTIFY", 2, b"{")), R(0.4), S(b"}"), R(), SR(PUB(T))])
add("IDENTIFY with extra params", lambda T: [SR(B("IDENTIFY foo bar", b"{}")), SR(PUB(T))])
add("IDENTIFY\\r\\n", lambda T: [SR(B("IDENTIFY\r", b"{}")), SR(PUB(T))])
add("IDENTIFY twice", lambda T: [SR(IDENT({})), SR(IDENT({"feature_negotiation": True, "msg_timeout": 5000})), SR(PUB(T))])
add("IDENTIFY after SUB", lambda T: [SR(L("SUB %s c" % T)), SR(IDENT({}))])
add("IDENTIFY after SUB with bad body size", lambda T: [SR(L("SUB %s c" % T)), SR(SZ("IDENTIFY", 0))])
add("IDENTIFY after CLS", lambda T: [SR(L("SUB %s c" % T)), SR(L("CLS")), SR(IDENT({}))])

# ---- heartbeats (timed)
add("heartbeat 1000: idle -> HBs then server close at ~2s",
    lambda T: [SR(IDENT({"heartbeat_interval": 1000})), F(3.2, tol=0.4)], hb_tol=True)
add("heartbeat 1000: NOP every 0.7s keeps alive",
    lambda T: [SR(IDENT({"heartbeat_interval": 1000}))] + [[F(0.7), S(L("NOP"))] for _ in range(5)] + [R(0.2)], hb_tol=True)
add("heartbeat 1000: subscriber idle", lambda T: [consumer(T, rdy=5, ident={"heartbeat_interval": 1000}), F(3.2, tol=0.45)], hb_tol=True)
add("heartbeat 1000 then 2nd IDENTIFY heartbeat 5000 (pump keeps 1s; deadline 10s)",
    lambda T: [SR(IDENT({"heartbeat_interval": 1000})), SR(IDENT({"heartbeat_interval": 5000})), F(3.0)], hb_tol=True)
add("heartbeat 5000 then 2nd IDENTIFY heartbeat 1000 (read deadline 2s)",
    lambda T: [SR(IDENT({"heartbeat_interval": 5000})), SR(IDENT({"heartbeat_interval": 1000})), F(3.0, tol=0.45)], hb_tol=True)
add("heartbeat -1: idle 2s stays open", lambda T: [SR(IDENT({"heartbeat_interval": -1})), F(2.0), SR(PUB(T))])
add("heartbeat -1: SUB refused", lambda T: [SR(IDENT({"heartbeat_interval": -1})), SR(L("SUB %s c" % T))])
add("heartbeat -1: SUB with missing params (hb error first)", lambda T: [SR(IDENT({"heartbeat_interval": -1})), SR(L("SUB"))])
add("heartbeat -1: SUB bad topic (hb error first)", lambda T: [SR(IDENT({"heartbeat_interval": -1})), SR(L("SUB a*b c"))])

# long (opt-in with --long): default heartbeat 30 s / read deadline 60 s for a client that never IDENTIFYs
add("LONG default heartbeat (30s) and idle close (60s), no IDENTIFY",
    lambda T: [SR(PUB(T)), F(63.0, tol=1.0)], cfg="long", hb_tol=True)
add("LONG default heartbeat, client answers with NOP, stays open",
    lambda T: [SR(PUB(T)), F(31.0, tol=1.0), S(L("NOP")), F(35.0, tol=1.0)], cfg="long", hb_tol=True)

# ---- PUB
add("PUB ok", lambda T: SR(PUB(T, b"hello")))
add("PUB 20 pipelined in one write", lambda T: [S(b"".join(PUB(T, b"%d" % i) for i in range(20))), R(0.3)])
add("PUB bytewise", lambda T: [SB(PUB(T, b"slow")), R()])
for line_, nm in [("PUB", "no topic"), ("PUB ", "empty topic"), ("PUB a*b", "bad char"), ("PUB " + "a" * 65, "65-char topic"),
                  ("PUB #ephemeral", "'#ephemeral' only"), ("PUB {T}#eph", "bad suffix"), ("PUB \xfc", "latin1 byte"),
                  ("PUB t\u00fc", "utf-8 topic"), ("PUB a b c", "extra params"), ("PUB  {T}", "double space"),
                  ("PUB {T}\r", "CR before LF"), ("PUB {T}#ephemeral#ephemeral", "double ephemeral"),
                  ("PUB \"q\"", "quote in name"), ("PUB a\tb", "tab in name"), ("PUB {T} ", "trailing space"),
                  ("PUB a\\b", "backslash"), ("PUB \x01x", "control char")]:
    add("PUB topic %s" % nm, (lambda line_: lambda T: SR(B(line_.replace("{T}", T).encode("latin-1")
                                                          if "\xfc" in line_ or "\x01" in line_ else line_.replace("{T}", T), b"x")))(line_))
add("PUB 64-char topic ok", lambda T: SR(PUB((T + "a" * 64)[:64])))
add("PUB topic 'a.b-c_D9' ok", lambda T: SR(PUB(T + "a.b-c_D9")))
add("PUB topic '..'", lambda T: SR(PUB("..")))
add("PUB #ephemeral topic (no channel)", lambda T: [SR(PUB(T + "#ephemeral"))])
add("PUB size 0", lambda T: SR(SZ("PUB " + T, 0)))
add("PUB size -1", lambda T: SR(SZ("PUB " + T, -1)))
add("PUB size 0x80000000", lambda T: SR(SZ("PUB " + T, 0x80000000)))
add("PUB size max+1 (1048577)", lambda T: SR(SZ("PUB " + T, 1048577)))
add("PUB size = max (1048576) ok", lambda T: SR(PUB(T, b"z" * 1048576), q=0.4))
add("PUB short body then half-close", lambda T: [S(SZ("PUB " + T, 10, b"abc")), H(), R(0.4)])
add("PUB partial size then half-close", lambda T: [S(L("PUB " + T) + b"\0\0"), H(), R(0.4)])
add("PUB no size then half-close", lambda T: [S(L("PUB " + T)), H(), R(0.4)])
add("PUB body split with pause", lambda T: [S(SZ("PUB " + T, 6, b"abc")), R(0.4), S(b"def"), R()])
add("PUB bad topic + size 0 (topic error first)", lambda T: SR(SZ("PUB a*b", 0)))
add("PUB no topic + size 0", lambda T: SR(SZ("PUB", 0)))
add("PUB binary body roundtrip", lambda T: [consumer(T, rdy=1), C("p"), SR(PUB(T, bytes(range(256)) + b"\n\r\n")), U("a"), R(0.3)])
add("PUB body that looks like a command", lambda T: [SR(PUB(T, b"NOP\n")), SR(PUB(T, b"\n"))])
add("PUB then FATAL then PUB in same write", lambda T: [S(PUB(T, b"1") + L("BOGUS") + PUB(T, b"2")), R(0.3)])

# ---- MPUB
add("MPUB ok 3", lambda T: SR(MPUB(T, [b"a", b"bb", b"ccc"])))
add("MPUB no topic", lambda T: SR(B("MPUB", MPB([b"a"]))))
add("MPUB bad topic", lambda T: SR(B("MPUB a*b", MPB([b"a"]))))
add("MPUB bad topic + body size 0", lambda T: SR(SZ("MPUB a*b", 0)))
add("MPUB body size 0 (topic still created?)", lambda T: SR(SZ("MPUB " + T, 0)))
add("MPUB body size -1", lambda T: SR(SZ("MPUB " + T, -1)))
add("MPUB body size 0x80000000", lambda T: SR(SZ("MPUB " + T, 0x80000000)))
add("MPUB body size max+1 (5242881)", lambda T: SR(SZ("MPUB " + T, 5242881)))
add("MPUB count 0", lambda T: SR(SZ("MPUB " + T, 4, struct.pack(">i", 0))))
add("MPUB count -1", lambda T: SR(SZ("MPUB " + T, 4, struct.pack(">i", -1))))
add("MPUB count 1048576 (>(max_body-4)/5)", lambda T: SR(SZ("MPUB " + T, 100, struct.pack(">i", 1048576))))
add("MPUB count 1048575 then half-close", lambda T: [S(SZ("MPUB " + T, 100, struct.pack(">i", 1048575))), H(), R(0.4)])
add("MPUB count 2, only 1 msg, half-close", lambda T: [S(SZ("MPUB " + T, 100, struct.pack(">ii", 2, 1) + b"a")), H(), R(0.4)])
add("MPUB count unreadable (half-close)", lambda T: [S(SZ("MPUB " + T, 100, b"\0")), H(), R(0.4)])
add("MPUB body size unreadable (half-close)", lambda T: [S(L("MPUB " + T) + b"\0"), H(), R(0.4)])
add("MPUB msg size 0", lambda T: SR(SZ("MPUB " + T, 8, struct.pack(">ii", 1, 0))))
add("MPUB msg size -1", lambda T: SR(SZ("MPUB " + T, 8, struct.pack(">ii", 1, -1))))
add("MPUB msg size max+1", lambda T: SR(SZ("MPUB " + T, 8, struct.pack(">ii", 1, 1048577))))
add("MPUB 2nd msg size 0 (nothing queued)", lambda T: SR(SZ("MPUB " + T, 100, struct.pack(">ii", 2, 1) + b"a" + struct.pack(">i", 0))))
add("MPUB 2nd msg too big (nothing queued)", lambda T: SR(SZ("MPUB " + T, 100, struct.pack(">ii", 2, 1) + b"a" + struct.pack(">i", 1048577))))
add("MPUB msg short then half-close", lambda T: [S(SZ("MPUB " + T, 100, struct.pack(">ii", 1, 10) + b"abc")), H(), R(0.4)])
add("MPUB body size larger than content, then PUB", lambda T: [S(SZ("MPUB " + T, 9 + 8, MPB([b"a"])) + PUB(T, b"after")), R(0.5)])
add("MPUB body size smaller than content, then PUB", lambda T: [S(SZ("MPUB " + T, 4, MPB([b"abcdef"])) + PUB(T, b"after")), R(0.5)])
add("MPUB body size 1, 2 msgs", lambda T: SR(SZ("MPUB " + T, 1, MPB([b"a", b"b"]))))
add("MPUB body size larger than content, then nothing", lambda T: [S(SZ("MPUB " + T, 100, MPB([b"a"]))), R(0.5), SR(PUB(T))])
add("MPUB 2 msgs, delivered to consumer", lambda T: [consumer(T, rdy=5), C("p"), SR(MPUB(T, [b"m1", b"m2"])), U("a"), R(0.4)])
add("MPUB extra params", lambda T: SR(B("MPUB %s x y" % T, MPB([b"a"]))))
add("MPUB msg max size exactly (1048576)", lambda T: SR(MPUB(T, [b"q" * 1048576]), q=0.4))

# ---- DPUB
add("DPUB ok 0", lambda T: SR(DPUB(T, 0)))
add("DPUB no params", lambda T: SR(B("DPUB", b"x")))
add("DPUB missing timeout", lambda T: SR(B("DPUB " + T, b"x")))
add("DPUB bad topic", lambda T: SR(DPUB("a*b", 10)))
add("DPUB bad topic + bad timeout", lambda T: SR(DPUB("a*b", "zz")))
for d in ["abc", "-1", "+1", "1.5", "", " 5", "0x10", "3600000", "3600001", "18446744073709551615",
          "18446744073709551616", "18446744073709551617", "18446744073710", "9223372036855", "99999999999999999999",
          "9223372036854775807", "9223372036854775808", "000000000000000000000000000001"]:
    add("DPUB timeout %r" % d, (lambda d: lambda T: [SR(DPUB(T, d)), R(0.2)])(d))
add("DPUB bad timeout + size 0 (timeout error first)", lambda T: SR(SZ("DPUB %s abc" % T, 0)))
add("DPUB out-of-range timeout + size 0", lambda T: SR(SZ("DPUB %s 3600001" % T, 0)))
add("DPUB size 0", lambda T: SR(SZ("DPUB %s 10" % T, 0)))
add("DPUB size -1", lambda T: SR(SZ("DPUB %s 10" % T, -1)))
add("DPUB size max+1", lambda T: SR(SZ("DPUB %s 10" % T, 1048577)))
add("DPUB short body half-close", lambda T: [S(SZ("DPUB %s 10" % T, 5, b"ab")), H(), R(0.4)])
add("DPUB extra params", lambda T: SR(B("DPUB %s 10 x" % T, b"x")))
# NOTE nsqd's queueScanLoop only refreshes its channel list every 5 s, so deferred/REQ/timeout handling of a
# freshly created channel can lag up to ~5 s in the reference; waits below are sized for that and timing of
# such events is informative only (shown, not compared).
add("DPUB 400ms delivered later",
    lambda T: [consumer(T, rdy=5), C("p"), SR(DPUB(T, 400, b"late")), SR(PUB(T, b"now")), U("a"), RM(1.0), RM(7.0), R(0.3)])
add("DPUB 1h -> deferred in stats", lambda T: [consumer(T, rdy=5), C("p"), SR(DPUB(T, 3600000, b"x")), U("a"), R(0.3)])

# ---- SUB
add("SUB ok", lambda T: SR(L("SUB %s c" % T)))
add("SUB twice", lambda T: [SR(L("SUB %s c" % T)), SR(L("SUB %s c2" % T))])
add("SUB twice same", lambda T: [SR(L("SUB %s c" % T)), SR(L("SUB %s c" % T))])
add("SUB no params", lambda T: SR(L("SUB")))
add("SUB only topic", lambda T: SR(L("SUB " + T)))
add("SUB extra params", lambda T: SR(L("SUB %s c x y" % T)))
add("SUB bad topic", lambda T: SR(L("SUB a*b c")))
add("SUB bad channel", lambda T: SR(L("SUB %s c*d" % T)))
add("SUB bad topic + bad channel", lambda T: SR(L("SUB a*b c*d")))
add("SUB empty channel", lambda T: SR(L("SUB %s " % T)))
add("SUB double space", lambda T: SR(L("SUB  %s c" % T)))
add("SUB 65-char channel", lambda T: SR(L("SUB %s %s" % (T, "c" * 65))))
add("SUB 64-char channel ok", lambda T: SR(L("SUB %s %s" % (T, "c" * 64))))
add("SUB channel '#ephemeral' only", lambda T: SR(L("SUB %s #ephemeral" % T)))
add("SUB channel with utf-8", lambda T: SR(L("SUB %s c\u00e9" % T)))
add("SUB \\r\\n", lambda T: SR(L("SUB %s c\r" % T)))
add("SUB c#ephemeral (gone after disconnect)", lambda T: [SR(L("SUB %s c#ephemeral" % T)), S(L("RDY 1")), W(0.1), X(), W(0.3)])
add("SUB topic#ephemeral c", lambda T: [SR(L("SUB %s#ephemeral c" % T)), X(), W(0.3)])
add("SUB topic#ephemeral c#ephemeral", lambda T: [SR(L("SUB %s#ephemeral c#ephemeral" % T)), X(), W(0.3)])
add("SUB ephemeral: PUB 2, consume, disconnect", lambda T: [consumer(T, "c#ephemeral", rdy=5), C("p"), SR(PUB(T, b"1")), SR(PUB(T, b"2")), U("a"), R(0.4), X(), W(0.3)])
add("SUB existing topic with 3 msgs, RDY 3", lambda T: [C("p"), SR(MPUB(T, [b"1", b"2", b"3"])), U("a"), consumer(T, rdy=3), R(0.4)])
add("SUB existing topic with 3 msgs, RDY 1, FIN each",
    lambda T: [C("p"), SR(MPUB(T, [b"1", b"2", b"3"])), U("a"), consumer(T, rdy=1), R(0.3), S(L("FIN {ID}")), R(0.3), S(L("FIN {ID}")), R(0.3), S(L("FIN {ID}")), R(0.3)])
add("two channels fan-out",
    lambda T: [consumer(T, "c1", rdy=5), C("b"), consumer(T, "c2", rdy=5, conn="b"), C("p"), SR(PUB(T, b"fan")), R(0.3, conn="a"), R(0.3, conn="b")])
add("topic PUB before any channel -> first channel gets it, later channel not",
    lambda T: [C("p"), SR(PUB(T, b"early")), U("a"), consumer(T, "c1", rdy=5), R(0.3), C("b"), consumer(T, "c2", rdy=5, conn="b"), R(0.3, conn="b")])

# ---- RDY
add("RDY no count (=1)", lambda T: [C("p"), SR(MPUB(T, [b"1", b"2"])), U("a"), consumer(T), S(L("RDY")), R(0.4)])
add("RDY empty count (=0)", lambda T: [C("p"), SR(MPUB(T, [b"1", b"2"])), U("a"), consumer(T), S(L("RDY ")), R(0.4), SR(PUB(T))])
for cnt in ["-1", "abc", "1.5", "2500", "2501", "18446744073709551615", "18446744073709551617",
            "9223372036854775808", "+1", " 1", "1 2", "0x10", "0", "00000000000000000000000002"]:
    add("RDY %r" % cnt, (lambda cnt: lambda T: [C("p"), SR(MPUB(T, [b"1", b"2", b"3"])), U("a"), consumer(T), S(L("RDY " + cnt)), R(0.4), SR(PUB(T))])(cnt))
add("RDY 0 after delivery stops further delivery",
    lambda T: [consumer(T, rdy=5), C("p"), SR(PUB(T, b"1")), U("a"), R(0.3), S(L("RDY 0")), W(0.1), C("p2"), SR(PUB(T, b"2")), U("a"), R(0.4)])
add("RDY after CLS ignored", lambda T: [consumer(T), SR(L("CLS")), S(L("RDY 5")), R(0.2), C("p"), SR(PUB(T)), U("a"), R(0.3)])
add("RDY bad after CLS", lambda T: [consumer(T), SR(L("CLS")), SR(L("RDY abc")), SR(L("RDY 999999"))])

# ---- FIN / REQ / TOUCH
for cmd in ["FIN", "FIN ", "FIN abc", "FIN " + ID0, "FIN 0123456789abcdeg", "FIN 0123456789abcdef0",
            "FIN " + "\u00e9" * 8, "FIN " + ID0 + " extra", "FIN  " + ID0, "FIN ZZZZZZZZZZZZZZZZ",
            "REQ", "REQ " + ID0, "REQ abc 0", "REQ abc xyz", "REQ %s xyz" % ID0, "REQ %s -1" % ID0, "REQ %s 0" % ID0,
            "REQ %s " % ID0, "TOUCH", "TOUCH abc", "TOUCH " + ID0, "TOUCH " + ID0 + " 5", "CLS x"]:
    add("subscribed: %r" % cmd, (lambda cmd: lambda T: [consumer(T, rdy=1), SR(L(cmd)), SR(PUB(T))])(cmd))
add("FIN valid id, then FIN again", lambda T: [with_msg(T), SR(L("FIN {ID}")), SR(L("FIN {ID}"))])
add("FIN valid id with RDY 1 -> next msg delivered",
    lambda T: [C("p"), SR(MPUB(T, [b"1", b"2"])), U("a"), consumer(T, rdy=1), R(0.3), SR(L("FIN {ID}"), q=0.3)])
add("FIN id owned by other client",
    lambda T: [with_msg(T), C("b"), consumer(T, conn="b"), SR(L("FIN {ID:a}"), conn="b"), SR(PUB(T), conn="b")])
add("FIN id from other channel",
    lambda T: [with_msg(T), C("b"), consumer(T, "other", conn="b"), SR(L("FIN {ID:a}"), conn="b")])
add("REQ 0 -> redelivered attempts 2", lambda T: [with_msg(T), S(L("REQ {ID} 0")), R(0.3)])
add("REQ 0 twice -> attempts 3", lambda T: [with_msg(T), S(L("REQ {ID} 0")), R(0.3), S(L("REQ {ID} 0")), R(0.3)])
add("REQ 300ms -> redelivered attempts 2", lambda T: [with_msg(T), S(L("REQ {ID} 300")), RM(7.0), R(0.3)])
add("REQ huge (clamped to max-req-timeout) -> deferred", lambda T: [with_msg(T), SR(L("REQ {ID} 99999999999"), q=0.3)])
add("REQ 18446744073709551615 (wraps negative)", lambda T: [with_msg(T), SR(L("REQ {ID} 18446744073709551615"), q=0.3)])
add("REQ 9223372036855 (ms*1e6 overflows)", lambda T: [with_msg(T), SR(L("REQ {ID} 9223372036855"), q=0.3)])
add("REQ -1 valid id", lambda T: [with_msg(T), SR(L("REQ {ID} -1"))])
add("REQ valid id no timeout", lambda T: [with_msg(T), SR(L("REQ {ID}"))])
add("REQ id owned by other client", lambda T: [with_msg(T), C("b"), consumer(T, conn="b"), SR(L("REQ {ID:a} 0"), conn="b")])
add("REQ after FIN", lambda T: [with_msg(T), S(L("FIN {ID}")), SR(L("REQ {ID} 0"))])
add("TOUCH valid id silent", lambda T: [with_msg(T), SR(L("TOUCH {ID}")), SR(PUB(T))])
add("TOUCH id owned by other client", lambda T: [with_msg(T), C("b"), consumer(T, conn="b"), SR(L("TOUCH {ID:a}"), conn="b")])
add("msg_timeout 1000 -> redelivery attempts 2",
    lambda T: [with_msg(T, rdy=2, ident={"msg_timeout": 1000}), RM(7.0), R(0.3)])
add("msg_timeout 1000 + TOUCH -> redelivery attempts 2",
    lambda T: [consumer(T, rdy=2, ident={"msg_timeout": 1000}), C("p"), SR(PUB(T, b"m1")), U("a"), RM(1.0, fin=False),
               S(L("TOUCH {ID}")), RM(7.0), R(0.3)])
add("FIN after msg timeout (RDY 0 so no redelivery)",
    lambda T: [with_msg(T, rdy=1, ident={"msg_timeout": 1000}), S(L("RDY 0")), W(6.5), SR(L("FIN {ID}")), R(0.3)])
add("TOUCH after msg timeout (RDY 0)",
    lambda T: [with_msg(T, rdy=1, ident={"msg_timeout": 1000}), S(L("RDY 0")), W(6.5), SR(L("TOUCH {ID}")), R(0.3)])
add("msgs not delivered beyond RDY", lambda T: [C("p"), SR(MPUB(T, [b"%d" % i for i in range(5)])), U("a"), consumer(T, rdy=2), R(0.4)])
add("in-flight msgs of dropped consumer go to another consumer after timeout",
    lambda T: [with_msg(T, ident={"msg_timeout": 1000}), X("a"), C("b"), consumer(T, rdy=1, conn="b"), RM(7.0, conn="b"), R(0.3, conn="b")])

# ---- CLS
add("CLS before SUB", lambda T: SR(L("CLS")))
add("CLS after SUB -> CLOSE_WAIT, conn stays open", lambda T: [consumer(T), SR(L("CLS")), R(0.4)])
add("CLS twice", lambda T: [consumer(T), SR(L("CLS")), SR(L("CLS"))])
add("CLS then PUB/NOP/SUB", lambda T: [consumer(T), SR(L("CLS")), SR(PUB(T)), SR(L("NOP")), SR(L("SUB %s c" % T))])
add("CLS then FIN in-flight msg", lambda T: [with_msg(T), SR(L("CLS")), SR(L("FIN {ID}")), SR(L("FIN {ID}"))])
add("CLS then REQ in-flight msg", lambda T: [with_msg(T, rdy=2), SR(L("CLS")), SR(L("REQ {ID} 0"), q=0.3)])
add("CLS then TOUCH", lambda T: [with_msg(T), SR(L("CLS")), SR(L("TOUCH {ID}")), SR(L("TOUCH " + ID0))])
add("CLS then AUTH", lambda T: [consumer(T), SR(L("CLS")), SR(B("AUTH", b"x"))])
add("CLS, then messages published are not delivered", lambda T: [consumer(T, rdy=5), SR(L("CLS")), C("p"), SR(PUB(T, b"x")), U("a"), R(0.4)])

# ---- NOP / unknown / formatting
for raw in [b"NOP\n", b"NOP x y\n", b"nop\n", b"\n", b"\r\n", b" NOP\n", b"NOP \n", b"NOP\r\r\n", b"FOO\n", b"FOO bar baz\n",
            b"Pub x\n", b"identify\n", b"NOP\x00\n", b"\x00\n", b"NOP\t\n", b"PUB\tx\n", b"\xc3\xa9\n", b"X" * 1000 + b"\n",
            b"\r\r\n", b"NOP\rNOP\n", b"\xff\xfe\n", b"FOO\r\n", b"FIN\r\n", b"SUB\r\n", b"RDY\r\n"]:
    add("line %r" % (raw if len(raw) < 40 else raw[:20] + b"...(%d)" % len(raw)),
        (lambda raw: lambda T: [SR(raw), SR(PUB(T))])(raw))
add("line 16383 bytes unknown cmd (fits bufio)", lambda T: [S(b"Y" * 16383 + b"\n"), R(0.4)])
add("line 16384 bytes unknown cmd (bufio full)", lambda T: [S(b"Y" * 16384 + b"\n"), R(0.4)])
add("line 20000 bytes no newline", lambda T: [S(b"Y" * 20000), R(0.6)])
add("PUB with 16000-char topic", lambda T: [S(B("PUB " + "t" * 16000, b"x")), R(0.4)])
add("NOP 50x pipelined then PUB", lambda T: [S(L("NOP") * 50 + PUB(T)), R()])
add("commands after fatal error in same write are ignored", lambda T: [S(L("BOGUS") + PUB(T) + L("NOP")), R(0.3)])
add("unknown command with body-like bytes", lambda T: [S(L("XPUB " + T) + b"\0\0\0\x01x"), R()])
add("half-close after NOP (server sees EOF)", lambda T: [S(L("NOP")), H(), R(0.4)])
add("half-close after PUB (response still sent?)", lambda T: [S(PUB(T)), H(), R(0.4)])
add("half-close mid command line", lambda T: [S(b"PU"), H(), R(0.4)])

# ---- AUTH with auth disabled
add("AUTH disabled", lambda T: SR(B("AUTH", b"secret")))
add("AUTH extra param", lambda T: SR(B("AUTH x", b"secret")))
add("AUTH extra param + size 0", lambda T: SR(SZ("AUTH x", 0)))
add("AUTH size 0", lambda T: SR(SZ("AUTH", 0)))
add("AUTH size -1", lambda T: SR(SZ("AUTH", -1)))
add("AUTH size max+1", lambda T: SR(SZ("AUTH", 5242881)))
add("AUTH short body half-close", lambda T: [S(SZ("AUTH", 10, b"ab")), H(), R(0.4)])
add("AUTH after IDENTIFY", lambda T: [SR(IDENT({})), SR(B("AUTH", b"s"))])
add("AUTH after SUB", lambda T: [consumer(T), SR(B("AUTH", b"s"))])
add("AUTH\\r\\n", lambda T: SR(B("AUTH\r", b"s")))

# ---- order of errors / misc state combinations
add("FIN wrong state + no params", lambda T: SR(L("FIN")))
add("REQ wrong state + bad id", lambda T: SR(L("REQ x y")))
add("RDY wrong state + bad count", lambda T: SR(L("RDY abc")))
add("SUB after SUB with bad names (state first)", lambda T: [consumer(T), SR(L("SUB a*b c*d"))])
add("TOUCH bad id + extra", lambda T: [consumer(T), SR(L("TOUCH abc def"))])
add("REQ bad id + bad timeout (id first)", lambda T: [consumer(T), SR(L("REQ abc xyz"))])
add("REQ unknown id + bad timeout (timeout parse before lookup)", lambda T: [consumer(T), SR(L("REQ %s xyz" % ID0))])
add("PUB/SUB on same connection", lambda T: [consumer(T, rdy=5), SR(PUB(T, b"self")), R(0.3)])
add("PUB to 2 topics then SUB on a 3rd (cross-core affinity)",
    lambda T: [SR(PUB(T + "x", b"1")), SR(PUB(T + "y", b"2")), consumer(T + "y", rdy=5), R(0.3), C("p"), SR(PUB(T + "y", b"3")), U("a"), R(0.3)])
add("consumer on 1 conn, producer on 4 conns", lambda T: [consumer(T, rdy=10)] + [[C("p%d" % i), SR(PUB(T, b"%d" % i))] for i in range(4)] + [U("a"), R(0.4)])
add("200 msgs MPUB then RDY 200 consume + FIN all",
    lambda T: [C("p"), SR(MPUB(T, [b"%03d" % i for i in range(200)])), U("a"), consumer(T, rdy=200), R(0.5)])

add("output_buffer_timeout 1000, RDY 5, one message (flush latency, informative)",
    lambda T: [consumer(T, rdy=5, ident={"output_buffer_timeout": 1000}), C("p"), SR(PUB(T, b"x")), U("a"), F(1.5)])
add("output_buffer_size -1 (unbuffered), RDY 5, one message",
    lambda T: [consumer(T, rdy=5, ident={"output_buffer_size": -1}), C("p"), SR(PUB(T, b"x")), U("a"), R(0.4)])
add("HTTP channel delete closes consumer",
    lambda T: [with_msg(T), HTTP("POST", "/channel/delete?topic=%s&channel=c" % T), R(0.5)])
add("HTTP topic delete closes consumer",
    lambda T: [with_msg(T), HTTP("POST", "/topic/delete?topic=%s" % T), R(0.5)])
add("HTTP channel pause stops delivery, unpause resumes",
    lambda T: [consumer(T, rdy=5), HTTP("POST", "/channel/pause?topic=%s&channel=c" % T), C("p"), SR(PUB(T, b"1")), U("a"), R(0.5),
               HTTP("POST", "/channel/unpause?topic=%s&channel=c" % T), R(0.6)])
add("HTTP channel empty while msg in flight, then FIN",
    lambda T: [with_msg(T), HTTP("POST", "/channel/empty?topic=%s&channel=c" % T), SR(L("FIN {ID}")), SR(PUB(T))])
add("SUB to paused topic", lambda T: [C("p"), SR(PUB(T, b"1")), HTTP("POST", "/topic/pause?topic=%s" % T), U("a"), consumer(T, rdy=5), R(0.5)])

# ---- connection moves between cores (ours --cores 2: connection-affinity) with per-connection state
def topics_hop(T, n=4):
    return [SR(PUB("%s_h%d" % (T, i), b"h%d" % i)) for i in range(n)]
add("affinity: heartbeat 1000 survives topic hops",
    lambda T: [SR(IDENT({"heartbeat_interval": 1000})), topics_hop(T), F(3.2, tol=0.4)], hb_tol=True)
add("affinity: deflate survives topic hops",
    lambda T: [SR(IDENT({"feature_negotiation": True, "deflate": True}), q=0.3), topics_hop(T), consumer(T, rdy=3), C("p"),
               SR(MPUB(T, [b"a" * 3000, b"b", b"c"])), U("a"), R(0.4), SR(L("BOGUS"))])
add("affinity: snappy survives topic hops",
    lambda T: [SR(IDENT({"feature_negotiation": True, "snappy": True}), q=0.3), topics_hop(T), consumer(T, rdy=3), C("p"),
               SR(MPUB(T, [b"a" * 3000, b"b", b"c"])), U("a"), R(0.4), SR(L("BOGUS"))])
add("affinity: msg_timeout/IDENTIFY settings survive hop before SUB",
    lambda T: [SR(IDENT({"feature_negotiation": True, "msg_timeout": 1000, "output_buffer_size": -1})), topics_hop(T, 2),
               consumer(T, rdy=1), C("p"), SR(PUB(T, b"m")), U("a"), R(0.3), RM(7.0), R(0.3)])
add("affinity: pipelined PUBs to 6 topics + SUB + RDY in one write",
    lambda T: [S(b"".join(PUB("%s_%d" % (T, i), b"%d" % i) for i in range(6)) + L("SUB %s_3 c" % T) + L("RDY 5") +
                 PUB("%s_3" % T, b"again") + L("NOP")), R(0.5)])
add("affinity: 300 pipelined PUBs alternating 3 topics",
    lambda T: [S(b"".join(PUB("%s_%d" % (T, i % 3), b"%d" % i) for i in range(300))), R(0.5)])
add("affinity: two consumers same channel reached via different topic hops, cross FIN/REQ/TOUCH",
    lambda T: [SR(PUB(T + "_x", b"1")), consumer(T, rdy=1), C("b"), SR(PUB(T + "_y", b"2"), conn="b"),
               SR(PUB(T + "_z", b"3"), conn="b"), consumer(T, conn="b"), C("p"), SR(PUB(T, b"m")), U("a"), R(0.3),
               SR(L("FIN {ID:a}"), conn="b"), SR(L("REQ {ID:a} 0"), conn="b"), SR(L("TOUCH {ID:a}"), conn="b"),
               SR(L("FIN {ID:a}"), conn="a")])
add("affinity: error after hop closes connection",
    lambda T: [topics_hop(T, 3), SR(L("BOGUS"))])
add("affinity: MPUB 1000 msgs then consume 1000 (RDY 1000)",
    lambda T: [C("p"), SR(MPUB(T, [b"%04d" % i for i in range(1000)]), q=0.3), U("a"), consumer(T, rdy=1000), R(0.6)])

add("slow consumer (never reads, tiny rcvbuf), heartbeat 1000: write deadline",
    lambda T: [CS("a"), SR(IDENT({"heartbeat_interval": 1000})), SR(L("SUB %s c" % T)), S(L("RDY 2500")), C("p"),
               SR(MPUB(T, [b"s" * 4000] * 800), q=0.3), W(4.0), S(L("NOP"), conn="a"), RS(0.5, 10.0, conn="a")], stats=False)
add("output_buffer_timeout -1, RDY 5, one message (no timed flush in nsqd)",
    lambda T: [consumer(T, rdy=5, ident={"output_buffer_timeout": -1}), C("p"), SR(PUB(T, b"x")), U("a"), F(1.5)])
for sr in [1, 50]:
    add("sample_rate %d: 400 msgs, bucketed delivered count" % sr,
        (lambda sr: lambda T: [consumer(T, rdy=500, ident={"sample_rate": sr}), C("p"), SR(MPUB(T, [b"%d" % i for i in range(400)]), q=0.3),
                               U("a"), RS(0.5, 5.0, total=400)])(sr), stats=False)

# ---- message sizes around buffer boundaries
for n in [16383 - 26 - 8, 16384 - 26 - 8, 16384, 65536, 200000]:
    add("message body %d bytes delivered" % n,
        (lambda n: lambda T: [consumer(T, rdy=2), C("p"), SR(PUB(T, bytes(i % 251 for i in range(n)))), U("a"), R(0.4)])(n))
add("message 100000 bytes over snappy both ways",
    lambda T: [SR(IDENT({"feature_negotiation": True, "snappy": True}), q=0.3), SR(PUB(T, b"q" * 50000 + bytes(range(256)) * 195)),
               SR(L("SUB %s c" % T)), S(L("RDY 1")), R(0.4)])
add("message 100000 bytes over deflate both ways",
    lambda T: [SR(IDENT({"feature_negotiation": True, "deflate": True, "deflate_level": 1}), q=0.3),
               SR(PUB(T, b"q" * 50000 + bytes(range(256)) * 195)), SR(L("SUB %s c" % T)), S(L("RDY 1")), R(0.4)])
add("output_buffer_size 64 with 3 messages of 1000 bytes",
    lambda T: [consumer(T, rdy=3, ident={"output_buffer_size": 64}), C("p"), SR(MPUB(T, [b"a" * 1000, b"b" * 1000, b"c" * 1000])), U("a"), R(0.4)])

# ---- more RDY/REQ/FIN interplay
add("RDY 5 -> 3 in flight -> RDY 1 -> FIN one: no new delivery until in_flight < 1",
    lambda T: [C("p"), SR(MPUB(T, [b"%d" % i for i in range(6)])), U("a"), consumer(T, rdy=3), R(0.3), S(L("RDY 1")),
               S(L("FIN {ID}")), R(0.4)])
add("REQ 5000 then FIN before redelivery (deferred not in flight)",
    lambda T: [with_msg(T), S(L("REQ {ID} 5000")), R(0.2), SR(L("FIN {ID}")), SR(L("TOUCH {ID}"))])
add("REQ 0 then FIN old delivery id (same id, new delivery)",
    lambda T: [with_msg(T), S(L("REQ {ID} 0")), R(0.3), SR(L("FIN {ID}")), SR(L("FIN {ID}"))])
add("disconnect with REQ-deferred message, other consumer",
    lambda T: [with_msg(T), S(L("REQ {ID} 300")), R(0.1), X("a"), C("b"), consumer(T, rdy=1, conn="b"), RM(7.0, conn="b"), R(0.3, conn="b")])

# ---- auth ordering
add("auth: SUB bad topic before AUTH", lambda T: SR(L("SUB a*b c")), cfg="auth")
add("auth: SUB missing params before AUTH", lambda T: SR(L("SUB")), cfg="auth")
add("auth: MPUB bad topic before AUTH", lambda T: SR(B("MPUB a*b", MPB([b"a"]))), cfg="auth")
add("auth: MPUB valid before AUTH", lambda T: SR(MPUB(T, [b"a"])), cfg="auth")
add("auth: DPUB out-of-range timeout before AUTH", lambda T: SR(DPUB(T, 99999999)), cfg="auth")
add("auth: PUB too big before AUTH", lambda T: SR(SZ("PUB " + T, 1048577)), cfg="auth")

# ---- config "maxcons": --max-channel-consumers 1
add("maxcons: second SUB on same channel", lambda T: [consumer(T), C("b"), consumer(T, conn="b")], cfg="maxcons")
add("maxcons: second SUB on other channel ok", lambda T: [consumer(T), C("b"), consumer(T, "c2", conn="b")], cfg="maxcons")
add("maxcons: SUB after first consumer left", lambda T: [consumer(T), X("a"), W(0.2), C("b"), consumer(T, conn="b")], cfg="maxcons")

# ---- config "small": tight limits
SMALL = ["--max-msg-size", "100", "--max-body-size", "1000", "--max-rdy-count", "50", "--max-req-timeout", "10s",
         "--max-msg-timeout", "20s", "--msg-timeout", "3s", "--max-heartbeat-interval", "5s",
         "--max-output-buffer-size", "1000", "--min-output-buffer-timeout", "10ms", "--max-output-buffer-timeout", "1s",
         "--output-buffer-timeout", "50ms", "--max-deflate-level", "3"]
add("small: IDENTIFY fn defaults", lambda T: SR(IDENT({"feature_negotiation": True})), cfg="small")
for f, v in [("heartbeat_interval", 5000), ("heartbeat_interval", 5001), ("output_buffer_size", 1000),
             ("output_buffer_size", 1001), ("output_buffer_timeout", 9), ("output_buffer_timeout", 10),
             ("output_buffer_timeout", 1000), ("output_buffer_timeout", 1001), ("msg_timeout", 20000),
             ("msg_timeout", 20001), ("deflate_level", 9)]:
    add("small: IDENTIFY fn %s=%d" % (f, v), (lambda f, v: lambda T: [SR(IDENT({"feature_negotiation": True, f: v})), SR(PUB(T))])(f, v), cfg="small")
add("small: IDENTIFY fn deflate level 9 -> capped 3", lambda T: [SR(IDENT({"feature_negotiation": True, "deflate": True, "deflate_level": 9}), q=0.3), SR(PUB(T))], cfg="small")
add("small: IDENTIFY body 1000 ok", lambda T: SR(IDENT(b"{" + b" " * 998 + b"}")), cfg="small")
add("small: IDENTIFY body 1001", lambda T: SR(IDENT(b"{" + b" " * 999 + b"}")), cfg="small")
add("small: PUB 100 ok", lambda T: SR(PUB(T, b"x" * 100)), cfg="small")
add("small: PUB 101", lambda T: SR(PUB(T, b"x" * 101)), cfg="small")
add("small: DPUB 101", lambda T: SR(DPUB(T, 1, b"x" * 101)), cfg="small")
add("small: DPUB 10000 ok", lambda T: SR(DPUB(T, 10000)), cfg="small")
add("small: DPUB 10001", lambda T: SR(DPUB(T, 10001)), cfg="small")
add("small: MPUB body 1000 ok-size but 1 msg 101", lambda T: SR(SZ("MPUB " + T, 1000, struct.pack(">ii", 1, 101) + b"x" * 101)), cfg="small")
add("small: MPUB body 1001", lambda T: SR(SZ("MPUB " + T, 1001)), cfg="small")
add("small: MPUB count 199 (max) then short", lambda T: [S(SZ("MPUB " + T, 999, struct.pack(">i", 199))), H(), R(0.4)], cfg="small")
add("small: MPUB count 200", lambda T: SR(SZ("MPUB " + T, 999, struct.pack(">i", 200))), cfg="small")
add("small: MPUB 3x100 ok", lambda T: SR(MPUB(T, [b"a" * 100] * 3)), cfg="small")
add("small: MPUB 10 msgs total body 1100 (>max body) but body size field 50",
    lambda T: SR(SZ("MPUB " + T, 50, MPB([b"a" * 100] * 10))), cfg="small")
add("small: AUTH body 1001", lambda T: SR(SZ("AUTH", 1001)), cfg="small")
add("small: RDY 50 ok / 51", lambda T: [consumer(T), S(L("RDY 50")), R(0.2), SR(L("RDY 51"))], cfg="small")
add("small: REQ 10001 clamped -> deferred", lambda T: [with_msg(T), SR(L("REQ {ID} 10001"), q=0.3)], cfg="small")
add("small: default msg-timeout 3s redelivery", lambda T: [with_msg(T, rdy=2), RM(9.0), R(0.3)], cfg="small")
add("small: heartbeat 5000 idle 0.5s ok", lambda T: [SR(IDENT({"heartbeat_interval": 5000})), F(0.5), SR(PUB(T))], cfg="small")

# ---- config "nocomp": deflate/snappy disabled
NOCOMP = ["--deflate=false", "--snappy=false", "--max-deflate-level", "9"]
for obj in [{"feature_negotiation": True, "deflate": True}, {"feature_negotiation": True, "snappy": True},
            {"feature_negotiation": True, "deflate": True, "snappy": True},
            {"feature_negotiation": True, "deflate": True, "deflate_level": 9},
            {"feature_negotiation": True, "deflate_level": 9}, {"feature_negotiation": True}]:
    add("nocomp: IDENTIFY %s then PUB" % json.dumps(obj, separators=(",", ":")),
        (lambda obj: lambda T: [SR(IDENT(obj), q=0.3), SR(PUB(T))])(obj), cfg="nocomp")
add("nocomp: IDENTIFY fn deflate level 9 (enabled max 9) n/a", lambda T: SR(IDENT({"feature_negotiation": True, "deflate_level": 0})), cfg="nocomp")
add("maxlvl9: deflate level 9 then compressed PUB",
    lambda T: [SR(IDENT({"feature_negotiation": True, "deflate": True, "deflate_level": 9}), q=0.3), SR(PUB(T))], cfg="maxlvl9")

# ---- config "auth": auth server at a local fake http server
add("auth: IDENTIFY fn shows auth_required", lambda T: SR(IDENT({"feature_negotiation": True})), cfg="auth")
add("auth: PUB before AUTH", lambda T: SR(PUB(T)), cfg="auth")
add("auth: SUB before AUTH", lambda T: SR(L("SUB %s c" % T)), cfg="auth")
add("auth: MPUB before AUTH (bad body too)", lambda T: SR(SZ("MPUB " + T, 0)), cfg="auth")
add("auth: DPUB before AUTH", lambda T: SR(DPUB(T, 10)), cfg="auth")
add("auth: DPUB bad timeout before AUTH", lambda T: SR(DPUB(T, "abc")), cfg="auth")
add("auth: PUB bad size before AUTH", lambda T: SR(SZ("PUB " + T, 0)), cfg="auth")
add("auth: NOP/RDY before AUTH", lambda T: [SR(L("NOP")), SR(L("RDY 1"))], cfg="auth")
add("auth: AUTH good, PUB, SUB", lambda T: [SR(B("AUTH", b"good")), SR(PUB(T)), SR(L("SUB %s c" % T))], cfg="auth")
add("auth: AUTH twice", lambda T: [SR(B("AUTH", b"good")), SR(B("AUTH", b"good"))], cfg="auth")
add("auth: AUTH none", lambda T: SR(B("AUTH", b"none")), cfg="auth")
add("auth: AUTH rejected (403)", lambda T: SR(B("AUTH", b"bad")), cfg="auth")
add("auth: AUTH server garbage", lambda T: SR(B("AUTH", b"garbage")), cfg="auth")
add("auth: pubonly SUB", lambda T: [SR(B("AUTH", b"pubonly")), SR(L("SUB p%s c" % T))], cfg="auth")
add("auth: pubonly PUB wrong topic", lambda T: [SR(B("AUTH", b"pubonly")), SR(PUB("x" + T))], cfg="auth")
add("auth: pubonly PUB/MPUB/DPUB ok topic", lambda T: [SR(B("AUTH", b"pubonly")), SR(PUB("p" + T)), SR(MPUB("p" + T, [b"a"])), SR(DPUB("p" + T, 5))], cfg="auth")
add("auth: pubonly MPUB wrong topic", lambda T: [SR(B("AUTH", b"pubonly")), SR(MPUB("x" + T, [b"a"]))], cfg="auth")
add("auth: AUTH then IDENTIFY", lambda T: [SR(B("AUTH", b"good")), SR(IDENT({"feature_negotiation": True}))], cfg="auth")

# ---- config "tls": cert available
add("tls: IDENTIFY fn tls_v1 -> handshake, OK, PUB", lambda T: [SR(IDENT({"feature_negotiation": True, "tls_v1": True}), q=0.4), SR(PUB(T))], cfg="tls")
add("tls: tls_v1 + snappy", lambda T: [SR(IDENT({"feature_negotiation": True, "tls_v1": True, "snappy": True}), q=0.4), SR(PUB(T))], cfg="tls")
add("tls: tls_v1 + deflate", lambda T: [SR(IDENT({"feature_negotiation": True, "tls_v1": True, "deflate": True}), q=0.4), SR(PUB(T))], cfg="tls")
add("tls: tls_v1 without feature_negotiation", lambda T: [SR(IDENT({"tls_v1": True})), SR(PUB(T))], cfg="tls")
add("tls: no tls, plain PUB", lambda T: [SR(IDENT({"feature_negotiation": True})), SR(PUB(T))], cfg="tls")
add("tlsreq: PUB before TLS", lambda T: SR(PUB(T)), cfg="tlsreq")
add("tlsreq: NOP before TLS", lambda T: SR(L("NOP")), cfg="tlsreq")
add("tlsreq: unknown cmd before TLS", lambda T: SR(L("FOO")), cfg="tlsreq")
add("tlsreq: SUB before TLS (bad names)", lambda T: SR(L("SUB a*b")), cfg="tlsreq")
add("tlsreq: IDENTIFY without tls then PUB", lambda T: [SR(IDENT({"feature_negotiation": True})), SR(PUB(T))], cfg="tlsreq")
add("tlsreq: IDENTIFY tls then PUB", lambda T: [SR(IDENT({"feature_negotiation": True, "tls_v1": True}), q=0.4), SR(PUB(T))], cfg="tlsreq")

# ----------------------------------------------------------------------------- driver
def make_cert(d):
    key, crt = os.path.join(d, "key.pem"), os.path.join(d, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
                    "-days", "2", "-subj", "/CN=localhost"], check=True, capture_output=True)
    return key, crt

def cfg_flags(cfg, ctx):
    if cfg in ("def", "long"):
        return []
    if cfg == "small":
        return SMALL
    if cfg == "nocomp":
        return NOCOMP
    if cfg == "maxcons":
        return ["--max-channel-consumers", "1"]
    if cfg == "maxlvl9":
        return ["--max-deflate-level", "9"]
    if cfg == "auth":
        return ["--auth-http-address", "127.0.0.1:%d" % ctx["auth_port"]]
    if cfg == "tls":
        return ["--tls-cert", ctx["crt"], "--tls-key", ctx["key"]]
    if cfg == "tlsreq":
        return ["--tls-cert", ctx["crt"], "--tls-key", ctx["key"], "--tls-required=true"]
    raise ValueError(cfg)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ours"); ap.add_argument("ref")
    ap.add_argument("--only", action="append", default=[])
    ap.add_argument("--cores", default="1,2")
    ap.add_argument("--out", default=os.path.join(HERE, "last_run.md"))
    ap.add_argument("-v", action="store_true")
    ap.add_argument("--long", action="store_true", help="also run the ~65 s default-heartbeat scenarios")
    a = ap.parse_args()
    cores = [int(x) for x in a.cores.split(",") if x]
    scen = [s for s in SCEN if not a.only or any(o.lower() in s["name"].lower() or o == s["cfg"] for o in a.only)]
    if not a.long:
        scen = [s for s in scen if s["cfg"] != "long"]
    ctx = {}
    tmp = tempfile.mkdtemp(prefix="difftcp-ctx-")
    auth_srv = None
    try:
        if any(s["cfg"].startswith("tls") for s in scen):
            ctx["key"], ctx["crt"] = make_cert(tmp)
        if any(s["cfg"] == "auth" for s in scen):
            ctx["auth_port"] = ports(1)[0]
            auth_srv = http.server.ThreadingHTTPServer(("127.0.0.1", ctx["auth_port"]), AuthHandler)
            threading.Thread(target=auth_srv.serve_forever, daemon=True).start()
        results = []
        cfgs = []
        for s in scen:
            if s["cfg"] not in cfgs:
                cfgs.append(s["cfg"])
        for cfg in cfgs:
            flags = cfg_flags(cfg, ctx)
            brokers = [Broker("ref", a.ref, flags)] + [Broker("ours-c%d" % c, a.ours, flags, cores=c) for c in cores]
            try:
                for b in brokers:
                    b.start()
                for idx, s in enumerate(x for x in scen if x["cfg"] == cfg):
                    T = "s%s%03d" % (cfg[:2], idx)
                    outs = {}
                    def work(b):
                        before = b.stats()
                        run = Run(b, s["fn"](T), s["auto"])
                        run.execute()
                        time.sleep(0.3)
                        after = b.stats()
                        crash = None
                        if not b.alive():
                            crash = b.restart()
                        outs[b.label] = (run.events, stats_delta(before, after, T), crash)
                    th = [threading.Thread(target=work, args=(b,)) for b in brokers]
                    for t in th:
                        t.start()
                    for t in th:
                        t.join()
                    ref_ev, ref_st, _ = outs["ref"]
                    rec = dict(name=s["name"], cfg=cfg, topic=T, ref=ref_ev, ref_stats=ref_st, diffs={})
                    for b in brokers[1:]:
                        ev, st, crash = outs[b.label]
                        probs = compare(ref_ev, ev, s["hb_tol"])
                        if st != ref_st and s.get("stats", True):
                            probs.append("stats delta differs")
                        if crash is not None:
                            probs.append("BROKER CRASHED (log tail: %r)" % crash[-600:])
                        if probs:
                            rec["diffs"][b.label] = (probs, ev, st)
                    results.append(rec)
                    status = "ok" if not rec["diffs"] else "%s(%s)" % (
                        "SOFT" if all(p.startswith("soft:") for d in rec["diffs"].values() for p in d[0]) else "DIFF",
                        ",".join(sorted(rec["diffs"])))
                    print("[%s] %-70s %s" % (cfg, s["name"][:70], status), flush=True)
                    if a.v:
                        print(fmt_events(ref_ev))
            finally:
                for b in brokers:
                    b.stop()
        write_report(results, a.out, a.ours, a.ref, cores)
        nd = sum(1 for r in results if r["diffs"])
        print("\n%d scenarios, %d with differences -> %s" % (len(results), nd, a.out))
        return 1 if nd else 0
    finally:
        if auth_srv:
            auth_srv.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)

def write_report(results, path, ours, ref, cores):
    out = ["# parity-tcp.py run", "", "ours: `%s` (cores %s), ref: `%s`" % (ours, cores, ref), "",
           "%d scenarios, %d with differences." % (len(results), sum(1 for r in results if r["diffs"])), ""]
    for r in results:
        if not r["diffs"]:
            continue
        out += ["## [%s] %s  (topic %s)" % (r["cfg"], r["name"], r["topic"]), ""]
        labels = list(r["diffs"])
        # collapse identical diffs for c1/c2
        groups = []
        for lb in labels:
            probs, ev, st = r["diffs"][lb]
            key = ([(x[0], x[1], x[3]) for x in ev], st)
            for g in groups:
                if g[0] == key:
                    g[1].append(lb); break
            else:
                groups.append((key, [lb], probs, ev, st))
        out += ["ref events:", "```", fmt_events(r["ref"]), "```"]
        for key, lbs, probs, ev, st in groups:
            out += ["%s: %s" % ("+".join(lbs), "; ".join(probs)), "```", fmt_events(ev), "```"]
            if st != r["ref_stats"]:
                out += ["stats delta ref:", "```", fmt_delta(r["ref_stats"]), "```", "stats delta %s:" % "+".join(lbs),
                        "```", fmt_delta(st), "```"]
        out.append("")
    out += ["## all scenarios", ""] + ["- [%s] %s: %s" % (r["cfg"], r["name"], "DIFF " + ",".join(r["diffs"]) if r["diffs"] else "same")
                                       for r in results]
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")

if __name__ == "__main__":
    sys.exit(main())
