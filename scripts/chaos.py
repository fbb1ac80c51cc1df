#!/usr/bin/env python3
"""Randomized chaos workload with invariant checks against an nsqd (ours or the reference).

Seeded, bounded in time (--seconds of load per run, split into --rounds) and in count
(--max-messages). Python 3.11 stdlib only; one thread per connection.

    scripts/chaos.py --nsqd target/release/nsqd --seed 1 --seconds 120
    scripts/chaos.py --nsqd /path/to/nsqd-v1.3.0 --cores 0 --seed 1     # reference (no --cores)

Workload: topics t0..t{N-1} plus `e0#ephemeral`; channels c0, c1 per topic plus
`ce#ephemeral` on a few topics; TCP publishers doing PUB / MPUB / DPUB (defer 0-2000 ms), some
aborted mid-body, some fire-and-close; an HTTP publisher (/pub, /pub?defer, /mpub text and
binary); consumers per channel on separate connections with random IDENTIFY msg_timeout and
RDY, which FIN most messages, REQ some (with delays), TOUCH some, let some time out, CLS or
drop the connection (sometimes with RST) and reconnect; an admin thread doing channel/topic
pause+unpause, channel create, channel/topic empty, channel/topic delete. Optionally a SIGTERM
+ restart on the same data directory in the middle of the load (--restart).

After each round a drain phase (everything unpaused, every consumer RDY high and FINing at once,
extra consumers for channels nobody consumes) runs until /stats is quiet, then the invariants:
  lost            an acknowledged publish not delivered to a channel that existed when it was
                  published (confirmed by a SUB OK / channel create answered before the publish
                  was sent) and was not emptied/deleted (or, ephemeral, left without consumers)
                  since
  phantom         a delivered body that was never sent, was only partly sent, or was refused
  corrupt         a delivered body differing from the one published (or on another topic)
  id_mismatch     one body delivered under two IDs on one channel (or two bodies, one ID)
  fin_reappeared  a message delivered again after a FIN that the broker accepted (a FIN is
                  accepted when a later barrier `FIN zz…` comes back as E_FIN_FAILED and no
                  error for the FIN itself came first)
  early_redelivery a message delivered again while it must still have been in flight (before
                  its timeout, TOUCH-extended, and before its REQ delay), outside restarts
  early_deferred  a DPUB message delivered before its defer elapsed (only checked when the
                  memory queue is large; nsqd spills deferral to disk otherwise)
  attempts        the attempts field not increasing between deliveries of one message
  op_failed       FIN/REQ/TOUCH refused for a message this connection was sent well within its
                  timeout, with no empty/delete/restart in between
  stats_*         /stats after the drain: depths, in-flight, deferred not 0; topic message_count
                  outside [acked, acked+uncertain]; channel message_count != topic message_count
                  for channels that saw no empty/delete; per-client counters (message_count,
                  finish_count, requeue_count, in_flight_count, ready_count) differing from what
                  the connection saw; timeout/requeue counts implausible; clients or producers
                  listed whose connection closed seconds ago
  error_frame     an error frame we did not provoke
  hang / stuck    no answer to a command within 10 s; a drain that does not finish
  crash / exit    the broker exiting by itself, SIGTERM not exiting 0 within 30 s, panics or
                  unexpected ERROR lines in its stderr
  resurrected     a message delivered on a channel after a /topic/delete that it was acked
                  before, or after a /channel/delete or /channel/empty that it had reached the
                  channel before; and, after the last drain, SIGTERM, restart: any depth or
                  delivery
  stderr_disk     ERROR lines of the broker about its disk queues (corrupt, unreadable,
                  failed removes, read position reaching the write position with records left)
RSS after each drain is printed; growth across rounds is reported.

Exit status 0 when no invariant was violated, 1 otherwise; a JSON summary is written to
--out/summary.json and every violation with the trace of its message to --out/violations.txt.
"""

import argparse
import bisect
import gc
import collections
import heapq
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse

now = time.monotonic

FRAME_RESPONSE, FRAME_ERROR, FRAME_MESSAGE = 0, 1, 2
HEARTBEAT = b"_heartbeat_"
# Highest RDY a consumer uses. With thousands in flight on one connection, this process reads
# the frames seconds after the broker sent them (each costs it a few hundred µs under the GIL),
# and every receive-time check (timeouts, REQ delays, FIN/redelivery order) becomes noise.
RDY_CAP = 100


class Closed(Exception):
    pass


# --------------------------------------------------------------------------------------------
# wire


