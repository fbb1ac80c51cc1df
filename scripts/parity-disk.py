#!/usr/bin/env python3
"""On-disk compatibility differential test: nsqd-uring (ours) vs real nsqd v1.3.0 (ref).

usage: scripts/parity-disk.py OURS_NSQD REF_NSQD [--only GROUP[,GROUP]] [--filter SUBSTR] [--keep] [-v]
  groups (default: all, in this order):
    handoff    scenario 1: A writes (FIN / in flight / REQ 10 min / DPUB / paused / ephemeral /
               empty topics), SIGTERM, B takes over and consumes part, SIGTERM, A finishes;
               every message checked (body, attempts, ID, exactly once after FIN)
    underload  scenario 1: SIGTERM while 2 publishers and a consumer run; B checks acked msgs
    admin      scenario 1: topic/channel delete and empty before the handoff
    ephemeral  a durable channel of an #ephemeral topic (overflow, SIGTERM, re-creation)
    files      scenario 2: file names, sizes, record lengths, meta and nsqd.dat text
    sync       scenario 2: meta file over time for --sync-every/--sync-timeout, then kill -9
               and what each broker recovers
    misc       nsqd.dat after create/pause + kill -9; record larger than --max-msg-size
    corrupt    scenario 3: damaged segments, meta files and nsqd.dat
    lock       scenario 4: two brokers on one --data-path; missing / file data path
  Runs every case on ref, ours --cores 1 and ours --cores 2 (and ours --cores 2
  --connection-affinity=false in part of handoff).

Stdlib only. Ports 60000-64999, 127.0.0.1 only. Temp data dirs under /tmp/parity-disk.*,
removed afterwards (unless --keep). Every broker started is stopped (SIGTERM, then SIGKILL).
Prints findings; writes target/parity/disk.json. Exit 1 if any check failed.
"""
import argparse, json, os, random, re, shutil, signal, socket, struct, subprocess, sys
import tempfile, time, urllib.error, urllib.parse, urllib.request

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "parity")
PORT_LO, PORT_HI = 60000, 64999
VERBOSE = False
FILTER = None
ALL_PROCS = []


def log(*a):
    print(*a, flush=True)


def vlog(*a):
    if VERBOSE:
        print("   ", *a, flush=True)


# ----------------------------------------------------------------------------- brokers
sys.dont_write_bytecode = True  # no __pycache__ beside the scripts
from loopback_ports import free_ports as free_ports_in  # noqa: E402


def free_ports(n):
    return free_ports_in(n, PORT_LO, PORT_HI)