class Conn:
    """One V2 connection: magic, framed reads, commands."""

    def __init__(self, addr, timeout=5.0):
        self.sock = socket.create_connection(addr, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.sock.sendall(b"  V2")
        self.closed = False

    def send(self, data, timeout=10.0):
        self.sock.settimeout(timeout)
        try:
            self.sock.sendall(data)
        except (OSError, socket.timeout) as e:
            raise Closed(f"send: {e}")

    def poll(self, timeout):
        """Read what is there (waiting up to timeout) and return complete frames."""
        self.sock.settimeout(max(timeout, 0.0005))
        try:
            chunk = self.sock.recv(262144)
        except socket.timeout:
            chunk = None
        except OSError as e:
            raise Closed(f"recv: {e}")
        if chunk == b"":
            frames = self._parse()
            if frames:
                return frames + [None]  # None = EOF after these
            raise Closed("eof")
        if chunk:
            self.buf += chunk
        return self._parse()

    def _parse(self):
        out = []
        b = self.buf
        off = 0
        while len(b) - off >= 8:
            size, ftype = struct.unpack_from(">ii", b, off)
            if size < 4 or size > 64 * 1024 * 1024:
                raise Closed(f"bad frame size {size}")
            if len(b) - off < 4 + size:
                break
            out.append((ftype, bytes(b[off + 8 : off + 4 + size])))
            off += 4 + size
        if off:
            del b[:off]
        return out

    def close(self, rst=False):
        if self.closed:
            return
        self.closed = True
        try:
            if rst:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.sock.close()
        except OSError:
            pass


def cmd_body(line, body):
    return line + struct.pack(">i", len(body)) + body


def mpub_body(bodies):
    parts = [struct.pack(">i", len(bodies))]
    for b in bodies:
        parts.append(struct.pack(">i", len(b)))
        parts.append(b)
    return b"".join(parts)


def parse_message(data):
    ts, attempts = struct.unpack_from(">qH", data, 0)
    mid = data[10:26].decode("ascii", "replace")
    return ts, attempts, mid, data[26:]


def is_ephemeral(name):
    return name.endswith("#ephemeral")


# --------------------------------------------------------------------------------------------
# recording


class Pub:
    __slots__ = ("topic", "kind", "ps", "pe", "status", "defer", "length", "err", "conn")

    def __init__(self, topic, kind, ps, defer, length, conn):
        self.topic, self.kind, self.ps, self.defer, self.length, self.conn = topic, kind, ps, defer, length, conn
        self.pe = None
        self.status = "pending"  # ok | fail | unc | partial
        self.err = None


class Op:
    __slots__ = ("kind", "sent", "status", "delay", "conn", "err", "seq_no", "mid")

    def __init__(self, kind, sent, conn, delay=0):
        self.kind, self.sent, self.conn, self.delay = kind, sent, conn, delay
        self.status = "pending"  # ok | failed | unc
        self.err = None


class Delivery:
    __slots__ = ("recv", "conn", "attempts", "mid", "ops", "deadline_lb", "ts")

    def __init__(self, recv, conn, attempts, mid, ts):
        self.recv, self.conn, self.attempts, self.mid, self.ts = recv, conn, attempts, mid, ts
        self.ops = []
        self.deadline_lb = None


class ConnInfo:
    def __init__(self, cid, role, topic, channel, msg_timeout):
        self.cid = cid
        self.client_id = f"chaos{cid}"
        self.role = role
        self.topic, self.channel = topic, channel
        self.msg_timeout = msg_timeout
        self.opened = now()
        self.sub_ok = None
        self.closed = None
        self.close_kind = None
        self.received = 0
        self.fin_ok = self.req_ok = 0
        self.unresolved = 0
        self.rdy = 0
        self.max_rdy = 0
        self.rdy_hist = []
        self.epoch = 0


class Recorder:
    def __init__(self, args):
        self.args = args
        self.lock = threading.RLock()
        self.pubs = {}  # key(bytes) -> Pub
        self.deliv = {}  # (ck, key) -> [Delivery]
        self.conns = {}  # cid -> ConnInfo
        self.confirm = collections.defaultdict(list)  # ck -> [(cs, ce, what)]
        self.destr_ch = collections.defaultdict(list)  # ck -> [(start, end, kind)]
        self.destr_tp = collections.defaultdict(list)  # topic -> [(start, end, kind)]
        self.restarts = []  # (sigterm, ready)
        self.epoch_starts = []  # broker start times (spawn)
        self.epoch_ends = []
        self.members = collections.defaultdict(set)  # ck -> cids with SUB OK and open
        self.violations = []
        self.seen = set()
        self.notes = []
        self.admin_log = []
        self.seq = 0
        self.cid = 0
        self.barrier = 0
        self.last_delivery = 0.0
        self.counts = collections.Counter()
        self.max_depth = collections.defaultdict(int)
        self.stalls = []

    def next_seq(self):
        with self.lock:
            self.seq += 1
            return self.seq

    def new_conn(self, role, topic=None, channel=None, msg_timeout=None):
        with self.lock:
            self.cid += 1
            ci = ConnInfo(self.cid, role, topic, channel, msg_timeout)
            ci.epoch = len(self.epoch_starts) - 1
            self.conns[self.cid] = ci
            return ci

    def next_barrier(self):
        with self.lock:
            self.barrier += 1
            return "zz%014d" % self.barrier

    def violate(self, kind, msg, key=None, ck=None):
        with self.lock:
            if (kind, msg) in self.seen:
                return
            self.seen.add((kind, msg))
            self.violations.append((kind, msg, key, ck))

    def note(self, msg):
        with self.lock:
            self.notes.append(msg)

    def conn_closed(self, ci, kind):
        t = now()
        with self.lock:
            if ci.closed is not None:
                return
            ci.closed = t
            ci.close_kind = kind
            if ci.role == "consumer" and ci.sub_ok is not None:
                ck = f"{ci.topic}/{ci.channel}"
                self.members[ck].discard(ci.cid)
                if is_ephemeral(ci.channel) and not self.members[ck]:
                    # nsqd deletes an ephemeral channel when its last client leaves
                    self.destr_ch[ck].append((t, t + 2.0, "ephemeral-empty"))


def body_for(topic, seq, pad):
    head = f"{topic}|{seq}|".encode()
    ch = bytes([97 + seq % 26])
    return head + ch * pad


def body_key(body):
    i = body.find(b"|")
    j = body.find(b"|", i + 1) if i >= 0 else -1
    if j < 0:
        return None
    return body[: j + 1]


# --------------------------------------------------------------------------------------------
# broker


def free_port(rng, taken):
    for _ in range(500):
        p = rng.randint(53000, 55999)
        if p in taken:
            continue
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
        except OSError:
            continue
        finally:
            s.close()
        taken.add(p)
        return p
    raise RuntimeError("no free port in 53000-55999")


class Broker:
    def __init__(self, args, rec, data, tcp, http_port, extra):
        self.args, self.rec, self.data = args, rec, data
        self.tcp, self.http = tcp, http_port
        self.extra = extra
        self.proc = None
        self.stderr_paths = []
        self.expected_exit = False
        self.n = 0

    def cmdline(self):
        c = [self.args.nsqd]
        if self.args.cores:
            c.append(f"--cores={self.args.cores}")
        c += [
            f"--tcp-address=127.0.0.1:{self.tcp}",
            f"--http-address=127.0.0.1:{self.http}",
            f"--data-path={self.data}",
            "--broadcast-address=127.0.0.1",
        ]
        return c + self.extra

    def start(self):
        self.n += 1
        path = os.path.join(self.args.out, f"broker{self.n}.stderr")
        self.stderr_paths.append(path)
        f = open(path, "wb")
        self.expected_exit = False
        t0 = now()
        self.proc = subprocess.Popen(self.cmdline(), stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        f.close()
        with self.rec.lock:
            self.rec.epoch_starts.append(t0)
        for _ in range(200):
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited at start rc={self.proc.returncode}: {open(path).read()[-2000:]}")
            try:
                st, _ = http_req(self.http, "GET", "/ping", timeout=1)
                if st == 200:
                    s = socket.create_connection(("127.0.0.1", self.tcp), timeout=1)
                    s.close()
                    return now()
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("broker did not come up")

    def rss_kib(self):
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            return None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, why):
        """SIGTERM; returns (rc, seconds)."""
        if not self.alive():
            return self.proc.returncode if self.proc else None, 0
        self.expected_exit = True
        t = now()
        with self.rec.lock:
            self.rec.epoch_ends.append(t)
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.rec.violate("exit", f"SIGTERM ({why}) did not stop the broker within 30 s; killed")
            self.proc.kill()
            rc = self.proc.wait()
        dt = now() - t
        if rc != 0:
            self.rec.violate("exit", f"SIGTERM ({why}) exit status {rc} after {dt:.1f}s")
        return rc, dt

    def kill(self):
        if self.alive():
            self.expected_exit = True
            self.proc.kill()
            self.proc.wait()


def http_req(port, method, path, body=None, timeout=10):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def q(s):
    return urllib.parse.quote(s, safe="")


# --------------------------------------------------------------------------------------------
# context


class Ctx:
    def __init__(self, args, rec, broker, rng):
        self.args, self.rec, self.broker = args, rec, broker
        self.addr = ("127.0.0.1", broker.tcp)
        self.stop = threading.Event()  # everything ends
        self.load = threading.Event()  # chaos load running
        self.drain = threading.Event()  # drain mode
        self.quiesce = threading.Event()  # consumers: no new actions, answer heartbeats only
        self.restarting = threading.Event()
        self.published = 0
        self.pub_lock = threading.Lock()
        self.consumers = []
        self.topics = [f"t{i}" for i in range(args.topics)]
        self.eph_topic = "e0#ephemeral"
        self.all_topics = self.topics + [self.eph_topic]
        self.base_channels = {}
        for i, t in enumerate(self.all_topics):
            chans = [f"c{j}" for j in range(args.channels)]
            if t == self.eph_topic or i % 3 == 0:
                chans.append("ce#ephemeral")
            self.base_channels[t] = chans
        self.dynamic = {}  # created by admin: (t, c)
        self.msg_timeout_flag = args.msg_timeout_s
        self.max_seen_timeout = args.msg_timeout_s

    def may_publish(self, n=1):
        with self.pub_lock:
            if self.published + n > self.args.max_messages:
                return False
            self.published += n
            return True


# --------------------------------------------------------------------------------------------
# consumer


class Consumer(threading.Thread):
    def __init__(self, ctx, topic, channel, idx, anchor=False, drain_only=False):
        super().__init__(daemon=True)
        self.ctx, self.topic, self.channel = ctx, topic, channel
        self.ck = f"{topic}/{channel}"
        self.rng = random.Random(ctx.args.seed * 1000003 + idx * 7919)
        self.anchor = anchor
        self.drain_only = drain_only
        self.conn = None
        self.ci = None
        self.unresolved = []
        self.barriers = {}
        self.held = {}
        self.actions = []
        self.done = threading.Event()
        self.want_barrier = threading.Event()
        self.barrier_done = threading.Event()
        self.barrier_done.set()
        self.name = f"consumer-{self.ck}-{idx}"

    # ---- one connection
    def connect(self):
        rec = self.ctx.rec
        a = self.ctx.args
        r = self.rng
        mt = 0
        if not self.drain_only and r.random() < 0.6:
            mt = r.choice([1000, 1500, 2000, 3000, 5000, 8000])
        ident = {"client_id": "", "hostname": "chaos", "feature_negotiation": True, "user_agent": "chaos/1"}
        if mt:
            ident["msg_timeout"] = mt
        if r.random() < 0.3:
            ident["heartbeat_interval"] = r.choice([1000, 2000, 5000])
        if r.random() < 0.3:
            # not -1: nsqd would then hold message frames until something else flushes them,
            # so receive times would say nothing about delivery times
            ident["output_buffer_timeout"] = r.choice([25, 100, 250])
        if r.random() < 0.2:
            ident["output_buffer_size"] = r.choice([-1, 64, 4096, 65536])
        eff_timeout = (mt / 1000.0) if mt else self.ctx.msg_timeout_flag
        ci = rec.new_conn("consumer", self.topic, self.channel, eff_timeout)
        ident["client_id"] = ci.client_id
        try:
            conn = Conn(self.ctx.addr)
        except OSError as e:
            rec.conn_closed(ci, f"connect-failed {e}")
            raise Closed(str(e))
        self.conn, self.ci = conn, ci
        self.pending = {}  # (kind, mid) -> deque[(op, delivery)]
        self.unresolved = []  # ops in send order
        self.barriers = {}  # barrier id -> index into unresolved-at-send
        self.actions = []  # heap (due, seq, kind, delivery, extra)
        self.held = {}  # mid -> delivery (in flight to us as far as we know)
        self.aseq = 0
        try:
            conn.send(cmd_body(b"IDENTIFY\n", json.dumps(ident).encode()))
            resp = self.wait_response()
            if resp[0] != FRAME_RESPONSE:
                rec.violate("error_frame", f"IDENTIFY {ident} -> {resp[1][:200]!r}")
                raise Closed("identify failed")
            try:
                j = json.loads(resp[1])
                if int(j.get("msg_timeout", 0)) > 0:
                    ci.msg_timeout = j["msg_timeout"] / 1000.0
            except ValueError:
                pass
            with self.ctx.rec.lock:
                self.ctx.max_seen_timeout = max(self.ctx.max_seen_timeout, ci.msg_timeout)
            cs = now()
            conn.send(f"SUB {self.topic} {self.channel}\n".encode())
            resp = self.wait_response()
            ce = now()
            if resp[0] != FRAME_RESPONSE or resp[1] != b"OK":
                txt = resp[1][:200]
                if not txt.startswith(b"E_SUB_FAILED"):
                    rec.violate("error_frame", f"SUB {self.ck} -> {txt!r}")
                raise Closed(f"sub failed {txt!r}")
            with rec.lock:
                ci.sub_ok = ce
                rec.confirm[self.ck].append((cs, ce, f"SUB conn {ci.cid}"))
                rec.members[self.ck].add(ci.cid)
        except Closed:
            self.close("setup")
            raise

    def wait_response(self, timeout=10.0):
        deadline = now() + timeout
        while True:
            left = deadline - now()
            if left <= 0:
                self.ctx.rec.violate("hang", f"no response within {timeout}s on {self.ck} conn {self.ci.cid}")
                raise Closed("response timeout")
            for fr in self.conn.poll(min(left, 0.2)):
                if fr is None:
                    raise Closed("eof")
                ft, data = fr
                if ft == FRAME_RESPONSE and data == HEARTBEAT:
                    self.conn.send(b"NOP\n")
                    continue
                if ft == FRAME_MESSAGE:
                    self.on_message(data)
                    continue
                if ft == FRAME_ERROR and self.on_error(data):
                    continue
                return ft, data

    def set_rdy(self, n):
        n = max(0, min(n, self.ctx.args.max_rdy))
        self.conn.send(f"RDY {n}\n".encode())
        t = now()
        with self.ctx.rec.lock:
            self.ci.rdy = n
            self.ci.max_rdy = max(self.ci.max_rdy, n)
            self.ci.rdy_hist.append((t, n))

    def close(self, kind, rst=False):
        if self.conn is None:
            return
        self.conn.close(rst=rst)
        rec = self.ctx.rec
        with rec.lock:
            for op in self.unresolved:
                if op.status == "pending":
                    op.status = "unc"
            self.unresolved = []
        rec.conn_closed(self.ci, kind)
        self.conn = None

    # ---- frames
    def on_message(self, data):
        rec = self.ctx.rec
        t = now()
        try:
            ts, attempts, mid, body = parse_message(data)
        except struct.error:
            rec.violate("corrupt", f"short message frame on {self.ck}: {data[:64]!r}")
            return
        key = body_key(body)
        ci = self.ci
        d = Delivery(t, ci.cid, attempts, mid, ts)
        d.deadline_lb = t - 0.3 + ci.msg_timeout
        if self.ctx.args.selftest_drop and self.rng.random() < self.ctx.args.selftest_drop:
            # self-test of the checker: forget this delivery (FIN it so it does not come back)
            self.conn.send(f"FIN {mid}\n".encode())
            with rec.lock:
                ci.received += 1
                ci.fin_ok += 1
            return
        with rec.lock:
            rec.last_delivery = t
            ci.received += 1
            rec.counts["deliveries"] += 1
            if key is None:
                rec.violate("phantom", f"{self.ck}: body without our header {body[:80]!r} id {mid}")
                return
            p = rec.pubs.get(key)
            if p is None:
                rec.violate("phantom", f"{self.ck}: body never published {body[:80]!r} id {mid}", key, self.ck)
            else:
                exp = body_for(p.topic, int(key.split(b"|")[1]), p.length - len(key))
                if body != exp:
                    rec.violate("corrupt", f"{self.ck}: body of {key!r} differs (len {len(body)} vs {len(exp)})", key, self.ck)
                if p.topic != self.topic:
                    rec.violate("corrupt", f"{self.ck}: body of topic {p.topic} delivered on {self.topic}", key, self.ck)
                if p.status in ("partial",):
                    rec.violate("phantom", f"{self.ck}: partly sent publish delivered: {key!r}", key, self.ck)
            rec.deliv.setdefault((self.ck, key), []).append(d)
        self.held[mid] = d
        self.decide(d)

    def on_error(self, data):
        """Non-fatal FIN/REQ/TOUCH failures: resolve; returns True if consumed."""
        rec = self.ctx.rec
        txt = data.decode("latin1")
        m = re.match(r"E_(FIN|REQ|TOUCH)_FAILED (FIN|REQ|TOUCH) (\S{16}) failed (.*)$", txt)
        if not m:
            return False
        kind, mid, why = m.group(2), m.group(3), m.group(4)
        if kind == "FIN" and mid.startswith("zz"):
            idx = self.barriers.pop(mid, None)
            if idx is None:
                rec.violate("error_frame", f"unknown barrier answer {txt}")
                return True
            with rec.lock:
                keep = []
                for op in self.unresolved:
                    if op.seq_no < idx:
                        dq = self.pending.get((op.kind, op.mid))
                        if dq:
                            try:
                                dq.remove(op)
                            except ValueError:
                                pass
                            if not dq:
                                del self.pending[(op.kind, op.mid)]
                        if op.status == "pending":
                            op.status = "ok"
                            if op.kind == "FIN":
                                self.ci.fin_ok += 1
                            elif op.kind == "REQ":
                                self.ci.req_ok += 1
                    else:
                        keep.append(op)
                self.unresolved = keep
            if not self.barriers:
                self.barrier_done.set()
            return True
        dq = self.pending.get((kind, mid))
        if not dq:
            rec.violate("error_order", f"{self.ck} conn {self.ci.cid}: {txt}: no such op pending (already confirmed by a later barrier, or never sent)")
            return True
        op = dq.popleft()
        if not dq:
            del self.pending[(kind, mid)]
        with rec.lock:
            op.status = "failed"
            op.err = why
            if op in self.unresolved:
                self.unresolved.remove(op)
        return True

    # ---- decisions
    def schedule(self, due, kind, d, extra=None):
        self.aseq += 1
        heapq.heappush(self.actions, (due, self.aseq, kind, d, extra))

    def decide(self, d):
        t = now()
        if self.ctx.drain.is_set() or self.drain_only:
            self.schedule(t, "FIN", d)
            return
        r = self.rng.random()
        T = self.ci.msg_timeout
        p_timeout = 0.05 if T <= 10 else 0.004
        if r < p_timeout:
            return  # let it time out
        r -= p_timeout
        if r < 0.08:
            delay = self.rng.choice([0, 0, self.rng.randint(1, 2000)])
            self.schedule(t + self.rng.uniform(0, min(0.3, T / 4)), "REQ", d, delay)
            return
        r -= 0.08
        if r < 0.05:
            if T <= 8:
                self.schedule(t + T * 0.6, "TOUCH", d)
                self.schedule(t + T * 1.15, "FIN", d)
            else:
                self.schedule(t + self.rng.uniform(0, 1), "TOUCH", d)
                self.schedule(t + self.rng.uniform(1, 2), "FIN", d)
            return
        r -= 0.05
        if r < 0.01:
            self.schedule(t + T + 0.6, "FIN", d)  # too late: expected to fail
            return
        if self.rng.random() < 0.7:
            self.schedule(t, "FIN", d)
        else:
            self.schedule(t + self.rng.uniform(0, min(1.0, T * 0.5)), "FIN", d)

    def do_op(self, kind, d, extra):
        rec = self.ctx.rec
        if d.conn != self.ci.cid:
            return
        t = now()
        if self.pending.get((kind, d.mid)):
            # the same command for the same ID still unconfirmed: a barrier between them, so
            # that an error frame can only belong to the later one
            self.send_barrier()
        op = Op(kind, t, self.ci.cid, extra or 0)
        op.mid = d.mid
        op.seq_no = self.next_op_no()
        if kind == "FIN":
            line = f"FIN {d.mid}\n"
        elif kind == "REQ":
            line = f"REQ {d.mid} {extra}\n"
        else:
            line = f"TOUCH {d.mid}\n"
        with rec.lock:
            d.ops.append(op)
            self.unresolved.append(op)
        self.pending.setdefault((kind, d.mid), collections.deque()).append(op)
        if kind in ("FIN", "REQ"):
            self.held.pop(d.mid, None)
        self.conn.send(line.encode())

    def next_op_no(self):
        self.aseq += 1
        return self.aseq

    def send_barrier(self):
        bid = self.ctx.rec.next_barrier()
        self.barriers[bid] = self.next_op_no()
        self.barrier_done.clear()
        self.conn.send(f"FIN {bid}\n".encode())

    # ---- main loop
    def session(self):
        a = self.ctx.args
        r = self.rng
        self.connect()
        if self.drain_only or self.ctx.drain.is_set():
            self.set_rdy(min(a.max_rdy, RDY_CAP))
        else:
            self.set_rdy(r.choice([1, 2, 5, 10, r.randint(1, min(a.max_rdy, 100))]))
        last_barrier = now()
        in_drain = self.ctx.drain.is_set()
        while not self.ctx.stop.is_set():
            t = now()
            if self.ctx.drain.is_set() and not in_drain:
                in_drain = True
                # everything we hold: FIN now; raise RDY
                pend = [x for x in self.actions if x[2] in ("FIN", "REQ", "TOUCH")]
                self.actions = []
                for mid, d in list(self.held.items()):
                    self.schedule(t, "FIN", d)
                self.set_rdy(min(a.max_rdy, RDY_CAP))
            if not self.ctx.drain.is_set() and in_drain:
                in_drain = False
                self.set_rdy(r.choice([1, 2, 5, 10]))
            if self.done.is_set():
                # leave: CLS, collect, barrier, close
                self.graceful_close()
                return
            if self.ctx.quiesce.is_set():
                if self.want_barrier.is_set():
                    self.want_barrier.clear()
                    self.send_barrier()
                frames = self.conn.poll(0.05)
                self.handle_frames(frames, allow_actions=False)
                continue
            # due actions
            while self.actions and self.actions[0][0] <= t:
                due, _, kind, d, extra = heapq.heappop(self.actions)
                self.do_op(kind, d, extra)
            if self.want_barrier.is_set() or (self.unresolved and t - last_barrier > r.uniform(0.2, 1.0)):
                self.want_barrier.clear()
                self.send_barrier()
                last_barrier = t
            # chaos
            if self.ctx.load.is_set() and not self.ctx.drain.is_set() and not self.drain_only:
                if r.random() < 0.25 * 0.05:
                    n = r.choice([0, 1, 1, 2, 3, 5, 10, 20, r.randint(1, min(a.max_rdy, RDY_CAP))])
                    if n == 0 and r.random() < 0.5:
                        n = 1
                    self.set_rdy(n)
                elif self.ci.rdy == 0 and r.random() < 0.05:
                    self.set_rdy(r.randint(1, 10))
                if not self.anchor:
                    x = r.random()
                    if x < a.drop_rate * 0.05:
                        self.close("abrupt", rst=r.random() < 0.5)
                        time.sleep(r.uniform(0, 1.0))
                        return
                    if x < (a.drop_rate + a.cls_rate) * 0.05:
                        self.graceful_close()
                        time.sleep(r.uniform(0, 0.5))
                        return
            wait = 0.05
            if self.actions:
                wait = max(0.0, min(wait, self.actions[0][0] - now()))
            frames = self.conn.poll(wait)
            self.handle_frames(frames, allow_actions=True)

    def handle_frames(self, frames, allow_actions):
        for fr in frames:
            if fr is None:
                raise Closed("eof")
            ft, data = fr
            if ft == FRAME_RESPONSE:
                if data == HEARTBEAT:
                    self.conn.send(b"NOP\n")
                elif data == b"CLOSE_WAIT":
                    self.got_close_wait = True
                else:
                    self.ctx.rec.violate("error_frame", f"{self.ck}: unexpected response {data[:100]!r}")
            elif ft == FRAME_MESSAGE:
                self.on_message(data)
            elif ft == FRAME_ERROR:
                if not self.on_error(data):
                    self.ctx.rec.violate("error_frame", f"{self.ck} conn {self.ci.cid}: {data[:200]!r}")
                    raise Closed("error frame")

    def graceful_close(self):
        try:
            self.got_close_wait = False
            self.conn.send(b"CLS\n")
            deadline = now() + 5
            while not self.got_close_wait and now() < deadline:
                self.handle_frames(self.conn.poll(0.05), allow_actions=False)
            # FIN whatever we still hold (we can after CLS), then a barrier
            for mid, d in list(self.held.items()):
                self.do_op("FIN", d, 0)
            self.actions = []
            self.send_barrier()
            deadline = now() + 5
            while self.barriers and now() < deadline:
                self.handle_frames(self.conn.poll(0.05), allow_actions=False)
        except Closed:
            pass
        self.close("cls")

    def run(self):
        while not self.ctx.stop.is_set() and not self.done.is_set():
            if self.ctx.restarting.is_set():
                time.sleep(0.1)
                continue
            try:
                self.session()
                if self.done.is_set():
                    break
            except Closed as e:
                self.close(f"closed: {e}")
                time.sleep(self.rng.uniform(0.05, 0.5))
            except Exception:
                self.ctx.rec.violate("script", traceback.format_exc())
                self.close("exception")
                time.sleep(0.5)
        if self.conn is not None:
            self.close("end")


# --------------------------------------------------------------------------------------------
# publishers


class Publisher(threading.Thread):
    def __init__(self, ctx, idx):
        super().__init__(daemon=True)
        self.ctx = ctx
        self.rng = random.Random(ctx.args.seed * 7777 + idx)
        self.conn = None
        self.ci = None
        self.name = f"publisher-{idx}"

    def new_pub(self, topic, kind, defer):
        rec = self.ctx.rec
        seq = rec.next_seq()
        r = self.rng.random()
        pad = self.rng.randint(0, 300) if r < 0.97 else self.rng.randint(5000, 120000)
        body = body_for(topic, seq, pad)
        p = Pub(topic, kind, now(), defer, len(body), self.ci.cid if self.ci else 0)
        with rec.lock:
            rec.pubs[body_key(body)] = p
        return body, p

    def connect(self):
        rec = self.ctx.rec
        self.ci = rec.new_conn("publisher")
        try:
            self.conn = Conn(self.ctx.addr)
        except OSError as e:
            rec.conn_closed(self.ci, "connect-failed")
            raise Closed(str(e))
        if self.rng.random() < 0.5:
            self.conn.send(cmd_body(b"IDENTIFY\n", json.dumps({"client_id": self.ci.client_id, "hostname": "chaos"}).encode()))
            ft, data = self.wait_response()
            if ft != FRAME_RESPONSE:
                raise Closed(f"identify {data!r}")

    def wait_response(self, timeout=10.0):
        deadline = now() + timeout
        while True:
            left = deadline - now()
            if left <= 0:
                self.ctx.rec.violate("hang", f"publisher conn {self.ci.cid}: no response within {timeout}s")
                raise Closed("timeout")
            for fr in self.conn.poll(min(left, 0.2)):
                if fr is None:
                    raise Closed("eof")
                ft, data = fr
                if ft == FRAME_RESPONSE and data == HEARTBEAT:
                    self.conn.send(b"NOP\n")
                    continue
                return ft, data

    def close(self, kind, rst=False):
        if self.conn:
            self.conn.close(rst=rst)
            self.ctx.rec.conn_closed(self.ci, kind)
            self.conn = None

    def one(self):
        r = self.rng
        ctx = self.ctx
        rec = ctx.rec
        topic = r.choice(ctx.all_topics)
        x = r.random()
        if x < 0.01:  # abort mid-body: must never be delivered
            if not ctx.may_publish():
                return False
            body, p = self.new_pub(topic, "PUB-partial", 0)
            p.status = "partial"
            data = cmd_body(f"PUB {topic}\n".encode(), body)
            cut = r.randint(len(f"PUB {topic}\n") + 4, len(data) - 1)
            self.conn.send(data[:cut])
            time.sleep(r.uniform(0, 0.05))
            self.close("partial", rst=r.random() < 0.5)
            return True
        if x < 0.02:  # fire and close: uncertain
            if not ctx.may_publish():
                return False
            body, p = self.new_pub(topic, "PUB-fire", 0)
            self.conn.send(cmd_body(f"PUB {topic}\n".encode(), body))
            p.status = "unc"
            self.close("fire", rst=r.random() < 0.3)
            return True
        if x < 0.55:
            if not ctx.may_publish():
                return False
            body, p = self.new_pub(topic, "PUB", 0)
            pubs = [p]
            data = cmd_body(f"PUB {topic}\n".encode(), body)
        elif x < 0.8:
            n = r.randint(2, 20)
            if not ctx.may_publish(n):
                return False
            bodies, pubs = [], []
            for _ in range(n):
                b, p = self.new_pub(topic, "MPUB", 0)
                bodies.append(b)
                pubs.append(p)
            data = cmd_body(f"MPUB {topic}\n".encode(), mpub_body(bodies))
        else:
            if not ctx.may_publish():
                return False
            d = r.choice([0, r.randint(1, 2000), r.randint(1, 300)])
            body, p = self.new_pub(topic, "DPUB", d)
            pubs = [p]
            data = cmd_body(f"DPUB {topic} {d}\n".encode(), body)
        for p in pubs:
            p.ps = now()
        try:
            self.conn.send(data)
            ft, resp = self.wait_response()
        except Closed:
            with rec.lock:
                for p in pubs:
                    p.status = "unc"
                    p.pe = now()
            raise
        t = now()
        with rec.lock:
            for p in pubs:
                p.pe = t
                if ft == FRAME_RESPONSE and resp == b"OK":
                    p.status = "ok"
                else:
                    p.status = "fail"
                    p.err = resp[:200]
        if not (ft == FRAME_RESPONSE and resp == b"OK"):
            if not (ctx.restarting.is_set() or b"exiting" in resp):
                rec.violate("error_frame", f"publish {pubs[0].kind} {topic}: {resp[:200]!r}")
            else:
                with rec.lock:
                    for p in pubs:
                        p.status = "unc"
            raise Closed("publish error")
        rec.counts["pub_ok"] += len(pubs)
        return True

    def run(self):
        ctx = self.ctx
        a = ctx.args
        while not ctx.stop.is_set():
            if not ctx.load.is_set() or ctx.restarting.is_set():
                if self.conn:
                    self.close("idle")
                time.sleep(0.05)
                continue
            try:
                if self.conn is None:
                    self.connect()
                if not self.one():
                    time.sleep(0.2)
                if self.conn is not None and self.rng.random() < 0.01:
                    self.close("rotate")
                time.sleep(self.rng.expovariate(a.pub_rate))
            except Closed:
                self.close("closed")
                time.sleep(self.rng.uniform(0.05, 0.3))
            except Exception:
                ctx.rec.violate("script", traceback.format_exc())
                self.close("exception")
                time.sleep(0.5)
        self.close("end")


class HttpPublisher(threading.Thread):
    def __init__(self, ctx, idx):
        super().__init__(daemon=True)
        self.ctx = ctx
        self.rng = random.Random(ctx.args.seed * 31337 + idx)
        self.name = f"http-publisher-{idx}"

    def run(self):
        ctx, r, rec = self.ctx, self.rng, self.ctx.rec
        port = ctx.broker.http
        while not ctx.stop.is_set():
            if not ctx.load.is_set() or ctx.restarting.is_set():
                time.sleep(0.05)
                continue
            topic = r.choice(ctx.all_topics)
            x = r.random()
            pubs = []
            try:
                if x < 0.5:
                    if not ctx.may_publish():
                        time.sleep(0.2)
                        continue
                    d = r.choice([None, None, r.randint(0, 2000)])
                    seq = rec.next_seq()
                    body = body_for(topic, seq, r.randint(0, 300))
                    p = Pub(topic, "HTTP-pub", now(), d or 0, len(body), 0)
                    pubs = [p]
                    with rec.lock:
                        rec.pubs[body_key(body)] = p
                    path = f"/pub?topic={q(topic)}" + (f"&defer={d}" if d is not None else "")
                    p.ps = now()
                    st, resp = http_req(port, "POST", path, body)
                else:
                    n = r.randint(1, 20)
                    if not ctx.may_publish(n):
                        time.sleep(0.2)
                        continue
                    bodies = []
                    for _ in range(n):
                        seq = rec.next_seq()
                        b = body_for(topic, seq, r.randint(0, 300))
                        p = Pub(topic, "HTTP-mpub", now(), 0, len(b), 0)
                        with rec.lock:
                            rec.pubs[body_key(b)] = p
                        bodies.append(b)
                        pubs.append(p)
                    binary = r.random() < 0.5
                    payload = mpub_body(bodies) if binary else b"\n".join(bodies) + (b"\n" if r.random() < 0.5 else b"")
                    t0 = now()
                    for p in pubs:
                        p.ps = t0
                    st, resp = http_req(port, "POST", f"/mpub?topic={q(topic)}" + ("&binary=true" if binary else ""), payload)
                t = now()
                with rec.lock:
                    for p in pubs:
                        p.pe = t
                        p.status = "ok" if st == 200 else "fail"
                        p.err = resp[:200]
                if st != 200:
                    if st == 503 or ctx.restarting.is_set():
                        with rec.lock:
                            for p in pubs:
                                p.status = "unc"
                    else:
                        rec.violate("error_frame", f"HTTP publish {topic}: {st} {resp[:200]!r}")
                else:
                    rec.counts["pub_ok"] += len(pubs)
            except (OSError, http.client.HTTPException):
                with rec.lock:
                    for p in pubs:
                        p.status = "unc"
                        p.pe = now()
                time.sleep(0.1)
            time.sleep(r.expovariate(ctx.args.pub_rate / 2))


# --------------------------------------------------------------------------------------------
# admin


class Admin(threading.Thread):
    def __init__(self, ctx):
        super().__init__(daemon=True)
        self.ctx = ctx
        self.rng = random.Random(ctx.args.seed * 4242 + 1)
        self.unpause = []  # heap (due, seq, path)
        self.ulock = threading.Lock()
        self.n = 0
        self.name = "admin"

    def call(self, path, kind, topic, channel=None, destructive=False):
        rec = self.ctx.rec
        t0 = now()
        try:
            st, body = http_req(self.ctx.broker.http, "POST", path)
        except (OSError, http.client.HTTPException) as e:
            st, body = None, str(e).encode()
        t1 = now()
        with rec.lock:
            rec.admin_log.append((t0, t1, kind, topic, channel, st))
            rec.counts[f"admin_{kind}_{st}"] += 1
            if destructive and st != 404:
                if channel is None:
                    rec.destr_tp[topic].append((t0, t1, kind))
                else:
                    rec.destr_ch[f"{topic}/{channel}"].append((t0, t1, kind))
                    if kind == "ch_delete" and is_ephemeral(topic):
                        # an ephemeral topic goes when its last channel goes
                        rec.destr_tp[topic].append((t0, t1 + 1.0, "eph-topic-maybe-gone"))
            if kind == "ch_create" and st == 200:
                rec.confirm[f"{topic}/{channel}"].append((t0, t1, "channel/create"))
        if st not in (200, 404) and not (st == 503 or self.ctx.restarting.is_set()):
            rec.violate("http", f"POST {path} -> {st} {body[:200]!r}")
        return st

    def known_channels(self, topic):
        ctx = self.ctx
        return ctx.base_channels[topic] + [c for (t, c) in ctx.dynamic if t == topic]

    def run(self):
        ctx, r = self.ctx, self.rng
        a = ctx.args
        while not ctx.stop.is_set():
            if not ctx.load.is_set() or ctx.restarting.is_set():
                if not ctx.restarting.is_set():
                    self.flush_unpause()
                time.sleep(0.05)
                continue
            t = now()
            with self.ulock:
                due = []
                while self.unpause and self.unpause[0][0] <= t:
                    due.append(heapq.heappop(self.unpause))
            for _, _, path, kind, topic, ch in due:
                self.call(path, kind, topic, ch)
            time.sleep(min(0.2, r.expovariate(a.admin_rate)))
            if r.random() > a.admin_rate * 0.2:
                continue
            topic = r.choice(ctx.all_topics)
            ch = r.choice(self.known_channels(topic))
            w = r.random() * 100
            self.n += 1
            if w < 30:
                if self.call(f"/channel/pause?topic={q(topic)}&channel={q(ch)}", "ch_pause", topic, ch) == 200:
                    with self.ulock:
                      heapq.heappush(self.unpause, (t + r.uniform(0.3, 4), self.n, f"/channel/unpause?topic={q(topic)}&channel={q(ch)}", "ch_unpause", topic, ch))
            elif w < 50:
                if self.call(f"/topic/pause?topic={q(topic)}", "tp_pause", topic) == 200:
                    with self.ulock:
                      heapq.heappush(self.unpause, (t + r.uniform(0.3, 4), self.n, f"/topic/unpause?topic={q(topic)}", "tp_unpause", topic, None))
            elif w < 65:
                c = r.choice(["d0", "d1", "de#ephemeral"]) if r.random() < 0.8 else ch
                if self.call(f"/channel/create?topic={q(topic)}&channel={q(c)}", "ch_create", topic, c) == 200 and c not in ctx.base_channels[topic]:
                    ctx.dynamic[(topic, c)] = True
            elif w < 65 + a.empty_weight:
                self.call(f"/channel/empty?topic={q(topic)}&channel={q(ch)}", "ch_empty", topic, ch, destructive=True)
            elif w < 65 + a.empty_weight * 1.5:
                self.call(f"/topic/empty?topic={q(topic)}", "tp_empty", topic, None, destructive=True)
            elif w < 65 + a.empty_weight * 1.5 + a.delete_weight:
                if r.random() < 0.6 and any(t_ == topic for (t_, _) in ctx.dynamic):
                    ch = r.choice([c for (t_, c) in ctx.dynamic if t_ == topic])
                st = self.call(f"/channel/delete?topic={q(topic)}&channel={q(ch)}", "ch_delete", topic, ch, destructive=True)
                if st == 200 and r.random() < 0.5:
                    # re-create it at once (what an operator resetting a channel does)
                    self.call(f"/channel/create?topic={q(topic)}&channel={q(ch)}", "ch_create", topic, ch)
                else:
                    ctx.dynamic.pop((topic, ch), None)
            elif w < 65 + a.empty_weight * 1.5 + a.delete_weight * 1.25:
                st = self.call(f"/topic/delete?topic={q(topic)}", "tp_delete", topic, None, destructive=True)
                for k in [k for k in ctx.dynamic if k[0] == topic]:
                    ctx.dynamic.pop(k, None)
                if st == 200 and r.random() < 0.5:
                    # re-create it and its channels at once
                    self.call(f"/topic/create?topic={q(topic)}", "tp_create", topic)
                    for c in ctx.base_channels[topic]:
                        self.call(f"/channel/create?topic={q(topic)}&channel={q(c)}", "ch_create", topic, c)
        self.flush_unpause()

    def flush_unpause(self):
        with self.ulock:
            due = list(self.unpause)
            self.unpause = []
        for _, _, path, kind, topic, ch in due:
            self.call(path, kind, topic, ch)


# --------------------------------------------------------------------------------------------
# stats


def get_stats(port):
    st, body = http_req(port, "GET", "/stats?format=json", timeout=15)
    if st != 200:
        raise RuntimeError(f"/stats {st}")
    return json.loads(body)


class StallMonitor(threading.Thread):
    """Records when this process itself stalled (GIL queue, GC, the machine): receive times
    taken during a stall say little about when the broker sent a frame."""

    def __init__(self, ctx):
        super().__init__(daemon=True)
        self.ctx = ctx
        self.name = "stall-monitor"

    def run(self):
        rec = self.ctx.rec
        while not self.ctx.stop.is_set():
            t0 = now()
            time.sleep(0.02)
            dt = now() - t0
            if dt > 0.2:
                with rec.lock:
                    rec.stalls.append((t0, now()))


def stalled(rec, t1, t2):
    return any(s < t2 and e > t1 for s, e in rec.stalls)


class Poller(threading.Thread):
    def __init__(self, ctx):
        super().__init__(daemon=True)
        self.ctx = ctx
        self.rss = []
        self.name = "poller"

    def run(self):
        ctx = self.ctx
        rec = ctx.rec
        while not ctx.stop.is_set():
            time.sleep(1.0)
            if ctx.restarting.is_set():
                continue
            b = ctx.broker
            if not b.alive():
                if not b.expected_exit and not ctx.restarting.is_set():
                    rec.violate("crash", f"broker exited by itself rc={b.proc.returncode}; see {b.stderr_paths[-1]}")
                    ctx.stop.set()
                continue
            self.rss.append((now(), b.rss_kib()))
            try:
                s = get_stats(b.http)
            except Exception:
                continue
            if s.get("health") != "OK":
                rec.violate("health", f"/stats health {s.get('health')!r}")
            with rec.lock:
                for tp in s.get("topics") or []:
                    for chn in tp.get("channels") or []:
                        k = f"{tp['topic_name']}/{chn['channel_name']}"
                        rec.max_depth[k] = max(rec.max_depth[k], chn["depth"])
                    rec.max_depth[tp["topic_name"]] = max(rec.max_depth[tp["topic_name"]], tp["depth"])


# --------------------------------------------------------------------------------------------
# checks


def epoch_of(rec, t):
    e = 0
    for i, s in enumerate(rec.epoch_starts):
        if s <= t:
            e = i
    return e


def restart_between(rec, t1, t2):
    for i, end in enumerate(rec.epoch_ends):
        if t1 - 1.0 <= end <= t2 + 1.0:
            return True
    return False


def destr_events(rec, ck, topic):
    ev = list(rec.destr_ch.get(ck, [])) + list(rec.destr_tp.get(topic, []))
    ch = ck.split("/", 1)[1]
    if is_ephemeral(ch) or is_ephemeral(topic):
        for i, end in enumerate(rec.epoch_ends):
            ready = rec.epoch_starts[i + 1] + 2.0 if i + 1 < len(rec.epoch_starts) else end + 1e9
            ev.append((end - 1.0, ready, "restart"))
    return ev


def check_messages(ctx, t_check):
    """Lost / phantom / FIN / redelivery / attempts / op_failed checks over everything so far."""
    rec, a = ctx.rec, ctx.args
    found = collections.Counter()
    # channels per topic we know of
    chans = collections.defaultdict(set)
    for ck in rec.confirm:
        t, c = ck.split("/", 1)
        chans[t].add(ck)
    # per channel: confirmations sorted by end, with a running max of their start
    confirms = {}
    for ck, v in rec.confirm.items():
        v = sorted(v, key=lambda x: x[1])
        ends = [x[1] for x in v]
        best = []
        m = None
        for x in v:
            if m is None or x[0] > m[0]:
                m = x
            best.append(m)
        confirms[ck] = (ends, best)
    destr = {}
    for t, cks in chans.items():
        for ck in cks:
            ev = destr_events(rec, ck, t)
            de = [e[1] for e in ev if e[2] not in ("ch_empty", "tp_empty")]
            em = [e[1] for e in ev if e[2] in ("ch_empty", "tp_empty")]
            destr[ck] = (max(de) if de else -1e18, max(em) if em else -1e18)
    ephemeral_ok = a.mem_queue_size is None or a.mem_queue_size >= 1000
    required = 0
    for key, p in rec.pubs.items():
        if p.status != "ok":
            continue
        if p.pe is not None and p.pe > t_check:
            continue
        for ck in chans.get(p.topic, ()):
            ch = ck.split("/", 1)[1]
            if (is_ephemeral(ch) or is_ephemeral(p.topic)) and not ephemeral_ok:
                continue
            ends, best = confirms[ck]
            i = bisect.bisect_left(ends, p.ps)
            if i == 0:
                continue
            conf = best[i - 1]
            del_end, empty_end = destr[ck]
            if del_end > conf[0] or empty_end > p.ps:
                continue
            required += 1
            if (ck, key) not in rec.deliv:
                if rec.max_depth.get(ck, 0) > (a.mem_queue_size or 10000) // 2 and (is_ephemeral(ch) or is_ephemeral(p.topic)):
                    continue
                found["lost"] += 1
                rec.violate(
                    "lost",
                    f"{ck}: acked {p.kind} {key!r} (defer {p.defer}ms, published {p.ps:.3f}..{p.pe:.3f}) never delivered; channel confirmed by {conf[2]} at {conf[1]:.3f}",
                    key,
                    ck,
                )
    rec.counts["required_deliveries_checked"] = required
    # per delivered message
    dcache = {}
    for (ck, key), ds in rec.deliv.items():
        topic = ck.split("/", 1)[0]
        if ck not in dcache:
            dcache[ck] = destr_events(rec, ck, topic)
        p = rec.pubs.get(key)
        if p is not None and p.status == "fail":
            rec.violate("phantom", f"{ck}: publish answered with an error was delivered: {key!r} err {p.err!r}", key, ck)
        ids = {d.mid for d in ds}
        if len(ids) > 1:
            rec.violate("id_mismatch", f"{ck}: {key!r} delivered under IDs {sorted(ids)}", key, ck)
        # early deferred delivery
        if p is not None and p.defer and ephemeral_ok and a.mem_queue_size is None:
            first = ds[0]
            if first.recv < p.ps + p.defer / 1000.0 - 0.03 and not restart_between(rec, p.ps, first.recv):
                rec.violate("early_deferred", f"{ck}: {key!r} deferred {p.defer}ms, sent {p.ps:.3f}, delivered {first.recv:.3f} ({(first.recv - p.ps) * 1000:.0f} ms later)", key, ck)
        deletes = dcache[ck]
        # resurrection: a message removed by a topic delete, or by a channel delete/empty after
        # it had reached the channel, must not be delivered there afterwards
        if p is not None and p.pe is not None:
            for st_, en_, kind_ in rec.destr_tp.get(topic, []):
                if kind_ == "tp_delete" and p.pe < st_:
                    late = [d for d in ds if d.recv > en_ + 0.5]
                    if late:
                        rec.violate("resurrected", f"{ck}: {key!r} acked {p.pe:.3f} before /topic/delete {st_:.3f}..{en_:.3f}, delivered after it at {late[0].recv:.3f} (attempts {late[0].attempts})", key, ck)
            for st_, en_, kind_ in rec.destr_ch.get(ck, []):
                if kind_ in ("ch_delete", "ch_empty") and ds[0].recv < st_:
                    late = [d for d in ds if d.recv > en_ + 0.5]
                    if late:
                        rec.violate("resurrected", f"{ck}: {key!r} delivered at {ds[0].recv:.3f} before /{kind_} {st_:.3f}..{en_:.3f}, delivered again at {late[0].recv:.3f} (attempts {late[0].attempts})", key, ck)
        # A FIN/REQ names an ID, not a delivery: one meant for an earlier (timed out) delivery
        # applies to the redelivery of that ID to the same connection if that was already on
        # its way or arrived. Those ops are "borrowed" by the later delivery.
        borrowed = []
        for i, d in enumerate(ds):
            b = []
            for j in range(i):
                if ds[j].conn != d.conn:
                    continue
                for op in ds[j].ops:
                    if op.kind in ("FIN", "REQ") and d.recv - 2.0 < op.sent and op.status in ("ok", "unc", "pending"):
                        b.append(op)
            borrowed.append(b)
        fin_ok_at = None
        for i, d in enumerate(ds):
            if fin_ok_at is not None and d.recv > fin_ok_at[0]:
                if d.conn == fin_ok_at[1] and not fin_ok_at[2] and d.recv < fin_ok_at[0] + 2.0:
                    fin_ok_at = (fin_ok_at[0], fin_ok_at[1], True)  # the FIN took this redelivery
                else:
                    rec.violate(
                        "fin_reappeared",
                        f"{ck}: {key!r} id {d.mid} delivered again (attempts {d.attempts}, conn {d.conn}, at {d.recv:.3f}) after FIN accepted from conn {fin_ok_at[1]} sent at {fin_ok_at[0]:.3f}",
                        key,
                        ck,
                    )
                    fin_ok_at = None
            if i > 0:
                prev = ds[i - 1]
                if d.attempts <= prev.attempts and not restart_between(rec, prev.recv, d.recv):
                    rec.violate("attempts", f"{ck}: {key!r} attempts {prev.attempts} then {d.attempts}", key, ck)
                # earliest legitimate redelivery
                ci = rec.conns[prev.conn]
                T = ci.msg_timeout
                earliest = prev.recv - 0.3 + T
                pops = prev.ops + borrowed[i - 1]
                for op in pops:
                    if op.kind == "TOUCH" and op.status == "ok" and op.sent < earliest - 0.2:
                        earliest = max(earliest, op.sent + T)
                for op in pops:
                    if op.kind == "REQ" and op.status in ("ok", "unc", "pending"):
                        earliest = min(earliest, op.sent + op.delay / 1000.0)
                # 0.7 s more slack: our receive time can lag the broker's send by hundreds of ms
                # when this process's ~60 threads queue for the GIL on a busy machine
                if d.recv < earliest - 0.7 and not restart_between(rec, prev.recv, d.recv):
                    if stalled(rec, prev.recv - T - 1.0, d.recv):
                        rec.counts["suppressed_by_own_stall"] += 1
                    elif not any(e[0] < d.recv and e[1] > prev.recv for e in deletes):
                        rec.violate(
                            "early_redelivery",
                            f"{ck}: {key!r} delivered at {prev.recv:.3f} to conn {prev.conn} (timeout {T}s, ops {[(o.kind, round(o.sent, 3), o.status, o.delay) for o in pops]}) and again at {d.recv:.3f} to conn {d.conn} (attempts {prev.attempts}->{d.attempts})",
                            key,
                            ck,
                        )
            for op in d.ops:
                if op.kind == "FIN" and op.status == "ok":
                    fin_ok_at = (op.sent, op.conn, False)
            if borrowed[i]:
                continue  # its own ops may fail: the borrowed one took it
            # ops refused although well within the deadline
            ci = rec.conns[d.conn]
            T = ci.msg_timeout
            deadline = d.recv - 0.3 + T
            for op in d.ops:
                if op.kind == "TOUCH" and op.status == "ok" and op.sent < deadline - 0.5:
                    deadline = max(deadline, op.sent + T)
            for op in d.ops:
                if op.status == "failed" and op.sent < deadline - 1.0:
                    if any(e[0] < op.sent + 1.0 and e[1] > d.recv - 0.3 for e in deletes):
                        continue
                    if restart_between(rec, d.recv, op.sent):
                        continue
                    if stalled(rec, d.recv - T - 1.0, op.sent + 1.0):
                        rec.counts["suppressed_by_own_stall"] += 1
                        continue
                    rec.violate(
                        "op_failed",
                        f"{ck}: {op.kind} {d.mid} ({key!r}) sent {op.sent - d.recv:.3f}s after delivery (timeout {T}s) failed: {op.err}",
                        key,
                        ck,
                    )
    return found


def check_stats(ctx, stats, final_epoch_only):
    rec, a = ctx.rec, ctx.args
    t_check = now()
    e = len(rec.epoch_starts) - 1
    e_start = rec.epoch_starts[e]
    live = {ci.client_id: ci for ci in rec.conns.values() if ci.closed is None}
    recently_closed = {ci.client_id for ci in rec.conns.values() if ci.closed is not None and t_check - ci.closed < 3.0}
    restarted = len(rec.epoch_starts) > 1
    by_ck = collections.defaultdict(list)
    for (c, k) in rec.deliv:
        by_ck[c].append(k)
    cons_by_ci = {c.ci.cid: c for c in ctx.consumers if c.ci is not None}
    for tp in stats.get("topics") or []:
        tn = tp["topic_name"]
        chs = tp.get("channels") or []
        if chs and tp["depth"] != 0:
            rec.violate("stats_depth", f"topic {tn}: depth {tp['depth']} (backend {tp['backend_depth']}) after drain, {len(chs)} channels, paused {tp['paused']}")
        if tp["paused"]:
            rec.violate("stats_paused", f"topic {tn} still paused after drain (we unpaused it)")
        tdel = [x for x in rec.destr_tp.get(tn, []) if x[1] > e_start]
        acked = unc = 0
        for key, p in rec.pubs.items():
            if p.topic != tn:
                continue
            if p.ps >= e_start:
                if p.status == "ok":
                    acked += 1
                elif p.status in ("unc", "pending"):
                    unc += 1
        if not tdel and tn in ctx.all_topics:
            mc = tp["message_count"]
            if not (acked <= mc <= acked + unc):
                rec.violate("stats_message_count", f"topic {tn}: message_count {mc}, acked {acked}, uncertain {unc} (epoch {e})")
        for chn in chs:
            cn = chn["channel_name"]
            ck = f"{tn}/{cn}"
            for f in ("depth", "in_flight_count", "deferred_count"):
                if chn[f] != 0:
                    rec.violate("stats_" + f, f"channel {ck}: {f} {chn[f]} after drain (backend {chn['backend_depth']}, clients {chn['client_count']})")
            if chn["paused"]:
                rec.violate("stats_paused", f"channel {ck} still paused after drain")
            stable = (
                not rec.destr_tp.get(tn)
                and not rec.destr_ch.get(ck)
                and not is_ephemeral(cn)
                and cn in ctx.base_channels.get(tn, ())
                and tn in ctx.all_topics
                and not (is_ephemeral(tn) and (restarted or (a.mem_queue_size is not None and a.mem_queue_size < 1000)))
            )
            # (not after a restart: a topic backlog restored from disk is counted again by the
            # channels it is fanned out to, but not by the topic, as in nsqd)
            if stable and not restarted and chn["message_count"] != tp["message_count"]:
                rec.violate("stats_channel_message_count", f"channel {ck}: message_count {chn['message_count']} != topic message_count {tp['message_count']} (no empty/delete on either)")
            if stable:
                rec.counts["stats_stable_channel_checks"] += 1
            if stable and not restarted:
                rec.counts["stats_exact_channel_checks"] += 1
                keys = by_ck.get(ck, [])
                distinct = len(keys)
                if distinct != chn["message_count"]:
                    rec.violate("stats_channel_message_count", f"channel {ck}: {distinct} distinct messages delivered but message_count {chn['message_count']}")
                recv = fin_ok = fin_unc = req_ok = req_unc = 0
                for k in keys:
                    for d in rec.deliv[(ck, k)]:
                        recv += 1
                        for op in d.ops:
                            if op.kind == "FIN":
                                fin_ok += op.status == "ok"
                                fin_unc += op.status in ("unc", "pending")
                            elif op.kind == "REQ":
                                req_ok += op.status == "ok"
                                req_unc += op.status in ("unc", "pending")
                if not (req_ok <= chn["requeue_count"] <= req_ok + req_unc):
                    rec.violate("stats_requeue_count", f"channel {ck}: requeue_count {chn['requeue_count']}, accepted REQs {req_ok} (+{req_unc} uncertain)")
                slack = sum(ci.max_rdy for ci in rec.conns.values() if ci.role == "consumer" and ci.topic == tn and ci.channel == cn and ci.close_kind and ci.close_kind != "cls")
                lo = recv - fin_ok - fin_unc - req_ok - req_unc
                hi = recv + slack - fin_ok - req_ok
                if not (lo <= chn["timeout_count"] <= hi):
                    rec.violate("stats_timeout_count", f"channel {ck}: timeout_count {chn['timeout_count']} outside [{lo}, {hi}] (received {recv}, FIN ok {fin_ok}+{fin_unc}?, REQ ok {req_ok}+{req_unc}?)")
            ours = 0
            for cl in chn.get("clients") or []:
                cid = cl.get("client_id", "")
                if not cid.startswith("chaos"):
                    continue
                ci = live.get(cid)
                if ci is None:
                    if cid not in recently_closed:
                        rec.violate("stats_ghost_client", f"channel {ck}: client {cid} listed but its connection closed {t_check - rec.conns[int(cid[5:])].closed:.1f}s ago ({rec.conns[int(cid[5:])].close_kind})")
                    continue
                ours += 1
                if ci.topic != tn or ci.channel != cn:
                    rec.violate("stats_client", f"client {cid} listed under {ck} but subscribed to {ci.topic}/{ci.channel}")
                    continue
                if ci.epoch != e:
                    continue
                exp = {"message_count": ci.received, "in_flight_count": 0, "ready_count": ci.rdy}
                cons = cons_by_ci.get(ci.cid)
                if cons is None or not any(op.status == "pending" for op in cons.unresolved):
                    exp["finish_count"] = ci.fin_ok
                    exp["requeue_count"] = ci.req_ok
                rec.counts["stats_client_checks"] += 1
                for f, v in exp.items():
                    if cl.get(f) != v:
                        rec.violate("stats_client", f"{ck} client {cid}: {f} {cl.get(f)} expected {v}")
            for ci in live.values():
                if ci.role == "consumer" and ci.topic == tn and ci.channel == cn and ci.sub_ok and ci.epoch == e:
                    if not any(cl.get("client_id") == ci.client_id for cl in chn.get("clients") or []):
                        rec.violate("stats_client", f"{ck}: live consumer {ci.client_id} missing from /stats clients")
    for pr in stats.get("producers") or []:
        cid = pr.get("client_id", "")
        if cid.startswith("chaos") and cid not in live and cid not in recently_closed:
            ci = rec.conns.get(int(cid[5:]))
            if ci and ci.epoch == e:
                rec.violate("stats_ghost_client", f"producer {cid} listed but its connection closed {t_check - ci.closed:.1f}s ago ({ci.close_kind})")


# --------------------------------------------------------------------------------------------
# phases


def drain(ctx, poller, round_no):
    rec, a = ctx.rec, ctx.args
    ctx.drain.set()
    # unpause everything
    admin = ctx.admin
    admin.flush_unpause()
    t0 = now()
    deadline = t0 + ctx.max_seen_timeout + a.drain_extra
    extra = []
    quiet_since = None
    last = None
    while now() < deadline:
        if not ctx.broker.alive():
            return False, "broker died"
        try:
            s = get_stats(ctx.broker.http)
        except Exception as e:
            time.sleep(0.5)
            continue
        busy = []
        for tp in s.get("topics") or []:
            if tp["paused"]:
                admin.call(f"/topic/unpause?topic={q(tp['topic_name'])}", "tp_unpause", tp["topic_name"])
            chs = tp.get("channels") or []
            if chs and tp["depth"]:
                busy.append(f"{tp['topic_name']} depth {tp['depth']}")
            for c in chs:
                ck = f"{tp['topic_name']}/{c['channel_name']}"
                if c["paused"]:
                    admin.call(f"/channel/unpause?topic={q(tp['topic_name'])}&channel={q(c['channel_name'])}", "ch_unpause", tp["topic_name"], c["channel_name"])
                if c["depth"] or c["in_flight_count"] or c["deferred_count"]:
                    busy.append(f"{ck} d{c['depth']} f{c['in_flight_count']} q{c['deferred_count']}")
                if c["depth"] or c["deferred_count"] or c["in_flight_count"]:
                    have = [x for x in ctx.consumers if x.ck == ck and x.is_alive() and x.ci is not None and x.ci.closed is None]
                    if not have and not any(x.ck == ck for x in extra):
                        cons = Consumer(ctx, tp["topic_name"], c["channel_name"], 900000 + len(extra) + round_no * 1000, drain_only=True)
                        extra.append(cons)
                        ctx.consumers.append(cons)
                        cons.start()
        last = busy
        if not busy and now() - rec.last_delivery > 1.5:
            if quiet_since is None:
                quiet_since = now()
            elif now() - quiet_since > 1.0:
                break
        else:
            quiet_since = None
        time.sleep(0.5)
    else:
        rec.violate("stuck", f"round {round_no}: not drained after {now() - t0:.0f}s: {last[:20]}")
    # settle: barriers everywhere, then quiesce
    ctx.quiesce.set()
    time.sleep(0.3)
    for c in ctx.consumers:
        if c.is_alive() and c.conn is not None:
            c.want_barrier.set()
    t1 = now() + 5
    while now() < t1:
        pend = [c for c in ctx.consumers if c.is_alive() and c.conn is not None and (c.barriers or c.want_barrier.is_set())]
        if not pend:
            break
        time.sleep(0.1)
    time.sleep(0.5)
    return True, last


def run(args):
    rng = random.Random(args.seed)
    rec = Recorder(args)
    taken = set()
    tcp = free_port(rng, taken)
    hp = free_port(rng, taken)
    data = tempfile.mkdtemp(prefix=f"chaos-data-{args.seed}-")
    extra = list(args.broker_flag or [])
    if args.mem_queue_size is not None:
        extra.append(f"--mem-queue-size={args.mem_queue_size}")
    extra.append(f"--msg-timeout={args.msg_timeout_s}s")
    extra.append(f"--max-rdy-count={args.max_rdy}")
    if args.sync_every:
        extra.append(f"--sync-every={args.sync_every}")
    broker = Broker(args, rec, data, tcp, hp, extra)
    print(f"[chaos] seed {args.seed}: {' '.join(broker.cmdline())}", flush=True)
    broker.start()
    ctx = Ctx(args, rec, broker, rng)
    poller = Poller(ctx)
    summary = {"seed": args.seed, "cmdline": broker.cmdline(), "rounds": []}
    try:
        # topics and channels before any publish
        for t in ctx.all_topics:
            http_req(hp, "POST", f"/topic/create?topic={q(t)}")
            for c in ctx.base_channels[t]:
                t0 = now()
                st, _ = http_req(hp, "POST", f"/channel/create?topic={q(t)}&channel={q(c)}")
                if st == 200:
                    rec.confirm[f"{t}/{c}"].append((t0, now(), "channel/create"))
        idx = 0
        for t in ctx.all_topics:
            for c in ctx.base_channels[t]:
                for k in range(args.consumers):
                    cons = Consumer(ctx, t, c, idx, anchor=(k == 0 and is_ephemeral(c)))
                    idx += 1
                    ctx.consumers.append(cons)
        pubs = [Publisher(ctx, i) for i in range(args.publishers)] + [HttpPublisher(ctx, 0)]
        ctx.admin = Admin(ctx)
        for th in ctx.consumers + pubs + [ctx.admin, poller, StallMonitor(ctx)]:
            th.start()
        per_round = args.seconds / args.rounds
        restart_round = rng.randrange(args.rounds) if args.restart else -1
        rss0 = broker.rss_kib()
        for rnd in range(args.rounds):
            ctx.drain.clear()
            ctx.quiesce.clear()
            ctx.load.set()
            t_end = now() + per_round
            t_restart = now() + rng.uniform(0.3, 0.7) * per_round if rnd == restart_round else None
            while now() < t_end and not ctx.stop.is_set():
                if t_restart and now() >= t_restart:
                    t_restart = None
                    print(f"[chaos] round {rnd}: SIGTERM under load", flush=True)
                    ctx.restarting.set()
                    t_sig = now()
                    rc, dt = broker.stop("mid-load")
                    for c in ctx.consumers:
                        if c.conn is not None:
                            pass
                    ready = broker.start()
                    with rec.lock:
                        rec.restarts.append((t_sig, ready))
                    print(f"[chaos] stopped in {dt:.2f}s rc={rc}, restarted", flush=True)
                    ctx.restarting.clear()
                time.sleep(0.2)
            ctx.load.clear()
            if ctx.stop.is_set():
                break
            ok, last = drain(ctx, poller, rnd)
            if not ok:
                break
            t_check = now()
            try:
                stats = get_stats(hp)
            except Exception as e:
                rec.violate("stats", f"/stats failed: {e}")
                stats = {}
            with rec.lock:
                check_stats(ctx, stats, False)
                check_messages(ctx, t_check)
            rss = broker.rss_kib()
            summary["rounds"].append({"round": rnd, "rss_kib": rss, "pub_ok": rec.counts["pub_ok"], "deliveries": rec.counts["deliveries"]})
            print(
                f"[chaos] round {rnd}: drained; pub_ok {rec.counts['pub_ok']} deliveries {rec.counts['deliveries']} "
                f"RSS {rss} KiB; violations so far {len(rec.violations)}",
                flush=True,
            )
            ctx.quiesce.clear()
            ctx.drain.clear()
        # end: close consumers gracefully, stop publishers
        ctx.load.clear()
        for c in ctx.consumers:
            c.done.set()
        ctx.quiesce.clear()
        tq = now() + 10
        for c in ctx.consumers:
            c.join(timeout=max(0.1, tq - now()))
        ctx.stop.set()
        time.sleep(0.3)
        # stderr of the run
        rc, dt = broker.stop("end")
        summary["stop_seconds"] = dt
        # resurrection check: restart and look
        broker.start()
        time.sleep(1.0)
        s = get_stats(hp)
        # consumed: every non-ephemeral channel
        for tp in s.get("topics") or []:
            if tp["channels"] and tp["depth"]:
                rec.violate("resurrected", f"after drain + restart: topic {tp['topic_name']} depth {tp['depth']}")
            for c in tp.get("channels") or []:
                if c["depth"] or c["deferred_count"] or c["in_flight_count"]:
                    rec.violate("resurrected", f"after drain + restart: channel {tp['topic_name']}/{c['channel_name']} depth {c['depth']} deferred {c['deferred_count']}")
        got = 0
        conns = []
        for tp in s.get("topics") or []:
            for c in tp.get("channels") or []:
                try:
                    cn = Conn(("127.0.0.1", tcp))
                    cn.send(f"SUB {tp['topic_name']} {c['channel_name']}\nRDY {min(100, args.max_rdy)}\n".encode())
                    conns.append((cn, f"{tp['topic_name']}/{c['channel_name']}"))
                except OSError:
                    pass
        tend = now() + 2.0
        while now() < tend:
            for cn, ck in conns:
                try:
                    for fr in cn.poll(0.02):
                        if fr and fr[0] == FRAME_MESSAGE:
                            _, att, mid, body = parse_message(fr[1])
                            rec.violate("resurrected", f"after drain + restart: {ck} delivered {body[:60]!r} id {mid} attempts {att}", body_key(body), ck)
                except Closed:
                    pass
        for cn, _ in conns:
            cn.close()
        broker.stop("final")
    finally:
        ctx.stop.set()
        broker.kill()
        # stderr scan
        for pth in broker.stderr_paths:
            try:
                txt = open(pth, "rb").read().decode("utf8", "replace")
            except OSError:
                continue
            kinds = collections.Counter()
            for line in txt.splitlines():
                if re.search(r"panic|panicked|FATAL|RUST_BACKTRACE|stack backtrace", line):
                    rec.violate("stderr_panic", f"{os.path.basename(pth)}: {line[:300]}")
                elif "ERROR" in line and re.search(r"DISKQUEUE|corrupt|diskqueue|\.bad", line):
                    rec.violate("stderr_disk", f"{os.path.basename(pth)}: {line[:400]}")
                elif "ERROR" in line:
                    k = re.sub(r"[0-9a-f]{16}|\d+", "N", line)
                    k = re.sub(r"^.*?ERROR", "ERROR", k)
                    kinds[k[:160]] += 1
            for k, n in kinds.most_common():
                rec.note(f"{os.path.basename(pth)} ERROR x{n}: {k}")
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)
        else:
            rec.note(f"data dir kept: {data}")
    # rss
    rs = [x[1] for x in poller.rss if x[1]]
    summary["rss_kib"] = {"start": rss0, "max": max(rs) if rs else None, "after_rounds": [r["rss_kib"] for r in summary["rounds"]]}
    summary["counts"] = dict(rec.counts)
    summary["own_stalls_over_0.2s"] = {"count": len(rec.stalls), "max_s": round(max([e - s for s, e in rec.stalls], default=0), 3)}
    summary["published_attempted"] = len(rec.pubs)
    summary["pub_status"] = dict(collections.Counter(p.status for p in rec.pubs.values()))
    summary["connections"] = len(rec.conns)
    summary["restarts"] = len(rec.restarts)
    summary["violations"] = collections.Counter(v[0] for v in rec.violations)
    summary["notes"] = rec.notes
    return rec, summary


def trace(rec, key, ck):
    out = []
    p = rec.pubs.get(key) if key else None
    if p:
        out.append(f"    publish {p.kind} topic {p.topic} defer {p.defer} ps {p.ps:.3f} pe {p.pe} status {p.status} err {p.err}")
    if key:
        for (c, k), ds in rec.deliv.items():
            if k != key:
                continue
            for d in ds:
                ci = rec.conns[d.conn]
                out.append(f"    {c}: delivered {d.recv:.3f} conn {d.conn} (timeout {ci.msg_timeout}s, closed {ci.closed and round(ci.closed, 3)} {ci.close_kind}) attempts {d.attempts} id {d.mid} ops {[(o.kind, round(o.sent, 3), o.status, o.delay, o.err) for o in d.ops]}")
    if ck:
        t, c = ck.split("/", 1)
        for e in rec.destr_ch.get(ck, []) + rec.destr_tp.get(t, []):
            out.append(f"    destructive {e[2]} {e[0]:.3f}..{e[1]:.3f}")
        for cs, ce, what in rec.confirm.get(ck, [])[-5:]:
            out.append(f"    confirm {what} {cs:.3f}..{ce:.3f}")
    for s, r in rec.restarts:
        out.append(f"    restart {s:.3f}..{r:.3f}")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nsqd", required=True)
    ap.add_argument("--cores", type=int, default=2, help="--cores passed to the broker (0: do not pass, for the reference nsqd)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=60, help="load time in all (split over rounds)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-messages", type=int, default=200000)
    ap.add_argument("--topics", type=int, default=6)
    ap.add_argument("--channels", type=int, default=2)
    ap.add_argument("--consumers", type=int, default=2, help="per channel")
    ap.add_argument("--publishers", type=int, default=3)
    ap.add_argument("--pub-rate", type=float, default=30.0, help="publish commands per second per publisher")
    ap.add_argument("--admin-rate", type=float, default=1.0)
    ap.add_argument("--empty-weight", type=float, default=3.0)
    ap.add_argument("--delete-weight", type=float, default=2.0)
    ap.add_argument("--drop-rate", type=float, default=0.02, help="abrupt consumer disconnects per second per consumer")
    ap.add_argument("--cls-rate", type=float, default=0.01)
    ap.add_argument("--mem-queue-size", type=int, default=None)
    ap.add_argument("--msg-timeout-s", type=float, default=10)
    ap.add_argument("--max-rdy", type=int, default=2500)
    ap.add_argument("--sync-every", type=int, default=None)
    ap.add_argument("--broker-flag", action="append", help="extra broker flag (repeatable)")
    ap.add_argument("--restart", action="store_true", help="SIGTERM + restart mid-load in one round")
    ap.add_argument("--drain-extra", type=float, default=25)
    ap.add_argument("--out", default=None)
    ap.add_argument("--selftest-drop", type=float, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    # Our records are acyclic; the cyclic GC only adds multi-second pauses once a run holds
    # hundreds of thousands of them (receive times taken during a pause look like early
    # redeliveries to the checks).
    gc.disable()
    if args.out is None:
        args.out = tempfile.mkdtemp(prefix=f"chaos-out-{args.seed}-")
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    rec, summary = run(args)
    summary["wall_seconds"] = round(time.time() - t0, 1)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1, default=str)
    with open(os.path.join(args.out, "violations.txt"), "w") as f:
        traced = collections.Counter()
        for kind, msg, key, ck in rec.violations:
            f.write(f"[{kind}] {msg}\n")
            traced[kind] += 1
            if (key or ck) and traced[kind] <= 30:
                f.write(trace(rec, key, ck) + "\n")
    print(json.dumps(summary, indent=1, default=str))
    shown = collections.Counter()
    for kind, msg, key, ck in rec.violations:
        shown[kind] += 1
        if shown[kind] <= 5:
            print(f"VIOLATION [{kind}] {msg}")
    print(f"[chaos] out: {args.out}")
    sys.exit(1 if rec.violations else 0)


if __name__ == "__main__":
    main()