class Broker:
    """kind: 'ref' or 'ours'; cores only for ours."""

    def __init__(self, spec, datadir, logdir, flags=()):
        self.spec = spec  # dict(kind, bin, cores, label)
        self.datadir = datadir
        self.flags = list(flags)
        self.proc = None
        self.logpath = None
        self.logdir = logdir
        self.rc = None

    @property
    def label(self):
        return self.spec["label"]

    def args(self):
        a = [self.spec["bin"], "--tcp-address", "127.0.0.1:%d" % self.tcp,
             "--http-address", "127.0.0.1:%d" % self.http,
             "--https-address", "127.0.0.1:%d" % self.https,
             "--broadcast-address", "127.0.0.1", "--data-path", self.datadir]
        if self.spec["kind"] == "ours":
            a += ["--cores", str(self.spec["cores"])]
        return a + self.spec.get("extra", []) + self.flags

    def start(self, wait=True, timeout=15):
        self.tcp, self.http, self.https = free_ports(3)
        self.logpath = os.path.join(self.logdir, "%s-%d-%d.log" % (self.label, int(time.time() * 1000) % 10**8, self.tcp))
        self.logf = open(self.logpath, "wb")
        self.proc = subprocess.Popen(self.args(), stdout=self.logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        ALL_PROCS.append(self.proc)
        if not wait:
            return True
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                self.rc = self.proc.returncode
                return False
            try:
                st, body = self.req("GET", "/ping", timeout=1)
                if st in (200, 500):
                    return True
            except Exception:
                pass
            time.sleep(0.05)
        return False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_exit(self, timeout):
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self.rc = self.proc.returncode
        return self.rc

    def stop(self, sig=signal.SIGTERM, timeout=25):
        if self.proc is None:
            return None
        t0 = time.time()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                self.rc = "TIMEOUT(killed)"
                self.stop_time = time.time() - t0
                self.logf.close()
                return self.rc
        self.rc = self.proc.returncode
        self.stop_time = time.time() - t0
        self.logf.close()
        return self.rc

    def kill9(self):
        return self.stop(signal.SIGKILL, 5)

    def logtext(self):
        try:
            with open(self.logpath, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except Exception:
            return ""

    def loglines(self, pat=r"ERROR|WARN|FATAL|fatal|panic|error"):
        return [l for l in self.logtext().splitlines() if re.search(pat, l)]

    def req(self, method, path, body=None, timeout=5):
        url = "http://127.0.0.1:%d%s" % (self.http, path)
        r = urllib.request.Request(url, data=body, method=method)
        try:
            with urllib.request.urlopen(r, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def post(self, path, body=b""):
        st, b = self.req("POST", path, body)
        if st != 200:
            raise RuntimeError("%s POST %s -> %s %r" % (self.label, path, st, b[:200]))
        return b

    def stats(self):
        st, b = self.req("GET", "/stats?format=json")
        d = json.loads(b)
        if "data" in d and "topics" not in d:
            d = d["data"]
        return d

    def topo(self):
        """{topic: {'paused','depth','channels':{name:{depth,in_flight,deferred,paused}}}}"""
        out = {}
        for t in self.stats().get("topics") or []:
            chans = {}
            for c in t.get("channels") or []:
                chans[c["channel_name"]] = dict(depth=c["depth"], in_flight=c["in_flight_count"],
                                                deferred=c["deferred_count"], paused=c["paused"])
            out[t["topic_name"]] = dict(paused=t["paused"], depth=t["depth"], channels=chans)
        return out


# ----------------------------------------------------------------------------- protocol V2
def _cmd(line):
    return (line.encode() if isinstance(line, str) else line) + b"\n"


def _body(line, body):
    return _cmd(line) + struct.pack(">i", len(body)) + body


class V2:
    def __init__(self, port, identify=None):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.s.sendall(b"  V2")
        self.buf = bytearray()
        self.errors = []
        self.closed = False
        if identify is not None:
            self.s.sendall(_body("IDENTIFY", json.dumps(identify).encode()))
            self.expect_resp()

    def close(self):
        try:
            self.s.close()
        except Exception:
            pass

    def send(self, b):
        self.s.sendall(b)

    def _fill(self, deadline):
        rem = deadline - time.time()
        if rem <= 0:
            return False
        self.s.settimeout(rem)
        try:
            d = self.s.recv(1 << 20)
        except socket.timeout:
            return False
        except OSError:
            self.closed = True
            return False
        if not d:
            self.closed = True
            return False
        self.buf += d
        return True

    def frame(self, timeout):
        """-> (type, data) or None (timeout/closed). Answers heartbeats."""
        deadline = time.time() + timeout
        while True:
            while len(self.buf) >= 4:
                size = struct.unpack(">i", self.buf[:4])[0]
                if len(self.buf) < 4 + size:
                    break
                ft = struct.unpack(">i", self.buf[4:8])[0]
                data = bytes(self.buf[8:4 + size])
                del self.buf[:4 + size]
                if ft == 0 and data == b"_heartbeat_":
                    self.send(b"NOP\n")
                    continue
                if ft == 1:
                    self.errors.append(data)
                return ft, data
            if self.closed or not self._fill(deadline):
                return None

    def expect_resp(self, timeout=5):
        f = self.frame(timeout)
        if f is None or f[0] != 0:
            raise RuntimeError("expected response, got %r" % (f,))
        return f[1]

    def mpub(self, topic, bodies):
        payload = struct.pack(">i", len(bodies)) + b"".join(struct.pack(">i", len(b)) + b for b in bodies)
        self.send(_body("MPUB " + topic, payload))
        r = self.expect_resp()
        if r != b"OK":
            raise RuntimeError("MPUB %r" % r)

    def pub(self, topic, body):
        self.send(_body("PUB " + topic, body))
        r = self.expect_resp()
        if r != b"OK":
            raise RuntimeError("PUB %r" % r)

    def dpub(self, topic, ms, body):
        self.send(_body("DPUB %s %d" % (topic, ms), body))
        r = self.expect_resp()
        if r != b"OK":
            raise RuntimeError("DPUB %r" % r)

    def sub(self, topic, ch):
        self.send(_cmd("SUB %s %s" % (topic, ch)))
        r = self.expect_resp()
        if r != b"OK":
            raise RuntimeError("SUB %r" % r)

    def rdy(self, n):
        self.send(_cmd("RDY %d" % n))

    def fin(self, mid):
        self.send(_cmd(b"FIN " + mid))

    def req(self, mid, ms):
        self.send(_cmd(b"REQ " + mid + b" %d" % ms))

    def msgs(self, n, timeout, idle=None):
        """Receive up to n messages; stop at n, at timeout, or after `idle` s with nothing."""
        out = []
        deadline = time.time() + timeout
        while len(out) < n and time.time() < deadline:
            wait = deadline - time.time()
            if idle is not None:
                wait = min(wait, idle)
            f = self.frame(max(wait, 0.01))
            if f is None:
                if self.closed or idle is not None:
                    break
                continue
            ft, data = f
            if ft == 2:
                ts, att = struct.unpack(">qH", data[:10])
                out.append(dict(id=data[10:26], attempts=att, ts=ts, body=data[26:]))
        return out


def publish_all(port, topic, bodies, batch_bytes=600000, batch_n=40):
    c = V2(port)
    batch, size = [], 0
    for b in bodies:
        if batch and (len(batch) >= batch_n or size + len(b) > batch_bytes):
            c.mpub(topic, batch)
            batch, size = [], 0
        batch.append(b)
        size += len(b)
    if batch:
        c.mpub(topic, batch)
    c.close()


def drain(broker, topic, ch, want=None, idle=1.0, max_time=60, rdy=200, fin=True):
    """SUB, receive until `want` messages (if given) then `idle` s of silence; FIN each."""
    c = V2(broker.tcp)
    c.sub(topic, ch)
    c.rdy(rdy)
    out = []
    t0 = time.time()
    while time.time() - t0 < max_time:
        got = c.msgs(rdy, timeout=max(0.05, max_time - (time.time() - t0)), idle=idle)
        for m in got:
            out.append(m)
            if fin:
                c.fin(m["id"])
        if not got:
            if want is None or len(out) >= want or c.closed:
                break
    # let the FINs land
    time.sleep(0.05)
    errs = list(c.errors)
    c.close()
    return out, errs


# ----------------------------------------------------------------------------- message bodies
def make_bodies(ti, n, rng, tiny_frac=0.08, big_frac=0.07):
    """Unique binary bodies for topic index ti: tiny ones (1..8 B) unique by value+length,
    others start with a tag (ti, seq)."""
    out = []
    sizes_fixed = {0: 1, 1: 102400, 2: 2, 3: 8, 4: 9, 5: 100000}
    for i in range(n):
        r = rng.random()
        if i in sizes_fixed:
            size = sizes_fixed[i]
        elif r < tiny_frac:
            size = rng.randint(1, 8)
        elif r < tiny_frac + big_frac:
            size = rng.randint(4000, 102400)
        elif r < 0.6:
            size = rng.randint(9, 120)
        else:
            size = rng.randint(120, 3000)
        if size <= 8:
            if i >= 256 ** size:
                size = 9
            else:
                out.append(i.to_bytes(size, "big"))
                continue
        tag = struct.pack(">II", ti, i)
        out.append(tag + bytes(rng.getrandbits(8) for _ in range(size - 8)) if size < 2000
                   else tag + rng.randbytes(size - 8))
    return out


# ----------------------------------------------------------------------------- checking
class Ledger:
    """Per (topic, channel): every delivery, to check exactly-once-after-FIN and attempts."""

    def __init__(self):
        self.expected = {}   # key -> {body: label}
        self.deliv = {}      # key -> list of (phase, body, attempts, fin)
        self.problems = []
        self.ids = {}        # key -> {body: set of message IDs seen}

    def expect(self, key, bodies, label):
        d = self.expected.setdefault(key, {})
        for b in bodies:
            d[b] = label

    def record(self, key, phase, msgs, fin=True):
        lst = self.deliv.setdefault(key, [])
        for m in msgs:
            lst.append((phase, m["body"], m["attempts"], fin))
            self.ids.setdefault(key, {}).setdefault(m["body"], set()).add(m["id"])

    def check(self, key_filter=None):
        problems = []
        for key in sorted(set(self.expected) | set(self.deliv)):
            exp = self.expected.get(key, {})
            seen = {}
            for phase, body, att, fin in self.deliv.get(key, []):
                s = seen.setdefault(body, dict(n=0, fin=False, atts=[], phases=[]))
                if body not in exp:
                    problems.append("%s: unexpected body (len %d) in %s" % (key, len(body), phase))
                if s["fin"]:
                    problems.append("%s: %s message delivered again after FIN (phase %s, attempts %d, len %d)"
                                    % (key, exp.get(body, "?"), phase, att, len(body)))
                s["n"] += 1
                s["atts"].append(att)
                s["phases"].append(phase)
                if att != s["n"]:
                    s.setdefault("badatt", []).append((phase, att, s["n"]))
                if fin:
                    s["fin"] = True
            missing = [b for b in exp if b not in seen]
            unfinished = [b for b in exp if b in seen and not seen[b]["fin"]]
            badatt = {}
            for b, s in seen.items():
                for (phase, att, nth) in s.get("badatt", []):
                    k = "%s delivery#%d attempts=%d (%s)" % (exp.get(b, "?"), nth, att, phase)
                    badatt[k] = badatt.get(k, 0) + 1
            if missing:
                labels = {}
                for b in missing:
                    labels[exp[b]] = labels.get(exp[b], 0) + 1
                problems.append("%s: LOST %d of %d expected messages %s" % (key, len(missing), len(exp), labels))
            changed = sum(1 for b, ids in self.ids.get(key, {}).items() if len(ids) > 1)
            if changed:
                problems.append("%s: %d messages redelivered with a different message ID" % (key, changed))
            if unfinished:
                problems.append("%s: %d delivered but never FINed" % (key, len(unfinished)))
            for k, n in sorted(badatt.items()):
                problems.append("%s: attempts mismatch x%d: %s" % (key, n, k))
        return problems

    def summary(self):
        out = {}
        for key in sorted(set(self.expected) | set(self.deliv)):
            d = self.deliv.get(key, [])
            per = {}
            for phase, body, att, fin in d:
                per.setdefault(phase, [0, {}])
                per[phase][0] += 1
                per[phase][1][att] = per[phase][1].get(att, 0) + 1
            out["%s/%s" % key] = dict(expected=len(self.expected.get(key, {})),
                                      deliveries={p: dict(n=v[0], attempts=v[1]) for p, v in per.items()})
        return out


def list_dir(d):
    out = {}
    for n in sorted(os.listdir(d)):
        p = os.path.join(d, n)
        if os.path.isdir(p):
            out[n] = "DIR"
            continue
        size = os.path.getsize(p)
        if n.endswith(".meta.dat") or n == "nsqd.dat" or n.endswith(".meta.dat.bad"):
            with open(p, "rb") as f:
                out[n] = f.read().decode("utf-8", "replace")
        else:
            out[n] = size
    return out


def norm_nsqd_dat(text):
    """nsqd.dat JSON with topics/channels sorted (Go map order is random)."""
    try:
        d = json.loads(text)
    except Exception:
        return text
    for t in d.get("topics") or []:
        if t.get("channels"):
            t["channels"].sort(key=lambda c: c["name"])
    if d.get("topics"):
        d["topics"].sort(key=lambda t: t["name"])
    return json.dumps(d, separators=(",", ":"))


def segment_records(path):
    """Parse a diskqueue segment -> list of (len, attempts, body_len) or an error marker."""
    recs = []
    with open(path, "rb") as f:
        data = f.read()
    off = 0
    while off + 4 <= len(data):
        n = struct.unpack(">i", data[off:off + 4])[0]
        if n < 26 or off + 4 + n > len(data):
            recs.append(("BAD", off, n))
            break
        att = struct.unpack(">H", data[off + 12:off + 14])[0]
        recs.append((n, att))
        off += 4 + n
    if off < len(data) and (not recs or recs[-1][0] != "BAD"):
        recs.append(("TRAILING", off, len(data) - off))
    return recs


# ----------------------------------------------------------------------------- scenario 1
N_TA, N_TB, N_TN, D_TA, D_TN = 200, 120, 120, 10, 5
K1, K2, K3 = 50, 15, 15  # c_part: FINed, in flight at SIGTERM, REQ'd with 10 min delay


class Ctx:
    def __init__(self, base, keep):
        self.base = base
        self.keep = keep
        self.n = 0

    def newdir(self, name):
        self.n += 1
        d = os.path.join(self.base, "%02d-%s" % (self.n, name))
        os.makedirs(d)
        return d


ODD_T = "Odd.topic_name-1"
ODD_C = ("c" * 55) + ".x_y-z9ab"   # 64 chars


def stop_phase(broker, held, data, info, tag, label, problems):
    """SIGTERM a phase's broker, close the connections it held, note its exit, log and files."""
    rc = broker.stop()
    for h in held:
        h.close()
    info["%s_rc" % tag] = rc
    info["%s_stop_s" % tag] = round(getattr(broker, "stop_time", -1), 2)
    info["%s_errors" % tag] = broker.loglines()
    info["files_after_%s" % tag] = list_dir(data)
    if rc != 0:
        problems.append("%s exit status after SIGTERM: %s" % (label, rc))


def handoff_run(ctx, A, B, flags, seed, flagsB=None, odd=False):
    """A writes, B takes over, A takes back. Returns dict(problems, info)."""
    rng = random.Random(seed)
    data = ctx.newdir("handoff-%s-%s" % (A["label"], B["label"]))
    logs = ctx.newdir("logs")
    L = Ledger()
    problems, info = [], {}
    bodies_ta = make_bodies(1, N_TA, rng)
    bodies_tb = make_bodies(2, N_TB, rng)
    bodies_tn = make_bodies(3, N_TN, rng)
    dpub_ta = [b"DPUB-ta-%d" % i + rng.randbytes(rng.randint(0, 40)) for i in range(D_TA)]
    dpub_tn = [b"DPUB-tn-%d" % i + rng.randbytes(rng.randint(0, 40)) for i in range(D_TN)]
    all_ta = bodies_ta + dpub_ta
    for ch in ("c_fin", "c_part", "c_idle", "c_pause"):
        L.expect(("ta", ch), bodies_ta, "pub")
        L.expect(("ta", ch), dpub_ta, "dpub")
    L.expect(("tb", "c1"), bodies_tb, "pub")
    L.expect(("tn", "cnew"), bodies_tn, "pub")
    L.expect(("tn", "cnew"), dpub_tn, "dpub")
    bodies_odd = make_bodies(4, 30, rng) if odd else []
    if odd:
        L.expect((ODD_T, ODD_C), bodies_odd, "pub")
    if flagsB is None:
        flagsB = flags

    # ---------------- phase 1 on A
    a = Broker(A, data, logs, flags)
    if not a.start():
        return dict(problems=["%s did not start: rc=%s %s" % (A["label"], a.rc, a.logtext()[-500:])], info=info)
    held = []
    try:
        for t in ("ta", "tb", "tn", "te", "te2"):
            a.post("/topic/create?topic=" + t)
        for ch in ("c_fin", "c_part", "c_idle", "c_pause"):
            a.post("/channel/create?topic=ta&channel=" + ch)
        a.post("/channel/create?topic=tb&channel=c1")
        a.post("/channel/create?topic=te&channel=c_empty")
        a.post("/topic/pause?topic=tb")
        a.post("/channel/pause?topic=ta&channel=c_pause")
        # ephemeral: a topic and a channel of ta, each with a consumer holding RDY 0
        eph1 = V2(a.tcp); eph1.sub("ta", "ceph#ephemeral"); held.append(eph1)
        eph2 = V2(a.tcp); eph2.sub("tx#ephemeral", "c"); held.append(eph2)
        publish_all(a.tcp, "ta", bodies_ta)
        publish_all(a.tcp, "tb", bodies_tb)
        publish_all(a.tcp, "tn", bodies_tn)
        publish_all(a.tcp, "tx#ephemeral", bodies_tb[:5])
        if odd:
            a.post("/topic/create?topic=" + ODD_T)
            a.post("/channel/create?topic=%s&channel=%s" % (ODD_T, ODD_C))
            publish_all(a.tcp, ODD_T, bodies_odd)
        p = V2(a.tcp)
        for b in dpub_ta:
            p.dpub("ta", 600000, b)
        for b in dpub_tn:
            p.dpub("tn", 600000, b)
        p.close()
        # c_fin: everything available now (not the DPUBs)
        got, errs = drain(a, "ta", "c_fin", want=N_TA)
        L.record(("ta", "c_fin"), "A1", got)
        # c_part: K1 FINed, K2 held in flight, K3 REQ'd with a 10 min delay
        c = V2(a.tcp, identify={"msg_timeout": 300000})
        c.sub("ta", "c_part")
        c.rdy(K1)
        got = c.msgs(K1, timeout=20)
        c.rdy(0)  # RDY is a window: without this, FINs make room for more deliveries
        for m in got:
            c.fin(m["id"])
        L.record(("ta", "c_part"), "A1", got, fin=True)
        time.sleep(0.2)
        c.rdy(K2 + K3)
        got = c.msgs(K2 + K3, timeout=20)
        c.rdy(0)
        time.sleep(0.1)
        inflight, reqd = got[:K2], got[K2:]
        for m in reqd:
            c.req(m["id"], 600000)
        L.record(("ta", "c_part"), "A1", inflight, fin=False)
        L.record(("ta", "c_part"), "A1", reqd, fin=False)
        held.append(c)
        time.sleep(0.3)
        info["A_stats_before_stop"] = a.topo()
    except Exception as e:
        problems.append("phase1 exception: %r" % e)
    stop_phase(a, held, data, info, "A1", A["label"], problems)

    # ---------------- phase 2 on B
    b = Broker(B, data, logs, flagsB)
    if not b.start():
        problems.append("%s did not start on %s's data: rc=%s %s" % (B["label"], A["label"], b.rc, b.logtext()[-800:]))
        return dict(problems=problems, info=info, ledger=L.summary())
    held = []
    try:
        topo = b.topo()
        info["B_topo_at_start"] = topo
        exp_topics = {"ta": ["c_fin", "c_part", "c_idle", "c_pause"], "tb": ["c1"], "tn": [], "te": ["c_empty"], "te2": []}
        if odd:
            exp_topics[ODD_T] = [ODD_C]
        for t, chs in exp_topics.items():
            if t not in topo:
                problems.append("B: topic %s not restored" % t)
                continue
            if sorted(topo[t]["channels"]) != sorted(chs):
                problems.append("B: topic %s channels %s, expected %s" % (t, sorted(topo[t]["channels"]), chs))
        for t in topo:
            if t not in exp_topics:
                problems.append("B: unexpected topic %s restored" % t)
        exp_depth = {("ta", "c_fin"): D_TA, ("ta", "c_part"): N_TA + D_TA - K1, ("ta", "c_idle"): N_TA + D_TA,
                     ("ta", "c_pause"): N_TA + D_TA, ("tb", "c1"): 0, ("te", "c_empty"): 0}
        for (t, ch), dep in exp_depth.items():
            got = topo.get(t, {}).get("channels", {}).get(ch)
            if got and got["depth"] != dep:
                problems.append("B: %s/%s depth %d at start, expected %d" % (t, ch, got["depth"], dep))
        for t, dep in (("tb", N_TB), ("tn", N_TN + D_TN), ("ta", 0), ("te", 0)):
            if t in topo and topo[t]["depth"] != dep:
                problems.append("B: topic %s depth %d at start, expected %d" % (t, topo[t]["depth"], dep))
        if "tb" in topo and not topo["tb"]["paused"]:
            problems.append("B: paused topic tb not paused after restart")
        if topo.get("ta", {}).get("channels", {}).get("c_pause", {}).get("paused") is False:
            problems.append("B: paused channel ta/c_pause not paused after restart")
        for t, ch in (("ta", "c_fin"), ("ta", "c_part")):
            got, errs = drain(b, t, ch, want=exp_depth[(t, ch)])
            L.record((t, ch), "B", got)
        # c_idle: half FINed, 10 held in flight over the stop
        c = V2(b.tcp)
        c.sub("ta", "c_idle")
        half = (N_TA + D_TA) // 2
        c.rdy(half)
        got = c.msgs(half, timeout=20)
        c.rdy(0)
        for m in got:
            c.fin(m["id"])
        L.record(("ta", "c_idle"), "B", got)
        time.sleep(0.2)
        c.rdy(10)
        got = c.msgs(10, timeout=10)
        c.rdy(0)
        L.record(("ta", "c_idle"), "B", got, fin=False)
        held.append(c)
        # paused channel delivers nothing
        c = V2(b.tcp); c.sub("ta", "c_pause"); c.rdy(50)
        got = c.msgs(50, timeout=1.0)
        if got:
            problems.append("B: paused channel ta/c_pause delivered %d" % len(got))
            for m in got:
                c.fin(m["id"])
            L.record(("ta", "c_pause"), "B", got)
        c.close()
        # paused topic delivers nothing, then unpause and drain
        c = V2(b.tcp); c.sub("tb", "c1"); c.rdy(50)
        got = c.msgs(50, timeout=1.0)
        if got:
            problems.append("B: paused topic tb delivered %d" % len(got))
            for m in got:
                c.fin(m["id"])
            L.record(("tb", "c1"), "B", got)
        c.close()
        time.sleep(0.3)  # let the broker notice the close before messages flow (else they wait msg-timeout)
        b.post("/topic/unpause?topic=tb")
        got, errs = drain(b, "tb", "c1", want=N_TB)
        L.record(("tb", "c1"), "B", got)
        got, errs = drain(b, "tn", "cnew", want=N_TN + D_TN)
        L.record(("tn", "cnew"), "B", got)
        if odd:
            got, errs = drain(b, ODD_T, ODD_C, want=len(bodies_odd))
            L.record((ODD_T, ODD_C), "B", got)
        time.sleep(0.3)
        info["B_topo_before_stop"] = b.topo()
    except Exception as e:
        problems.append("phase2 exception: %r" % e)
    stop_phase(b, held, data, info, "B", B["label"], problems)

    # ---------------- phase 3 on A again
    a2 = Broker(A, data, logs, flags)
    if not a2.start():
        problems.append("%s did not restart on %s's data: rc=%s %s" % (A["label"], B["label"], a2.rc, a2.logtext()[-800:]))
        return dict(problems=problems, info=info, ledger=L.summary())
    try:
        topo = a2.topo()
        info["A2_topo_at_start"] = topo
        if topo.get("tb", {}).get("paused"):
            problems.append("A2: topic tb still paused after B unpaused it")
        if "cnew" not in topo.get("tn", {}).get("channels", {}):
            problems.append("A2: channel tn/cnew (created on B) not restored")
        if topo.get("ta", {}).get("channels", {}).get("c_pause", {}).get("paused") is not True:
            problems.append("A2: ta/c_pause not paused after second restart")
        exp = N_TA + D_TA - (N_TA + D_TA) // 2
        cid = topo.get("ta", {}).get("channels", {}).get("c_idle", {})
        if cid and cid["depth"] != exp:
            problems.append("A2: ta/c_idle depth %d at start, expected %d" % (cid["depth"], exp))
        got, errs = drain(a2, "ta", "c_idle", want=exp)
        L.record(("ta", "c_idle"), "A2", got)
        a2.post("/channel/unpause?topic=ta&channel=c_pause")
        got, errs = drain(a2, "ta", "c_pause", want=N_TA + D_TA)
        L.record(("ta", "c_pause"), "A2", got)
        for t, ch in (("ta", "c_fin"), ("ta", "c_part"), ("tb", "c1"), ("tn", "cnew")):
            got, errs = drain(a2, t, ch, idle=0.7)
            L.record((t, ch), "A2", got)
        info["A2_topo_end"] = a2.topo()
    except Exception as e:
        problems.append("phase3 exception: %r" % e)
    rcA2 = a2.stop()
    info["A2_rc"] = rcA2
    info["A2_errors"] = a2.loglines()
    if rcA2 != 0:
        problems.append("%s exit status after SIGTERM (2nd): %s" % (A["label"], rcA2))
    problems += L.check()
    return dict(problems=problems, info=info, ledger=L.summary())


def group_handoff(ctx, specs, results):
    ref, o1, o2, o2na = specs["ref"], specs["ours1"], specs["ours2"], specs["ours2na"]
    pairs = [(ref, ref), (ref, o1), (o1, ref), (ref, o2), (o2, ref), (o2, o1), (o1, o2)]
    variants = [("mem10", ["--mem-queue-size=10", "--max-bytes-per-file=65536"], None, pairs + [(o2na, ref), (ref, o2na)]),
                ("memdefault", [], None, pairs),
                ("mixed: writer mem10+4096B files, reader defaults, odd names", ["--mem-queue-size=10", "--max-bytes-per-file=4096"], [],
                 [(ref, ref), (ref, o1), (o1, ref), (o2, o1)])]
    for vname, flags, flagsB, vpairs in variants:
        for A, B in vpairs:
            name = "handoff[%s] %s -> %s -> %s" % (vname, A["label"], B["label"], A["label"])
            if FILTER and FILTER not in name:
                continue
            log("== " + name)
            t0 = time.time()
            r = handoff_run(ctx, A, B, flags, seed=hash((vname, A["label"], B["label"])) & 0xffff,
                            flagsB=flagsB, odd=flagsB is not None)
            r["secs"] = round(time.time() - t0, 1)
            results[name] = r
            for p in r["problems"]:
                log("   PROBLEM: " + p)
            if not r["problems"]:
                log("   ok (%.1fs)" % r["secs"])
            for k in ("A1_errors", "B_errors", "A2_errors"):
                if r["info"].get(k):
                    vlog(k, r["info"][k][:6])


# ----------------------------------------------------------------------------- ephemeral topic, durable channel
def group_ephemeral(ctx, specs, results):
    """nsqd gives a non-ephemeral channel of an #ephemeral topic a real diskqueue: overflow goes
    to disk while running, SIGTERM flushes it there, and the files come back to life when the
    topic and channel are created again after a restart."""
    for mem in (10, 10000):
        for wkey, rkey in (("ref", "ref"), ("ours1", "ours1"), ("ref", "ours1"), ("ours2", "ours2")):
            name = "ephemeral-topic[mem=%d] %s -> %s" % (mem, specs[wkey]["label"], specs[rkey]["label"])
            if FILTER and FILTER not in name:
                continue
            data = ctx.newdir("eph")
            logs = ctx.newdir("logs")
            flags = ["--mem-queue-size=%d" % mem]
            a = Broker(specs[wkey], data, logs, flags)
            assert a.start()
            out = {}
            c = V2(a.tcp)
            c.sub("tq#ephemeral", "dur")   # durable channel, consumer holds RDY 0
            p = V2(a.tcp)
            acc = 0
            errs = []
            for i in range(30):
                p.send(_body("PUB tq#ephemeral", b"E%03d" % i))
                f = p.frame(3)
                if f and f[0] == 0:
                    acc += 1
                else:
                    errs.append(f[1][:80].decode() if f else "no answer/closed")
                    p.close()
                    p = V2(a.tcp)
            p.close()
            out["accepted"] = acc
            out["pub_errors"] = sorted(set(errs))
            time.sleep(0.3)
            out["stats"] = a.topo().get("tq#ephemeral")
            a.stop()
            c.close()
            out["files"] = sorted(n for n in os.listdir(data) if n.startswith("tq"))
            b = Broker(specs[rkey], data, logs, flags)
            assert b.start()
            out["restored_topics"] = sorted(b.topo())
            got, e2 = drain(b, "tq#ephemeral", "dur", idle=1.0)
            out["delivered_after_recreate"] = len(got)
            b.stop()
            results[name] = dict(out=out)
            log("== %s: %s" % (name, json.dumps(out)))


# ----------------------------------------------------------------------------- delete / empty before the handoff
def group_admin(ctx, specs, results):
    """Topic delete, channel delete, channel empty and topic empty on A, then SIGTERM and
    start B: nothing deleted or emptied may come back, what came after must."""
    ref, o1, o2 = specs["ref"], specs["ours1"], specs["ours2"]
    for vname, flags in (("mem10", ["--mem-queue-size=10", "--max-bytes-per-file=4096"]), ("memdefault", [])):
        for A, B in ((ref, ref), (ref, o1), (o1, ref), (o2, ref), (o2, o1)):
            name = "admin[%s] %s -> %s" % (vname, A["label"], B["label"])
            if FILTER and FILTER not in name:
                continue
            data = ctx.newdir("admin")
            logs = ctx.newdir("logs")
            a = Broker(A, data, logs, flags)
            assert a.start()
            probs = []
            old = [b"old-%03d" % i + b"." * (i * 37 % 500) for i in range(60)]
            new = [b"new-%03d" % i for i in range(5)]
            a.post("/topic/create?topic=dt")
            a.post("/channel/create?topic=dt&channel=c")
            a.post("/topic/create?topic=t2")
            a.post("/channel/create?topic=t2&channel=c1")
            a.post("/channel/create?topic=t2&channel=c2")
            a.post("/topic/create?topic=t3")
            for t in ("dt", "t2", "t3"):
                publish_all(a.tcp, t, old)
            time.sleep(0.3)
            a.post("/topic/delete?topic=dt")
            a.post("/channel/delete?topic=t2&channel=c2")
            a.post("/channel/empty?topic=t2&channel=c1")
            a.post("/topic/empty?topic=t3")
            publish_all(a.tcp, "t2", new)
            publish_all(a.tcp, "t3", new[:3])
            time.sleep(0.3)
            a.stop()
            files = sorted(n for n in os.listdir(data) if n.startswith(("dt", "t2:c2")))
            if files:
                probs.append("files of deleted topic/channel left by %s: %s" % (A["label"], files))
            b = Broker(B, data, logs, flags)
            assert b.start()
            topo = b.topo()
            if "dt" in topo:
                probs.append("deleted topic dt restored")
            if "c2" in topo.get("t2", {}).get("channels", {}):
                probs.append("deleted channel t2/c2 restored")
            if topo.get("t2", {}).get("channels", {}).get("c1", {}).get("depth") != 5:
                probs.append("t2/c1 depth %s at start, expected 5" % topo.get("t2", {}).get("channels", {}).get("c1"))
            if topo.get("t3", {}).get("depth") != 3:
                probs.append("t3 depth %s at start, expected 3" % topo.get("t3", {}).get("depth"))
            got, e = drain(b, "t2", "c1", want=5)
            bodies = sorted(m["body"] for m in got)
            if bodies != sorted(new):
                probs.append("t2/c1 delivered %d (old: %d, new: %d), expected the 5 new" % (
                    len(got), sum(1 for x in bodies if x.startswith(b"old")), sum(1 for x in bodies if x.startswith(b"new"))))
            got, e = drain(b, "t3", "cx", want=3)
            bodies = sorted(m["body"] for m in got)
            if bodies != sorted(new[:3]):
                probs.append("t3 delivered %d (old: %d, new: %d), expected the 3 new" % (
                    len(got), sum(1 for x in bodies if x.startswith(b"old")), sum(1 for x in bodies if x.startswith(b"new"))))
            got, e = drain(b, "dt", "c", idle=0.7)
            if got:
                probs.append("re-created dt/c delivered %d old messages" % len(got))
            got, e = drain(b, "t2", "c2", idle=0.7)
            if got:
                probs.append("re-created t2/c2 delivered %d messages" % len(got))
            b.stop()
            results[name] = dict(problems=probs)
            log("== %s: %s" % (name, "ok" if not probs else ""))
            for p in probs:
                log("   PROBLEM: " + p)


# ----------------------------------------------------------------------------- misc
def group_misc(ctx, specs, results):
    """(1) nsqd.dat right after create/pause then kill -9 (how soon metadata reaches disk);
    (2) a record larger than the reader's --max-msg-size (written with a bigger limit)."""
    for key in ("ref", "ours1", "ours2"):
        name = "metadata-after-kill9 %s" % specs[key]["label"]
        data = ctx.newdir("meta9")
        b = Broker(specs[key], data, ctx.newdir("logs"), [])
        assert b.start()
        b.post("/topic/create?topic=m1")
        b.post("/channel/create?topic=m1&channel=c1")
        c = V2(b.tcp); c.sub("m2", "bysub")
        b.post("/channel/pause?topic=m1&channel=c1")
        b.post("/topic/pause?topic=m1")
        time.sleep(0.3)
        b.kill9()
        c.close()
        try:
            txt = norm_nsqd_dat(open(os.path.join(data, "nsqd.dat")).read())
        except Exception as e:
            txt = repr(e)
        results[name] = dict(out=txt)
        log("== %s: nsqd.dat 0.3 s after create/SUB/pause, then kill -9: %s" % (name, txt))
    # big record
    for wkey, rkey in (("ref", "ref"), ("ref", "ours1"), ("ours1", "ref"), ("ours1", "ours1")):
        name = "max-msg-size mismatch %s(2MB) -> %s(1MB)" % (specs[wkey]["label"], specs[rkey]["label"])
        data = ctx.newdir("big")
        logs = ctx.newdir("logs")
        a = Broker(specs[wkey], data, logs, ["--max-msg-size=2000000", "--mem-queue-size=0"])
        assert a.start()
        a.post("/topic/create?topic=bg")
        a.post("/channel/create?topic=bg&channel=c")
        p = V2(a.tcp)
        p.pub("bg", b"small-1")
        p.pub("bg", b"B" * 1500000)
        p.pub("bg", b"small-2")
        p.close()
        time.sleep(0.3)
        a.stop()
        b = Broker(specs[rkey], data, logs, [])
        assert b.start()
        got, e = drain(b, "bg", "c", idle=1.0)
        out = dict(delivered=[(m["body"][:7].decode(), len(m["body"])) for m in got],
                   bad=sorted(n for n in os.listdir(data) if n.endswith(".bad")))
        b.stop()
        out["log"] = [re.sub(r"^\[nsqd\] \S+ \S+ ", "", l).replace(data + "/", "")[:160] for l in b.loglines(r"DISKQUEUE.*(bad|corrupt|invalid|EOF)")][:3]
        results[name] = dict(out=out)
        log("== %s: %s" % (name, json.dumps(out)))


# ----------------------------------------------------------------------------- SIGTERM under load
def group_underload(ctx, specs, results):
    """Two publishers (PUB and MPUB) and a consumer (FIN some, hold some) running while A gets
    SIGTERM; B must deliver every acknowledged, un-FINed message and no FINed one."""
    import threading
    ref, o1, o2 = specs["ref"], specs["ours1"], specs["ours2"]
    for vname, flags in (("mem10", ["--mem-queue-size=10"]), ("memdefault", [])):
        for A, B in ((ref, ref), (ref, o1), (o1, ref), (o2, ref), (ref, o2), (o2, o1)):
            name = "underload[%s] %s -> %s" % (vname, A["label"], B["label"])
            if FILTER and FILTER not in name:
                continue
            data = ctx.newdir("load")
            logs = ctx.newdir("logs")
            a = Broker(A, data, logs, flags)
            assert a.start()
            a.post("/topic/create?topic=ld")
            a.post("/channel/create?topic=ld&channel=c1")
            a.post("/channel/create?topic=ld&channel=c2")
            acked = {0: set(), 1: set()}
            stop = threading.Event()

            def pubber(k):
                try:
                    c = V2(a.tcp)
                    i = 0
                    while not stop.is_set() and i < 12000:
                        if k == 0:
                            body = b"P%d-%06d" % (k, i) + b"p" * (i % 150)
                            c.send(_body("PUB ld", body))
                            if c.expect_resp(3) == b"OK":
                                acked[k].add(body)
                            i += 1
                        else:
                            batch = [b"M%d-%06d" % (k, i + j) + b"m" * ((i + j) % 90) for j in range(20)]
                            payload = struct.pack(">i", len(batch)) + b"".join(struct.pack(">i", len(x)) + x for x in batch)
                            c.send(_body("MPUB ld", payload))
                            if c.expect_resp(3) == b"OK":
                                acked[k].update(batch)
                            i += 20
                except Exception:
                    pass
            finned = set()

            def consumer():
                try:
                    c = V2(a.tcp)
                    c.sub("ld", "c1")
                    c.rdy(50)
                    n = 0
                    while not stop.is_set():
                        for m in c.msgs(50, timeout=0.2, idle=0.2):
                            n += 1
                            if n % 3:        # FIN two thirds, leave the rest in flight
                                c.fin(m["id"])
                                finned.add(m["body"])
                except Exception:
                    pass
            ths = [threading.Thread(target=pubber, args=(0,)), threading.Thread(target=pubber, args=(1,)),
                   threading.Thread(target=consumer)]
            for t in ths:
                t.start()
            time.sleep(0.25)
            rc = a.stop()
            stop.set()
            for t in ths:
                t.join(10)
            allacked = acked[0] | acked[1]
            b = Broker(B, data, logs, flags)
            assert b.start()
            probs = []
            got1, e = drain(b, "ld", "c1", want=len(allacked) - len(finned), idle=1.5, max_time=120, rdy=500)
            got2, e = drain(b, "ld", "c2", want=len(allacked), idle=1.5, max_time=120, rdy=500)
            b.stop()
            b1 = [m["body"] for m in got1]
            b2 = [m["body"] for m in got2]
            s1, s2 = set(b1), set(b2)
            lost1 = (allacked - finned) - s1
            lost2 = allacked - s2
            refin = finned & s1
            dup1 = len(b1) - len(s1)
            dup2 = len(b2) - len(s2)
            out = dict(acked=len(allacked), finned_before_stop=len(finned), rc=rc, c1_delivered=len(b1),
                       c2_delivered=len(b2), c1_lost=len(lost1), c2_lost=len(lost2), c1_finned_redelivered=len(refin),
                       dup_c1=dup1, dup_c2=dup2, unacked_delivered_c2=len(s2 - allacked))
            if lost1 or lost2:
                probs.append("LOST acknowledged messages: c1 %d, c2 %d" % (len(lost1), len(lost2)))
            if dup1 or dup2:
                probs.append("duplicates after restart: c1 %d, c2 %d" % (dup1, dup2))
            if rc != 0:
                probs.append("exit status %s" % rc)
            results[name] = dict(problems=probs, out=out)
            log("== %s: %s" % (name, json.dumps(out)))
            for p in probs:
                log("   PROBLEM: " + p)


# ----------------------------------------------------------------------------- scenario 2: files
def files_run(ctx, spec, flags, workload):
    data = ctx.newdir("files-%s" % spec["label"])
    logs = ctx.newdir("logs")
    b = Broker(spec, data, logs, flags)
    if not b.start():
        return dict(error="did not start rc=%s" % b.rc)
    snaps = workload(b, data)
    rc = b.stop()
    files = list_dir(data)
    recs = {}
    for n in os.listdir(data):
        if re.search(r"\.diskqueue\.\d+\.dat$", n):
            recs[n] = segment_records(os.path.join(data, n))
    meta = norm_nsqd_dat(files.get("nsqd.dat", ""))
    return dict(rc=rc, files=files, nsqd_dat=meta, nsqd_dat_raw=files.get("nsqd.dat"), records=recs, snaps=snaps,
                errors=b.loglines())


def wl_roll(b, data):
    """Fixed sizes through a channel with no consumer, --mem-queue-size=0, 4096-byte files,
    then consume 7 messages from channel a (FIN) and 3 in flight at stop."""
    b.post("/topic/create?topic=f")
    b.post("/channel/create?topic=f&channel=a")
    b.post("/channel/create?topic=f&channel=b")
    b.post("/topic/create?topic=g")  # no channel: topic queue only
    sizes = [1, 10, 100, 1000, 2000, 3000, 4000, 4070, 4071, 4100, 5000, 1, 1, 2, 3, 500, 700, 900, 1100, 50]
    bodies = [bytes([i + 1]) * s for i, s in enumerate(sizes)]
    p = V2(b.tcp)
    for x in bodies:
        p.pub("f", x)
        p.pub("g", x)
    p.close()
    time.sleep(1.0)
    snaps = {"after_pub": list_dir(data)}
    c = V2(b.tcp)
    c.sub("f", "a")
    c.rdy(7)
    got = c.msgs(7, timeout=10)
    for m in got:
        c.fin(m["id"])
    time.sleep(0.3)
    c.rdy(3)
    got2 = c.msgs(3, timeout=10)
    time.sleep(1.0)
    snaps["after_consume"] = list_dir(data)
    snaps["stats"] = b.topo()
    b._held = c
    return snaps


def wl_memflush(b, data):
    """Default mem queue: nothing on disk until SIGTERM flushes memory to disk."""
    b.post("/topic/create?topic=m")
    b.post("/channel/create?topic=m&channel=a")
    p = V2(b.tcp)
    for i in range(30):
        p.pub("m", b"x" * (i + 1))
    for i in range(5):
        p.pub("mq", b"y" * (i + 1))   # topic without channel
    p.close()
    time.sleep(0.5)
    return {"before_stop": list_dir(data)}


def group_files(ctx, specs, results):
    for wname, wl, flags in (("roll", wl_roll, ["--mem-queue-size=0", "--max-bytes-per-file=4096"]),
                             ("memflush", wl_memflush, [])):
        outs = {}
        for key in ("ref", "ours1", "ours2"):
            outs[key] = files_run(ctx, specs[key], flags, wl)
        name = "files[%s]" % wname
        log("== " + name)
        probs = []
        ref = outs["ref"]
        for key in ("ours1", "ours2"):
            o = outs[key]
            if set(o["files"]) != set(ref["files"]):
                probs.append("%s file names differ: only ref %s; only ours %s" % (
                    key, sorted(set(ref["files"]) - set(o["files"])), sorted(set(o["files"]) - set(ref["files"]))))
            for n in sorted(set(o["files"]) & set(ref["files"])):
                if n == "nsqd.dat":
                    if o["nsqd_dat"] != ref["nsqd_dat"]:
                        probs.append("%s nsqd.dat differs: ref %s ours %s" % (key, ref["nsqd_dat"], o["nsqd_dat"]))
                elif o["files"][n] != ref["files"][n]:
                    probs.append("%s %s differs: ref %r ours %r" % (key, n, ref["files"][n], o["files"][n]))
            for n in sorted(set(o["records"]) & set(ref["records"])):
                rr = [r[0] for r in ref["records"][n]]
                orr = [r[0] for r in o["records"][n]]
                if rr != orr:
                    probs.append("%s %s record lengths: ref %s ours %s" % (key, n, rr, orr))
                ra = [r[1] for r in ref["records"][n] if isinstance(r[0], int)]
                oa = [r[1] for r in o["records"][n] if isinstance(r[0], int)]
                if ra != oa:
                    probs.append("%s %s record attempts: ref %s ours %s" % (key, n, ra, oa))
            for sn in ref["snaps"]:
                if sn == "stats":
                    if o["snaps"].get(sn) != ref["snaps"][sn]:
                        probs.append("%s stats during run differ: ref %s ours %s" % (key, ref["snaps"][sn], o["snaps"].get(sn)))
                    continue
                rs, os_ = ref["snaps"][sn], o["snaps"].get(sn, {})
                if rs != os_:
                    diff = {n: (rs.get(n), os_.get(n)) for n in sorted(set(rs) | set(os_)) if rs.get(n) != os_.get(n)}
                    probs.append("%s files at '%s' differ (name: ref, ours): %s" % (key, sn, diff))
            if o["rc"] != ref["rc"]:
                probs.append("%s exit status %s vs ref %s" % (key, o["rc"], ref["rc"]))
        results[name] = dict(problems=probs, runs={k: {kk: vv for kk, vv in v.items()} for k, v in outs.items()})
        for p in probs:
            log("   DIFF: " + p)
        if not probs:
            log("   identical")
        vlog("ref files:", ref["files"])


# ----------------------------------------------------------------------------- sync / crash
def sync_run(ctx, spec, flags, n=15, sample_at=(0.05, 0.3, 1.5, 2.5)):
    """Publish n messages to a channel with no consumer, sample its meta file at the given
    times after the last PUB OK, then SIGKILL (no samples: kill at once)."""
    data = ctx.newdir("sync-%s" % spec["label"])
    logs = ctx.newdir("logs")
    b = Broker(spec, data, logs, flags)
    if not b.start():
        return dict(error="did not start rc=%s" % b.rc)
    b.post("/topic/create?topic=s")
    b.post("/channel/create?topic=s&channel=a")
    meta = os.path.join(data, "s:a.diskqueue.meta.dat")
    samples = []
    p = V2(b.tcp)
    if n > 50:
        p.send(b"".join(_body("PUB s", b"%05d" % i + b"z" * 50) for i in range(n)))
        for i in range(n):
            p.expect_resp()
    else:
        for i in range(n):
            p.pub("s", b"%05d" % i + b"z" * 50)
    t_pub = time.time()

    def rd():
        try:
            with open(meta) as f:
                return f.read().replace("\n", " ").strip()
        except FileNotFoundError:
            return None
    for at in sample_at:
        while time.time() - t_pub < at:
            time.sleep(0.02)
        samples.append((at, rd()))
    rc = b.kill9()
    p.close()
    seg = sorted(x for x in os.listdir(data) if x.startswith("s:a.diskqueue.0"))
    sizes = {x: os.path.getsize(os.path.join(data, x)) for x in seg}
    return dict(samples=samples, seg_sizes=sizes, rc=rc, data=data, meta_at_kill=rd())


def group_sync(ctx, specs, results):
    """meta file sampling for several --sync-every/--sync-timeout settings, then kill -9 and
    see what each broker (and the other) recovers."""
    cfgs = [("sync-every=1", ["--mem-queue-size=0", "--sync-every=1"], 15, (0.05, 0.3, 1.5, 2.5)),
            ("sync-every=10,timeout=1s", ["--mem-queue-size=0", "--sync-every=10", "--sync-timeout=1s"], 15, (0.05, 0.3, 1.5, 2.5)),
            ("sync-every=10,timeout=1h", ["--mem-queue-size=0", "--sync-every=10", "--sync-timeout=1h"], 15, (0.05, 0.3, 1.5, 2.5)),
            ("sync-every=100000,timeout=1h", ["--mem-queue-size=0", "--sync-every=100000", "--sync-timeout=1h"], 15, (0.05, 0.3, 1.5)),
            ("kill -9 right after 300 PUB OKs, sync-every=1", ["--mem-queue-size=0", "--sync-every=1"], 300, ()),
            ("kill -9 right after 300 PUB OKs, mem-queue-size=1", ["--mem-queue-size=1", "--sync-every=1"], 300, ())]
    for cname, flags, n, at in cfgs:
        name = "sync[%s]" % cname
        if FILTER and FILTER not in name:
            continue
        log("== " + name)
        outs = {}
        for key in ("ref", "ours1", "ours2"):
            outs[key] = sync_run(ctx, specs[key], flags, n=n, sample_at=at)
        probs = []
        for key in ("ours1", "ours2"):
            if [s[1] for s in outs[key]["samples"]] != [s[1] for s in outs["ref"]["samples"]]:
                probs.append("%s meta samples (t after last PUB OK: content) ref %s ours %s" % (
                    key, outs["ref"]["samples"], outs[key]["samples"]))
            if outs[key]["seg_sizes"] != outs["ref"]["seg_sizes"]:
                probs.append("%s segment sizes at kill: ref %s ours %s" % (key, outs["ref"]["seg_sizes"], outs[key]["seg_sizes"]))
        # recovery after kill -9, by every reader
        rec = {}
        for wkey in ("ref", "ours1", "ours2"):
            for rkey in ("ref", "ours1"):
                src = outs[wkey]["data"]
                dst = ctx.newdir("sync-recover-%s-%s" % (wkey, rkey))
                shutil.rmtree(dst)
                shutil.copytree(src, dst)
                logs = ctx.newdir("logs")
                b = Broker(specs[rkey], dst, logs, flags)
                if not b.start():
                    rec["%s->%s" % (wkey, rkey)] = "no start rc=%s" % b.rc
                    continue
                depth = b.topo().get("s", {}).get("channels", {}).get("a", {}).get("depth")
                got, errs = drain(b, "s", "a", want=n, idle=1.0)
                bodies = sorted(set(int(m["body"][:5]) for m in got))
                b.stop()
                rec["%s->%s" % (wkey, rkey)] = dict(depth_at_start=depth, delivered=len(got), distinct=len(bodies),
                                                    missing=compress_ids(["%05d" % i for i in range(n) if i not in bodies]),
                                                    errors=[l[-160:] for l in b.loglines()][:4])
        results[name] = dict(problems=probs, runs={k: {kk: vv for kk, vv in v.items() if kk != "data"} for k, v in outs.items()}, recovery=rec)
        for p in probs:
            log("   DIFF: " + p)
        log("   samples ref: %s; at kill: %s" % (outs["ref"]["samples"], {k: (v["meta_at_kill"], v["seg_sizes"]) for k, v in outs.items()}))
        log("   recovered (depth at start, distinct delivered of %d): %s" % (n, json.dumps(
            {k: (v if not isinstance(v, dict) else [v["depth_at_start"], v["distinct"]]) for k, v in rec.items()})))


# ----------------------------------------------------------------------------- scenario 3: corrupt
def base_dir_for_corruption(ctx, spec):
    """A data dir written by `spec`: topic k with channel a (disk backlog over several 4 KiB
    segments, 30 records of 300 B each = 10 per file), topic k2 with channel b."""
    data = ctx.newdir("corrupt-base-%s" % spec["label"])
    logs = ctx.newdir("logs")
    b = Broker(spec, data, logs, ["--mem-queue-size=0", "--max-bytes-per-file=4096"])
    assert b.start(), b.logtext()
    b.post("/topic/create?topic=k")
    b.post("/channel/create?topic=k&channel=a")
    b.post("/topic/create?topic=k2")
    b.post("/channel/create?topic=k2&channel=b")
    p = V2(b.tcp)
    for i in range(30):
        p.pub("k", b"%05d" % i + bytes([i]) * 269)
    for i in range(5):
        p.pub("k2", b"%05d" % i + b"q" * 20)
    p.close()
    time.sleep(0.5)
    b.stop()
    return data


def corruptions():
    """name -> function(datadir) that damages it."""
    def seg(d, q, n):
        return os.path.join(d, "%s.diskqueue.%06d.dat" % (q, n))

    def meta(d, q):
        return os.path.join(d, "%s.diskqueue.meta.dat" % q)

    def rmeta(d, q):
        with open(meta(d, q)) as f:
            v = f.read().split()
        depth = int(v[0]); rf, rp = map(int, v[1].split(",")); wf, wp = map(int, v[2].split(","))
        return depth, rf, rp, wf, wp

    def wmeta(d, q, depth, rf, rp, wf, wp):
        with open(meta(d, q), "w") as f:
            f.write("%d\n%d,%d\n%d,%d\n" % (depth, rf, rp, wf, wp))

    def trunc_last(d):
        dep, rf, rp, wf, wp = rmeta(d, "k:a")
        os.truncate(seg(d, "k:a", wf), wp - 100)   # inside the last record

    def trunc_middle(d):
        os.truncate(seg(d, "k:a", 1), 1000)        # inside record 4 of file 1

    def meta_write_past_end(d):
        dep, rf, rp, wf, wp = rmeta(d, "k:a")
        wmeta(d, "k:a", dep, rf, rp, wf, wp + 5000)

    def meta_read_past_end(d):
        dep, rf, rp, wf, wp = rmeta(d, "k:a")
        wmeta(d, "k:a", dep, 0, 9000, wf, wp)

    def meta_read_gt_write_same_file(d):
        dep, rf, rp, wf, wp = rmeta(d, "k:a")
        wmeta(d, "k:a", dep, wf, wp + 600, wf, wp)

    def meta_missing_write_file(d):
        dep, rf, rp, wf, wp = rmeta(d, "k:a")
        wmeta(d, "k:a", dep, rf, rp, wf + 3, 50)

    def meta_depth_wrong(d):
        dep, rf, rp, wf, wp = rmeta(d, "k:a")
        wmeta(d, "k:a", dep + 100, rf, rp, wf, wp)

    def meta_garbage(d):
        with open(meta(d, "k:a"), "w") as f:
            f.write("garbage\n")

    def meta_empty(d):
        open(meta(d, "k:a"), "w").close()

    def meta_partial(d):   # depth and read pos only
        dep, rf, rp, wf, wp = rmeta(d, "k:a")
        with open(meta(d, "k:a"), "w") as f:
            f.write("%d\n%d,%d\n" % (dep, rf, rp))

    def meta_missing(d):
        os.remove(meta(d, "k:a"))

    def garbage_in_segment(d):
        with open(seg(d, "k:a", 1), "r+b") as f:
            f.seek(3 * 304)
            f.write(b"\xff" * 64)

    def zero_len_record(d):
        with open(seg(d, "k:a", 1), "r+b") as f:
            f.seek(3 * 304)
            f.write(b"\x00\x00\x00\x00")

    def missing_middle_segment(d):
        os.remove(seg(d, "k:a", 1))

    def trailing_bytes_last(d):
        dep, rf, rp, wf, wp = rmeta(d, "k:a")
        with open(seg(d, "k:a", wf), "ab") as f:
            f.write(b"\x00\x00\x00\x30" + b"\x01" * 10)   # incomplete record after writePos

    def extra_full_record_after_write(d):
        # a whole valid record after writePos: what an unsynced meta at crash leaves
        dep, rf, rp, wf, wp = rmeta(d, "k:a")
        with open(seg(d, "k:a", wf), "rb") as f:
            f.seek(0)
            rec = f.read(304)
        with open(seg(d, "k:a", wf), "ab") as f:
            f.write(rec)

    def nsqd_dat(text):
        def f(d):
            with open(os.path.join(d, "nsqd.dat"), "wb") as fh:
                fh.write(text if isinstance(text, bytes) else text.encode())
        return f

    def nsqd_dat_dir(d):
        os.remove(os.path.join(d, "nsqd.dat"))
        os.mkdir(os.path.join(d, "nsqd.dat"))

    def nsqd_dat_missing_legacy(d):
        # pre-1.0 nsqd: nsqd.<node-id>.dat only
        os.rename(os.path.join(d, "nsqd.dat"), os.path.join(d, "nsqd.617.dat"))

    def nsqd_dat_missing(d):
        os.remove(os.path.join(d, "nsqd.dat"))

    T = '{"name":"k","paused":false,"channels":[{"name":"a","paused":false}]},{"name":"k2","paused":false,"channels":[{"name":"b","paused":false}]}'
    return [
        ("segment: last (write) file truncated inside a record", trunc_last),
        ("segment: middle file truncated inside a record", trunc_middle),
        ("segment: garbage length prefix mid-file", garbage_in_segment),
        ("segment: zero length prefix mid-file", zero_len_record),
        ("segment: middle file missing", missing_middle_segment),
        ("segment: incomplete bytes after writePos", trailing_bytes_last),
        ("segment: whole record after writePos (stale meta)", extra_full_record_after_write),
        ("meta: writePos past end of write file", meta_write_past_end),
        ("meta: readPos past end of a complete file", meta_read_past_end),
        ("meta: readPos > writePos in the same file", meta_read_gt_write_same_file),
        ("meta: write file missing (writeFileNum+3)", meta_missing_write_file),
        ("meta: depth too large by 100", meta_depth_wrong),
        ("meta: garbage", meta_garbage),
        ("meta: empty file", meta_empty),
        ("meta: only two lines", meta_partial),
        ("meta: missing", meta_missing),
        ("nsqd.dat: garbage", nsqd_dat("garbage")),
        ("nsqd.dat: empty file", nsqd_dat("")),
        ("nsqd.dat: truncated JSON", nsqd_dat('{"topics":[{"name":"k","paused":false,"chan')),
        ("nsqd.dat: a directory", nsqd_dat_dir),
        ("nsqd.dat: missing (data files present)", nsqd_dat_missing),
        ("nsqd.dat: only legacy nsqd.617.dat", nsqd_dat_missing_legacy),
        ("nsqd.dat: v1.1 style (sorted keys, [] and no version)", nsqd_dat('{"topics":[{"channels":[{"name":"a","paused":false}],"name":"k","paused":false},{"channels":[],"name":"k2","paused":false}]}')),
        ("nsqd.dat: newer format (extra fields, version 9.0.0)", nsqd_dat('{"topics":[{"name":"k","paused":false,"zone":"x","channels":[{"name":"a","paused":false,"extra":[1,2]}]},{"name":"k2","paused":true,"channels":null}],"version":"9.0.0","generation":7}')),
        ("nsqd.dat: capitalised keys (Go is case-insensitive)", nsqd_dat('{"Topics":[{"Name":"k","Paused":true,"Channels":[{"NAME":"a","paused":true}]}],"Version":"1.3.0"}')),
        ("nsqd.dat: topic without name", nsqd_dat('{"topics":[{"paused":false,"channels":null},' + T + '],"version":"1.3.0"}')),
        ("nsqd.dat: paused as string", nsqd_dat('{"topics":[{"name":"k","paused":"true","channels":null}],"version":"1.3.0"}')),
        ("nsqd.dat: paused null, channels {}", nsqd_dat('{"topics":[{"name":"k","paused":null,"channels":{}}],"version":"1.3.0"}')),
        ("nsqd.dat: topics is an object", nsqd_dat('{"topics":{},"version":"1.3.0"}')),
        ("nsqd.dat: top-level null", nsqd_dat('null')),
        ("nsqd.dat: top-level array", nsqd_dat('[]')),
        ("nsqd.dat: version is a number", nsqd_dat('{"topics":[' + T + '],"version":1.3}')),
        ("nsqd.dat: trailing garbage after JSON", nsqd_dat('{"topics":[' + T + '],"version":"1.3.0"}xyz')),
        ("nsqd.dat: trailing newline/space", nsqd_dat('{"topics":[' + T + '],"version":"1.3.0"}\n  ')),
        ("nsqd.dat: UTF-8 BOM", nsqd_dat(b'\xef\xbb\xbf{"topics":[' + T.encode() + b'],"version":"1.3.0"}')),
        ("nsqd.dat: duplicate topic entries", nsqd_dat('{"topics":[' + T + ',{"name":"k","paused":true,"channels":[{"name":"z","paused":false}]}],"version":"1.3.0"}')),
        ("nsqd.dat: invalid + ephemeral names", nsqd_dat('{"topics":[{"name":"bad/name","paused":false,"channels":null},{"name":"e#ephemeral","paused":false,"channels":null},{"name":"k","paused":false,"channels":[{"name":"a","paused":false},{"name":"x#ephemeral","paused":false},{"name":"","paused":false}]}],"version":"1.3.0"}')),
        ("nsqd.dat: invalid UTF-8 in a name", nsqd_dat(b'{"topics":[{"name":"k\xff","paused":false,"channels":null},' + T.encode() + b'],"version":"1.3.0"}')),
    ]


def probe_broker(spec, data, logs, flags):
    b = Broker(spec, data, logs, flags)
    started = b.start(timeout=8)
    out = {}
    if not started:
        if b.alive():
            b.stop()
            out["result"] = "hung (no /ping in 8 s)"
        else:
            out["result"] = "exit %s" % b.rc
        out["log_tail"] = [l for l in b.logtext().splitlines()[-4:]]
        out["files"] = list_dir(data)
        return out
    out["result"] = "serving"
    st, body = b.req("GET", "/ping")
    out["ping"] = "%d %s" % (st, body.decode("utf-8", "replace")[:120])
    topo = b.topo()
    out["topo"] = {t: dict(paused=v["paused"], depth=v["depth"],
                           channels={c: dict(depth=cv["depth"], paused=cv["paused"]) for c, cv in v["channels"].items()})
                   for t, v in topo.items()}
    got = {}
    for t, v in topo.items():
        for c, cv in v["channels"].items():
            if cv["paused"] or v["paused"]:
                continue
            msgs, errs = drain(b, t, c, idle=0.8, max_time=20)
            ids = [m["body"][:5].decode("ascii", "replace") for m in msgs]
            got["%s/%s" % (t, c)] = ids
    out["delivered"] = got
    time.sleep(0.3)
    out["topo_after"] = {t: {c: cv["depth"] for c, cv in v["channels"].items()} for t, v in b.topo().items()}
    # still accepting writes to the damaged queue?
    try:
        p = V2(b.tcp)
        p.pub("k", b"99999-after")
        p.close()
        if "k" in topo and "a" in topo["k"]["channels"] and not topo["k"]["paused"] and not topo["k"]["channels"]["a"]["paused"]:
            m, errs = drain(b, "k", "a", idle=0.8, max_time=5)
            out["new_pub_delivered"] = [x["body"][:5].decode("ascii", "replace") for x in m]
    except Exception as e:
        out["new_pub_delivered"] = "error %r" % e
    rc = b.stop()
    out["stop_rc"] = rc
    out["log"] = [re.sub(r"^\[nsqd\] \S+ \S+ ", "", l)[:220] for l in b.loglines(r"ERROR|WARN|FATAL|fatal|panic|rror|corrupt|bad")][:8]
    files = list_dir(data)
    out["files"] = {n: v for n, v in files.items() if n.startswith("k:a") or n.startswith("nsqd") or n.endswith(".bad")}
    return out


def compress_ids(ids):
    """['00000','00001',...] -> '0-9,12' """
    nums = []
    for x in ids:
        try:
            nums.append(int(x))
        except ValueError:
            nums.append(x)
    out, run = [], None
    for n in nums:
        if isinstance(n, int) and run and n == run[1] + 1:
            run[1] = n
            continue
        if run:
            out.append(str(run[0]) if run[0] == run[1] else "%d-%d" % tuple(run))
            run = None
        if isinstance(n, int):
            run = [n, n]
        else:
            out.append(str(n))
    if run:
        out.append(str(run[0]) if run[0] == run[1] else "%d-%d" % tuple(run))
    return ",".join(out)


def summarize_probe(o):
    s = {"result": o["result"]}
    if o["result"] != "serving":
        s["log_tail"] = o.get("log_tail")
        return s
    s["topics"] = {t: ("P " if v["paused"] else "") + ",".join("%s%s:%d" % ("P " if cv["paused"] else "", c, cv["depth"]) for c, cv in sorted(v["channels"].items())) + " depth=%d" % v["depth"]
                   for t, v in sorted(o["topo"].items())}
    s["delivered"] = {k: compress_ids(v) for k, v in sorted(o["delivered"].items())}
    s["bad_files"] = sorted(n for n in o["files"] if n.endswith(".bad"))
    s["ping"] = o["ping"]
    s["new_pub_delivered"] = o.get("new_pub_delivered")
    s["stop_rc"] = o["stop_rc"]
    return s


def group_corrupt(ctx, specs, results):
    flags = ["--mem-queue-size=0", "--max-bytes-per-file=4096"]
    bases = {"ref": base_dir_for_corruption(ctx, specs["ref"]),
             "ours1": base_dir_for_corruption(ctx, specs["ours1"])}
    for cname, fn in corruptions():
        for wkey in ("ref",) if not cname.startswith("segment") and not cname.startswith("meta") else ("ref", "ours1"):
            name = "corrupt[%s] written by %s" % (cname, wkey)
            if FILTER and FILTER not in name:
                continue
            log("== " + name)
            outs = {}
            for rkey in ("ref", "ours1", "ours2"):
                d = ctx.newdir("c")
                shutil.rmtree(d)
                shutil.copytree(bases[wkey], d)
                fn(d)
                outs[rkey] = probe_broker(specs[rkey], d, ctx.newdir("logs"), flags)
            sums = {k: summarize_probe(v) for k, v in outs.items()}
            probs = []
            for k in ("ours1", "ours2"):
                a, r = sums[k], sums["ref"]
                for field in sorted(set(a) | set(r)):
                    if field in ("ping", "stop_rc", "log_tail"):
                        continue
                    if a.get(field) != r.get(field):
                        probs.append("%s %s: ref=%s ours=%s" % (k, field, json.dumps(r.get(field)), json.dumps(a.get(field))))
                if a.get("stop_rc") != r.get("stop_rc"):
                    probs.append("%s stop_rc: ref=%s ours=%s" % (k, r.get("stop_rc"), a.get("stop_rc")))
                if (r["result"] != "serving" or a["result"] != "serving") and a.get("log_tail") != r.get("log_tail"):
                    probs.append("%s message: ref=%s ours=%s" % (k, (r.get("log_tail") or [])[-1:], (a.get("log_tail") or [])[-1:]))
            results[name] = dict(problems=probs, summaries=sums, logs={k: v.get("log") for k, v in outs.items()})
            log("   ref: " + json.dumps(sums["ref"]))
            for p in probs:
                log("   DIFF: " + p)
            for k in ("ref", "ours1"):
                if outs[k].get("log"):
                    vlog(k, "log:", outs[k]["log"][:5])


# ----------------------------------------------------------------------------- scenario 4: lock
def group_lock(ctx, specs, results):
    pairs = [("ref", "ours1"), ("ref", "ours2"), ("ours1", "ref"), ("ours2", "ref"), ("ours1", "ours2"), ("ref", "ref"), ("ours1", "ours1")]
    for hk, sk in pairs:
        name = "lock[%s holds, %s starts]" % (hk, sk)
        log("== " + name)
        data = ctx.newdir("lock")
        logs = ctx.newdir("logs")
        h = Broker(specs[hk], data, logs, [])
        assert h.start()
        h.post("/topic/create?topic=lk")
        h.post("/pub?topic=lk", b"hello")
        time.sleep(0.3)
        before = list_dir(data)
        mt = os.path.getmtime(os.path.join(data, "nsqd.dat"))
        s = Broker(specs[sk], data, logs, [])
        s.start(wait=False)
        rc = s.wait_exit(8)
        out = {}
        if rc is None:
            out["second"] = "still running after 8 s"
            s.stop()
        else:
            out["second"] = "exit %s" % rc
        out["second_log"] = [re.sub(r"^\[nsqd\] \S+ \S+ ", "", l) for l in s.logtext().splitlines()][-3:]
        out["dir_changed"] = list_dir(data) != before or os.path.getmtime(os.path.join(data, "nsqd.dat")) != mt
        st, body = h.req("GET", "/ping")
        out["holder_ping"] = "%d %s" % (st, body.decode())
        out["holder_topics"] = sorted(h.topo())
        h.stop()
        # lock released after exit?
        s2 = Broker(specs[sk], data, logs, [])
        ok = s2.start()
        out["second_after_holder_exit"] = "serving, topics %s" % sorted(s2.topo()) if ok else "exit %s" % s2.rc
        if ok:
            s2.stop()
        results[name] = dict(out=out)
        log("   " + json.dumps(out))
    # missing data path, and a data path that is a file
    for key in ("ref", "ours1"):
        for what in ("missing", "file"):
            name = "datapath[%s] %s" % (what, key)
            d = os.path.join(ctx.newdir("dp"), "x")
            if what == "file":
                open(d, "w").close()
            s = Broker(specs[key], d, ctx.newdir("logs"), [])
            s.start(wait=False)
            rc = s.wait_exit(8)
            if rc is None:
                s.stop()
            out = dict(rc=rc, log=[re.sub(r"^\[nsqd\] \S+ \S+ ", "", l) for l in s.logtext().splitlines()][-2:])
            results[name] = dict(out=out)
            log("== %s: %s" % (name, json.dumps(out)))


# ----------------------------------------------------------------------------- main
def main():
    global VERBOSE, FILTER
    ap = argparse.ArgumentParser()
    ap.add_argument("ours")
    ap.add_argument("ref")
    ap.add_argument("--only", default="handoff,underload,admin,ephemeral,files,sync,misc,corrupt,lock")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--out", default=os.path.join(HERE, "disk.json"))
    ap.add_argument("--filter", default=None, help="run only scenarios whose name contains this")
    ap.add_argument("-v", action="store_true")
    a = ap.parse_args()
    VERBOSE = a.v
    FILTER = a.filter
    specs = {"ref": dict(kind="ref", bin=a.ref, cores=None, label="ref"),
             "ours1": dict(kind="ours", bin=a.ours, cores=1, label="ours-c1"),
             "ours2": dict(kind="ours", bin=a.ours, cores=2, label="ours-c2"),
             "ours2na": dict(kind="ours", bin=a.ours, cores=2, label="ours-c2-noaffinity",
                             extra=["--connection-affinity=false"])}
    base = tempfile.mkdtemp(prefix="parity-disk.", dir="/tmp")
    os.makedirs(HERE, exist_ok=True)

    def on_term(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, on_term)
    ctx = Ctx(base, a.keep)
    results = {}
    groups = dict(underload=group_underload, misc=group_misc, admin=group_admin, ephemeral=group_ephemeral, handoff=group_handoff, files=group_files, sync=group_sync, corrupt=group_corrupt, lock=group_lock)
    try:
        for g in a.only.split(","):
            groups[g](ctx, specs, results)
    finally:
        for p in ALL_PROCS:
            if p.poll() is None:
                p.kill()
                p.wait(5)
        if not a.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            log("kept " + base)
        with open(a.out, "w") as f:
            json.dump(results, f, indent=1, default=repr)
    nprob = sum(len(r.get("problems", [])) for r in results.values())
    log("\n%d scenario runs, %d with problems/differences" % (len(results), sum(1 for r in results.values() if r.get("problems"))))
    sys.exit(1 if nprob else 0)


if __name__ == "__main__":
    main()
