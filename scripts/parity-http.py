#!/usr/bin/env python3
"""Differential HTTP tester: nsqd-uring (ours) vs real nsqd v1.3.0 (reference).

Usage: scripts/parity-http.py OURS_BIN REF_BIN [--cores 1,2] [--verbose] [--only SUBSTR]

Starts the reference and ours (once per --cores value) on 127.0.0.1 ports in 50000-54999,
each with its own temporary data dir, sends the same sequence of HTTP requests (and a few
raw TCP V2 client actions so that clients/producers show up in /stats) to both, and compares
status, selected headers and bodies (JSON structurally with time-varying fields normalised;
text byte for byte after masking time-varying parts). Writes results-cores<N>.json and
prints every difference. Stdlib only.
"""
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

# Results go under the repository's target/ (ignored by git), not beside the script.
HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "parity")
os.makedirs(HERE, exist_ok=True)
MAX_MSG = 1048576
MAX_BODY = 5242880

# --------------------------------------------------------------------------- brokers


class Broker:
    def __init__(self, name, binary, base_port, extra_args):
        self.name = name
        self.binary = binary
        self.tcp = base_port
        self.http = base_port + 1
        self.https = base_port + 2
        self.cports = []  # source ports of our V2 clients (masked in bodies)
        self.extra = extra_args
        self.dir = tempfile.mkdtemp(prefix="difftest-http-%s-" % name)
        self.data = os.path.join(self.dir, "data")
        os.mkdir(self.data)
        self.proc = None
        self.log = None
        self.clients = {}

    def start(self):
        args = [self.binary, "--data-path", self.data,
                "--tcp-address", "127.0.0.1:%d" % self.tcp,
                "--http-address", "127.0.0.1:%d" % self.http,
                "--https-address", "127.0.0.1:%d" % self.https] + self.extra
        self.log = open(os.path.join(self.dir, "log.txt"), "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited early: %s" % (self.name, self.logtext()))
            try:
                r = http_req(self.http, "GET", "/ping", timeout=1)
                if r["status"] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("%s did not come up: %s" % (self.name, self.logtext()))

    def logtext(self):
        try:
            with open(os.path.join(self.dir, "log.txt"), "rb") as f:
                return f.read()[-3000:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self):
        for c in list(self.clients.values()):
            try:
                c.close()
            except Exception:
                pass
        self.clients = {}
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log:
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------- raw HTTP


def _recv_until_closed_or(sock, buf, pred, deadline):
    while not pred(buf):
        if time.time() > deadline:
            raise socket.timeout("timed out")
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            raise
        except ConnectionResetError:
            return buf, "reset"
        if not chunk:
            return buf, "closed"
        buf += chunk
    return buf, None


def parse_response(sock, buf, method, deadline):
    """Reads one HTTP response from sock (buf = already read bytes). Returns (resp, rest)."""
    buf, err = _recv_until_closed_or(sock, buf, lambda b: b"\r\n\r\n" in b, deadline)
    if b"\r\n\r\n" not in buf:
        return {"status": None, "error": err or "no headers", "raw": buf}, b""
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    status_line = lines[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    status = int(parts[1])
    headers = []
    for ln in lines[1:]:
        k, _, v = ln.decode("latin-1").partition(":")
        headers.append((k.strip(), v.strip()))
    hmap = {}
    for k, v in headers:
        hmap.setdefault(k.lower(), v)
    body = b""
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        body = b""
    elif "chunked" in hmap.get("transfer-encoding", "").lower():
        out = b""
        while True:
            rest, err = _recv_until_closed_or(sock, rest, lambda b: b"\r\n" in b, deadline)
            if b"\r\n" not in rest:
                break
            szl, rest = rest.split(b"\r\n", 1)
            sz = int(szl.split(b";")[0], 16)
            rest, err = _recv_until_closed_or(sock, rest, lambda b, n=sz: len(b) >= n + 2, deadline)
            out += rest[:sz]
            rest = rest[sz + 2:]
            if sz == 0:
                break
        body = out
    elif "content-length" in hmap:
        n = int(hmap["content-length"])
        rest, err = _recv_until_closed_or(sock, rest, lambda b: len(b) >= n, deadline)
        body, rest = rest[:n], rest[n:]
    else:
        rest, err = _recv_until_closed_or(sock, rest, lambda b: False, deadline)
        body, rest = rest, b""
    return {"status": status, "status_line": status_line, "headers": headers, "h": hmap,
            "body": body}, rest


def http_req(port, method, target, headers=None, body=None, timeout=5, raw=None,
             close=True, n_responses=1):
    """Sends one request (or raw bytes) and returns the parsed response(s)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        if raw is None:
            hdrs = [("Host", "127.0.0.1:%d" % port)]
            hdrs += list((headers or {}).items())
            if body is not None and not any(k.lower() in ("content-length", "transfer-encoding")
                                             for k, _ in hdrs):
                hdrs.append(("Content-Length", str(len(body))))
            if close:
                hdrs.append(("Connection", "close"))
            req = ("%s %s HTTP/1.1\r\n" % (method, target)).encode("latin-1")
            req += b"".join(("%s: %s\r\n" % (k, v)).encode("latin-1") for k, v in hdrs)
            req += b"\r\n" + (body or b"")
        else:
            req = raw
        try:
            s.sendall(req)
        except (BrokenPipeError, ConnectionResetError) as e:
            pass  # the server may answer early (413) and close; read what it sent
        deadline = time.time() + timeout
        out = []
        rest = b""
        for _ in range(n_responses):
            try:
                r, rest = parse_response(s, rest, method, deadline)
                interim = []
                while r.get("status") and 100 <= r["status"] < 200 and r["status"] != 101:
                    interim.append(r["status_line"])
                    r, rest = parse_response(s, rest, method, deadline)
                if interim:
                    r["interim"] = interim
            except socket.timeout:
                r = {"status": None, "error": "timeout"}
            except ConnectionResetError:
                r = {"status": None, "error": "reset"}
            out.append(r)
            if r.get("status") is None:
                break
        return out[0] if n_responses == 1 else out
    finally:
        s.close()


# --------------------------------------------------------------------------- V2 TCP client


class V2:
    def __init__(self, port, src_port):
        # ephemeral source port (always 5 digits on Linux: 32768-60999, so padding is comparable)
        self.s = socket.create_connection(("127.0.0.1", port), timeout=5)
        src_port.append(self.s.getsockname()[1])
        self.s.sendall(b"  V2")
        self.buf = b""

    def _read(self, n):
        while len(self.buf) < n:
            c = self.s.recv(65536)
            if not c:
                raise ConnectionError("closed")
            self.buf += c
        d, self.buf = self.buf[:n], self.buf[n:]
        return d

    def frame(self):
        while True:
            size, ft = struct.unpack(">ii", self._read(8))
            data = self._read(size - 4)
            if ft == 0 and data == b"_heartbeat_":
                self.s.sendall(b"NOP\n")
                continue
            return ft, data

    def cmd(self, line, body=None, expect=True):
        b = line + b"\n"
        if body is not None:
            b += struct.pack(">i", len(body)) + body
        self.s.sendall(b)
        return self.frame() if expect else None

    def close(self):
        self.s.close()


# --------------------------------------------------------------------------- normalisation

RE_RFC3339 = re.compile(r"^start_time \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d)$")
RE_GODUR = re.compile(r"^(\d+(\.\d+)?(ns|µs|us|ms|s)|(\d+h)?(\d+m)?\d+(\.\d+)?s|0s)$")


def mask_text(b, br):
    """Masks time-varying parts of /stats text. Returns (masked_text, format_problems)."""
    probs = []
    t = b.decode("utf-8", "replace")
    lines = t.split("\n")
    out = []
    for ln in lines:
        if ln.startswith("nsqd v"):
            m = re.match(r"^nsqd v(\S+) \(built w/(.+)\)$", ln)
            if not m:
                probs.append("version line format: %r" % ln)
            else:
                ln = "nsqd v%s (built w/<go>)" % m.group(1)
        elif ln.startswith("start_time "):
            if not RE_RFC3339.match(ln):
                probs.append("start_time format: %r" % ln)
            ln = "start_time <T>"
        elif ln.startswith("uptime "):
            if not RE_GODUR.match(ln[7:]):
                probs.append("uptime format: %r" % ln)
            ln = "uptime <D>"
        elif re.match(r"^   \S+ +\t\d+$", ln):
            ln = re.sub(r"\t\d+$", "\t<N>", ln)
        m = re.search(r"connected: (\S+)$", ln)
        if m:
            if not re.match(r"^(\d+h)?(\d+m)?\d+s$", m.group(1)):
                probs.append("connected format: %r" % ln)
            ln = ln[:m.start(1)] + "<D>"
        for i, p in enumerate(br.cports):
            ln = ln.replace(":%d " % p, ":<C%d> " % i)
        if CTX["unfiltered"]:
            ln = re.sub(r"msgs: \d+ +topics: \S+=\d+ ", "msgs: <N> topics: <T>=<N> ", ln)
        if CTX.get("mask_values"):
            ln = re.sub(r"\d+\.\d(ns|us|ms|s)\b", "<dur>", ln)
        out.append(ln)
    # client lines come in map order in nsqd: sort each run of client lines
    res, run = [], []
    for ln in out + [None]:
        if ln is not None and (ln.startswith("        [") or ln.startswith("   [V2 ")):
            run.append(ln)
            continue
        res += sorted(run)
        run = []
        if ln is not None:
            res.append(ln)
    return "\n".join(res), probs


MASK_KEYS = {"start_time", "connect_ts", "uptime", "pid"}
CTX = {"unfiltered": False}  # set per case: /stats without topic= (pub_counts entry is random in nsqd)


def _client_key(c):
    if isinstance(c, dict):
        d = dict((k, v) for k, v in c["__obj__"])
        return str(d.get("client_id")) + str(d.get("remote_address"))
    return ""


def norm_json(v, br, path=""):
    """Returns an order- and type-preserving canonical structure with volatile values masked."""
    if isinstance(v, Obj):  # object (list of pairs)
        out = []
        for k, x in v:
            p = path + "." + k
            if k == "pub_counts" and CTX["unfiltered"] and isinstance(x, list) and len(x) == 1:
                out.append([k, ["<one of the client's topics, chosen by Go map order>"]])
            elif k == "value" and CTX.get("mask_values") and isinstance(x, (int, float)):
                out.append([k, "<num>"])
            elif k in MASK_KEYS and isinstance(x, (int, float)) and not isinstance(x, bool):
                out.append([k, "<%s>" % type(x).__name__])
            elif path.endswith(".memory") or path == ".memory":
                out.append([k, "<%s>" % type(x).__name__])
            elif k in ("tcp_port", "http_port", "broadcast_tcp_port", "broadcast_http_port") and x in (
                    br.tcp, br.http):
                out.append([k, "<tcp>" if x == br.tcp else "<http>"])
            else:
                out.append([k, norm_json(x, br, p)])
        return {"__obj__": out}
    if v == []:
        return []
    if isinstance(v, list):
        items = [norm_json(x, br, path + "[]") for x in v]
        if path.endswith(".producers") or path.endswith(".clients"):
            items.sort(key=_client_key)  # nsqd lists clients in map order
        return items
    if isinstance(v, str):
        return norm_str(v, br)
    if path == "" and isinstance(v, int) and not isinstance(v, bool) and v in (br.tcp, br.http):
        return "<tcp>" if v == br.tcp else "<http>"
    return v


def norm_str(s, br):
    s = s.replace(br.data, "<DATA>")
    for p, tag in ((br.tcp, "tcp"), (br.http, "http"), (br.https, "https")):
        s = s.replace("127.0.0.1:%d" % p, "127.0.0.1:<%s>" % tag)
    for i, p in enumerate(br.cports):
        s = s.replace("127.0.0.1:%d" % p, "127.0.0.1:<C%d>" % i)
    s = re.sub(r"_%d\.$" % br.http, "_<http>.", s)  # statsd_prefix nsq.<host>_<http port>.
    return s


class Obj(list):
    """A JSON object as an ordered list of (key, value) pairs."""


def parse_json_pairs(b):
    return json.loads(b.decode("utf-8"), object_pairs_hook=Obj)


def canon(v):
    return json.dumps(v, ensure_ascii=False, sort_keys=False)


def has_ws_outside_strings(b):
    in_s = esc = False
    for ch in b.decode("utf-8", "replace"):
        if in_s:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_s = False
        elif ch == '"':
            in_s = True
        elif ch in " \t\r\n":
            return True
    return False


def norm_raw_bytes(b, br):
    """For byte-exact compares of non-volatile bodies: substitute broker-specific strings."""
    if b in (str(br.tcp).encode(), str(br.http).encode()):
        return b"<port>"
    return norm_str(b.decode("utf-8", "replace"), br).encode()


# --------------------------------------------------------------------------- comparison

HDRS = ["content-type", "x-nsq-content-type", "allow", "location", "transfer-encoding"]


def summarize(r):
    if r.get("status") is None:
        return {"error": r.get("error"), "raw": r.get("raw", b"")[:200].decode("latin-1")}
    h = r["h"]
    body = r["body"]
    return {
        "interim": r.get("interim"),
        "status": r["status"],
        "status_line": r["status_line"],
        "headers": {k: h[k] for k in HDRS + ["content-length", "connection"] if k in h},
        "body": body[:600].decode("utf-8", "replace") + ("...(%d bytes)" % len(body) if len(body) > 600 else ""),
    }


def compare(case, rr, ro, ref, ours):
    """Returns a list of difference strings."""
    diffs = []
    if rr.get("status") is None or ro.get("status") is None:
        if (rr.get("status"), rr.get("error")) != (ro.get("status"), ro.get("error")):
            diffs.append("transport: ref=%s ours=%s" % (rr.get("status") or rr.get("error"),
                                                         ro.get("status") or ro.get("error")))
        return diffs
    mode = case.get("mode", "auto")
    CTX["mask_values"] = case.get("mask_values", False)
    CTX["unfiltered"] = case.get("target", "").startswith("/stats") and "topic=" not in case.get("target", "")
    if mode == "first_line":
        a = re.sub(r"go\d+(\.\d+)*", "<go>", rr["body"].split(b"\n")[0].decode())
        b = re.sub(r"go\d+(\.\d+)*", "<go>", ro["body"].split(b"\n")[0].decode())
        return [] if a == b else ["first line: ref=%r ours=%r" % (a, b)]
    if rr["status"] != ro["status"]:
        diffs.append("status: ref=%s ours=%s" % (rr["status"], ro["status"]))
    if rr.get("interim") != ro.get("interim"):
        diffs.append("interim 1xx: ref=%s ours=%s" % (rr.get("interim"), ro.get("interim")))
    if case.get("status_line") and rr["status_line"] != ro["status_line"]:
        diffs.append("status line: ref=%r ours=%r" % (rr["status_line"], ro["status_line"]))
    for k in HDRS:
        vr, vo = rr["h"].get(k), ro["h"].get(k)
        if k == "location" and vr and vo:
            vr, vo = norm_str(vr, ref), norm_str(vo, ours)
        if mode == "presence" and k == "content-type":
            continue
        if vr != vo:
            diffs.append("header %s: ref=%r ours=%r" % (k, vr, vo))
    if ("content-length" in rr["h"]) != ("content-length" in ro["h"]):
        diffs.append("Content-Length presence: ref=%s ours=%s" % (
            rr["h"].get("content-length"), ro["h"].get("content-length")))
    if case.get("cmp_headers"):
        for k in case["cmp_headers"]:
            if rr["h"].get(k) != ro["h"].get(k):
                diffs.append("header %s: ref=%r ours=%r" % (k, rr["h"].get(k), ro["h"].get(k)))
    if mode == "presence":
        return diffs
    br, bo = rr["body"], ro["body"]
    ctr = rr["h"].get("content-type", "")
    if mode == "text_stats" or (mode == "auto" and ctr.startswith("text/plain") and br.startswith(b"nsqd v")):
        tr, pr = mask_text(br, ref)
        to, po = mask_text(bo, ours)
        for p in pr:
            diffs.append("ref text format problem: " + p)
        for p in po:
            diffs.append("ours text format problem: " + p)
        if tr != to:
            diffs.append("text body differs:\n" + text_diff(tr, to))
        return diffs
    for key in case.get("raw_fields", []):
        pat = re.compile(rb'"' + key.encode() + rb'":"((?:[^"\\]|\\.)*)"')
        fr, fo = pat.findall(br), pat.findall(bo)
        if sorted(fr) != sorted(fo):
            diffs.append("raw JSON string escaping of %r: ref=%r ours=%r" % (key, fr, fo))
    jr = jo = None
    if br[:1] in (b"{", b"[", b'"') or "json" in ctr or case.get("json"):
        try:
            jr = norm_json(parse_json_pairs(br), ref) if br else None
        except ValueError:
            jr = None
        try:
            jo = norm_json(parse_json_pairs(bo), ours) if bo else None
        except ValueError:
            jo = None
    if jr is not None:
        if jo is None and bo:
            diffs.append("body: ref JSON, ours not JSON: ours=%r" % bo[:300])
        elif canon(jr) != canon(jo):
            diffs.append("JSON differs:\n" + json_diff(jr, jo))
        elif mode != "json_struct" and norm_raw_bytes(br, ref) != norm_raw_bytes(bo, ours):
            diffs.append("JSON bytes differ (formatting): ref=%r ours=%r" % (br[:300], bo[:300]))
        if has_ws_outside_strings(br) != has_ws_outside_strings(bo):
            diffs.append("JSON whitespace/compactness differs")
        return diffs
    if norm_raw_bytes(br, ref) != norm_raw_bytes(bo, ours):
        diffs.append("body: ref=%r ours=%r" % (br[:400], bo[:400]))
    return diffs


def text_diff(a, b):
    al, bl = a.split("\n"), b.split("\n")
    out = []
    for i in range(max(len(al), len(bl))):
        x = al[i] if i < len(al) else "<none>"
        y = bl[i] if i < len(bl) else "<none>"
        if x != y:
            out.append("   line %d\n     ref : %r\n     ours: %r" % (i + 1, x, y))
    return "\n".join(out[:30])


def json_diff(a, b, path="$"):
    out = []

    def rec(x, y, p):
        if len(out) > 40:
            return
        if isinstance(x, dict) and isinstance(y, dict):
            xk = [k for k, _ in x["__obj__"]]
            yk = [k for k, _ in y["__obj__"]]
            if xk != yk:
                out.append("%s keys: ref=%s ours=%s" % (p, xk, yk))
            xd, yd = dict((k, v) for k, v in x["__obj__"]), dict((k, v) for k, v in y["__obj__"])
            for k in xk:
                if k in yd:
                    rec(xd[k], yd[k], p + "." + k)
            return
        if isinstance(x, list) and isinstance(y, list):
            if len(x) != len(y):
                out.append("%s length: ref=%d ours=%d" % (p, len(x), len(y)))
            for i, (u, v) in enumerate(zip(x, y)):
                rec(u, v, "%s[%d]" % (p, i))
            return
        if canon(x) != canon(y):
            out.append("%s: ref=%s ours=%s" % (p, canon(x)[:200], canon(y)[:200]))

    rec(a, b, path)
    return "\n".join("   " + o for o in out)


# --------------------------------------------------------------------------- cases


def C(name, method, target, body=None, headers=None, **kw):
    d = {"name": name, "method": method, "target": target, "body": body, "headers": headers}
    d.update(kw)
    return d


def RAW(name, raw, n=1, **kw):
    d = {"name": name, "raw": raw, "n": n, "method": "RAW", "target": raw[:80].decode("latin-1")}
    d.update(kw)
    return d


def ACT(name, fn):
    return {"name": name, "action": fn}


def SLEEP(t=0.3):
    return {"name": "sleep", "action": lambda br: time.sleep(t)}


def stats_cases(tag, q=""):
    sep = "&" if q else ""
    return [
        SLEEP(0.3),
        C("stats json " + tag, "GET", "/stats?format=json" + sep + q, mode="json_struct"),
        C("stats text " + tag, "GET", "/stats" + ("?" + q if q else ""), mode="text_stats"),
    ]


def binmpub(msgs, count=None):
    b = struct.pack(">i", len(msgs) if count is None else count)
    for m in msgs:
        if isinstance(m, tuple):
            b += struct.pack(">i", m[0]) + m[1]
        else:
            b += struct.pack(">i", len(m)) + m
    return b


# V2 client actions (run against each broker in turn)

def act_consumer(br):
    c = V2(br.tcp, br.cports)
    br.clients["cons"] = c
    ident = json.dumps({"client_id": "cons-id", "hostname": "cons-host", "user_agent": "difftest/1.0",
                        "feature_negotiation": True}).encode()
    ft, d = c.cmd(b"IDENTIFY", ident)
    assert ft == 0, d
    ft, d = c.cmd(b"SUB ct ch")
    assert (ft, d) == (0, b"OK"), d
    c.cmd(b"RDY 5", expect=False)


def act_producer(br):
    p = V2(br.tcp, br.cports)
    br.clients["prod"] = p
    ident = json.dumps({"client_id": "prod-id", "hostname": "prod-host", "user_agent": "difftest-pub/1.0"}).encode()
    assert p.cmd(b"IDENTIFY", ident) == (0, b"OK")
    assert p.cmd(b"PUB ct", b"hello") == (0, b"OK")
    assert p.cmd(b"PUB ct", b"world!") == (0, b"OK")
    assert p.cmd(b"MPUB ct", struct.pack(">i", 2) + struct.pack(">i", 1) + b"a" + struct.pack(">i", 2) + b"bb") == (0, b"OK")
    assert p.cmd(b"PUB ct2", b"other") == (0, b"OK")


def act_consume(br):
    c = br.clients["cons"]
    ids = []
    for _ in range(4):
        ft, d = c.frame()
        assert ft == 2, (ft, d)
        ids.append(d[10:26])
    c.cmd(b"FIN " + ids[0], expect=False)
    c.cmd(b"FIN " + ids[1], expect=False)
    c.cmd(b"REQ " + ids[2] + b" 0", expect=False)
    ft, d = c.frame()  # redelivery of ids[2]
    assert ft == 2, (ft, d)
    c.cmd(b"NOP", expect=False)
    br.inflight = [ids[2], ids[3]]


def act_consumer_publishes(br):
    c = br.clients["cons"]
    c.s.sendall(b"PUB ct3\n" + struct.pack(">i", 1) + b"x")
    ft, d = c.frame()
    while ft == 2:
        ft, d = c.frame()
    assert (ft, d) == (0, b"OK"), (ft, d)


def act_bare_client(br):
    # connected but never identified / subscribed: must not show up anywhere
    b = V2(br.tcp, br.cports)
    br.clients["bare"] = b


WEIRD_IDENTIFY = (b'{"client_id":"ab<>&\\u2028\\u0001\\t\\/","hostname":"h\\"q\\\\ \xe2\x80\xa9",'
                  b'"user_agent":"ua/\xc3\xa9 <x> \\ud83d\\ude00 \\u007f"}')


def act_weird_client(br):
    c = V2(br.tcp, br.cports)
    br.clients["weird"] = c
    ft, d = c.cmd(b"IDENTIFY", WEIRD_IDENTIFY)
    assert (ft, d) == (0, b"OK"), (ft, d)
    assert c.cmd(b"SUB weird ch") == (0, b"OK")


def act_identify_probe(body):
    def f(br):
        c = V2(br.tcp, [])
        try:
            return c.cmd(b"IDENTIFY", body)
        except Exception as e:  # noqa
            return repr(e)
        finally:
            c.close()
    return f


def act_close_clients(br):
    for k in ("cons", "prod", "bare", "weird"):
        c = br.clients.pop(k, None)
        if c:
            c.close()
    time.sleep(0.3)


def act_eph_consumer(br):
    c = V2(br.tcp, br.cports)
    br.clients["eph"] = c
    assert c.cmd(b"SUB ct e1#ephemeral") == (0, b"OK")


def act_eph_consumer_leaves(br):
    br.clients.pop("eph").close()
    time.sleep(0.4)


def act_td_consumer(br):
    c = V2(br.tcp, br.cports)
    br.clients["td"] = c
    assert c.cmd(b"SUB td ch") == (0, b"OK")
    c2 = V2(br.tcp, br.cports)
    br.clients["cd"] = c2
    assert c2.cmd(b"SUB cd ch") == (0, b"OK")


def act_check_closed(key):
    def f(br):
        c = br.clients.pop(key)
        c.s.settimeout(2)
        try:
            d = c.s.recv(100)
            ok = d == b""
        except ConnectionResetError:
            ok = True
        except socket.timeout:
            ok = False
        c.close()
        if not ok:
            raise AssertionError("%s consumer socket NOT closed by broker (got %r)" % (key, locals().get("d")))
    return f


def build_cases():
    L = []
    A = L.append
    # ---- fresh broker
    A(C("ping", "GET", "/ping"))
    A(C("stats text version line", "GET", "/stats", mode="first_line"))
    A(C("info", "GET", "/info", mode="json_struct"))
    L += stats_cases("empty")
    A(C("stats json empty include_mem=false", "GET", "/stats?format=json&include_mem=false", mode="json_struct"))
    A(C("stats text empty include_mem=false", "GET", "/stats?include_mem=false", mode="text_stats"))
    A(C("stats json include_clients=false", "GET", "/stats?format=json&include_clients=false", mode="json_struct"))
    A(C("stats format=JSON (case)", "GET", "/stats?format=JSON&include_mem=false", mode="text_stats"))
    A(C("stats format=text", "GET", "/stats?format=text&include_mem=false", mode="text_stats"))
    A(C("stats format twice first wins", "GET", "/stats?format=json&format=text&include_mem=false",
        mode="json_struct"))
    A(C("stats empty topic filter = none", "GET", "/stats?format=json&include_mem=false&topic=&channel=",
        mode="json_struct"))
    A(C("stats Topic= key case", "GET", "/stats?format=json&include_mem=false&Topic=nope", mode="json_struct"))
    A(C("stats bad query %zz", "GET", "/stats?format=json&x=%zz"))
    A(C("stats semicolon query", "GET", "/stats?format=json;include_mem=false"))
    # ---- topic / channel admin
    A(C("topic/create ok", "POST", "/topic/create?topic=t1"))
    A(C("topic/create again", "POST", "/topic/create?topic=t1"))
    A(C("topic/create missing", "POST", "/topic/create"))
    A(C("topic/create Topic= (key case)", "POST", "/topic/create?Topic=t1"))
    A(C("topic/create empty name", "POST", "/topic/create?topic="))
    A(C("topic/create bare key", "POST", "/topic/create?topic"))
    A(C("topic/create bad name", "POST", "/topic/create?topic=bad!name"))
    A(C("topic/create 65 chars", "POST", "/topic/create?topic=" + "a" * 65))
    A(C("topic/create 64 chars", "POST", "/topic/create?topic=" + "a" * 64))
    A(C("topic/create ephemeral", "POST", "/topic/create?topic=eph%23ephemeral"))
    A(C("topic/create bad #", "POST", "/topic/create?topic=a%23b"))
    A(C("topic/create bad query", "POST", "/topic/create?topic=%zz"))
    A(C("topic/create semicolon", "POST", "/topic/create?topic=t1;x=1"))
    A(C("topic/create plus=space", "POST", "/topic/create?topic=t+1"))
    A(C("topic/create encoded key", "POST", "/topic/create?%74opic=t2"))
    A(C("topic/create repeated key first wins", "POST", "/topic/create?topic=t3&topic=bad!"))
    A(C("topic/create repeated key first bad", "POST", "/topic/create?topic=bad!&topic=t3"))
    A(C("topic/create with body", "POST", "/topic/create?topic=t4", body=b"ignored body"))
    A(C("topic/create unicode", "POST", "/topic/create?topic=%C3%A9t%C3%A9"))
    A(C("topic/create fragment in target", "POST", "/topic/create?topic=t5#frag"))
    A(C("cleanup: topic/delete t5 (exists only if fragment was stripped)", "POST", "/topic/delete?topic=t5"))
    A(C("channel/create ok", "POST", "/channel/create?topic=t1&channel=c1"))
    A(C("channel/create c2", "POST", "/channel/create?topic=t1&channel=c2"))
    A(C("channel/create eph", "POST", "/channel/create?topic=t1&channel=ce%23ephemeral"))
    A(C("channel/create missing topic arg", "POST", "/channel/create?channel=c1"))
    A(C("channel/create bad topic", "POST", "/channel/create?topic=bad!&channel=c1"))
    A(C("channel/create missing channel", "POST", "/channel/create?topic=t1"))
    A(C("channel/create bad channel", "POST", "/channel/create?topic=t1&channel=bad!"))
    A(C("channel/create empty channel", "POST", "/channel/create?topic=t1&channel="))
    A(C("channel/create nonexistent topic", "POST", "/channel/create?topic=nope&channel=c1"))
    A(C("channel/create nonexist topic+bad chan", "POST", "/channel/create?topic=nope&channel=bad!"))
    A(C("channel/create bad query", "POST", "/channel/create?topic=t1&channel=%zz"))
    for op in ("empty", "pause", "unpause", "delete"):
        A(C("channel/%s missing topic" % op, "POST", "/channel/%s?channel=c1" % op))
        A(C("channel/%s bad topic" % op, "POST", "/channel/%s?topic=bad!&channel=c1" % op))
        A(C("channel/%s missing channel" % op, "POST", "/channel/%s?topic=t1" % op))
        A(C("channel/%s bad channel" % op, "POST", "/channel/%s?topic=t1&channel=bad!" % op))
        A(C("channel/%s nonexistent topic" % op, "POST", "/channel/%s?topic=nope&channel=c1" % op))
        A(C("channel/%s nonexistent channel" % op, "POST", "/channel/%s?topic=t1&channel=nope" % op))
    for op in ("empty", "pause", "unpause", "delete"):
        A(C("topic/%s missing" % op, "POST", "/topic/%s" % op))
        A(C("topic/%s bad name" % op, "POST", "/topic/%s?topic=bad!" % op))
        A(C("topic/%s empty name" % op, "POST", "/topic/%s?topic=" % op))
        A(C("topic/%s nonexistent" % op, "POST", "/topic/%s?topic=nope" % op))
        A(C("topic/%s bad query" % op, "POST", "/topic/%s?topic=%%zz" % op))
    A(C("topic/pause t1", "POST", "/topic/pause?topic=t1"))
    A(C("topic/pause t1 again", "POST", "/topic/pause?topic=t1"))
    A(C("channel/pause c1", "POST", "/channel/pause?topic=t1&channel=c1"))
    L += stats_cases("paused", "include_mem=false")
    A(C("stats json topic filter", "GET", "/stats?format=json&include_mem=false&topic=t1", mode="json_struct"))
    A(C("stats json topic+channel filter", "GET", "/stats?format=json&include_mem=false&topic=t1&channel=c2",
        mode="json_struct"))
    A(C("stats json channel filter only", "GET", "/stats?format=json&include_mem=false&channel=c1", mode="json_struct"))
    A(C("stats json topic filter nonexistent", "GET", "/stats?format=json&include_mem=false&topic=nope",
        mode="json_struct"))
    A(C("stats json topic ok, channel nonexistent", "GET",
        "/stats?format=json&include_mem=false&topic=t1&channel=nope", mode="json_struct"))
    A(C("stats text topic filter nonexistent", "GET", "/stats?include_mem=false&topic=nope", mode="text_stats"))
    A(C("stats text topic+channel", "GET", "/stats?include_mem=false&topic=t1&channel=c1", mode="text_stats"))
    A(C("stats include_clients=0", "GET", "/stats?format=json&include_mem=0&include_clients=0", mode="json_struct"))
    A(C("stats include_mem=bogus (default true)", "GET", "/stats?format=json&include_mem=bogus&topic=t1",
        mode="json_struct"))
    A(C("stats include_mem=TRUE", "GET", "/stats?format=json&include_mem=TRUE&topic=t1", mode="json_struct"))
    A(C("topic/unpause t1", "POST", "/topic/unpause?topic=t1"))
    A(C("channel/unpause c1", "POST", "/channel/unpause?topic=t1&channel=c1"))
    A(C("channel/unpause c1 again", "POST", "/channel/unpause?topic=t1&channel=c1"))
    A(C("topic/pause unvalidated delete ok name", "POST", "/topic/pause?topic=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"))
    A(C("channel/empty c1", "POST", "/channel/empty?topic=t1&channel=c1"))
    A(C("topic/empty t1", "POST", "/topic/empty?topic=t1"))
    A(C("channel/delete c2", "POST", "/channel/delete?topic=t1&channel=c2"))
    A(C("channel/delete c2 again", "POST", "/channel/delete?topic=t1&channel=c2"))
    A(C("topic/delete 64a", "POST", "/topic/delete?topic=" + "a" * 64))
    A(C("topic/delete t2", "POST", "/topic/delete?topic=t2"))
    A(C("topic/delete t2 again", "POST", "/topic/delete?topic=t2"))
    A(C("topic/create GET (405)", "GET", "/topic/create?topic=t9"))
    L += stats_cases("after admin", "include_mem=false")
    # ---- /pub
    A(C("channel setup pubt", "POST", "/topic/create?topic=pubt"))
    A(C("channel setup pubt/c", "POST", "/channel/create?topic=pubt&channel=c"))
    A(C("pub ok", "POST", "/pub?topic=pubt", body=b"hello"))
    A(C("pub binary content", "POST", "/pub?topic=pubt", body=bytes(range(256))))
    A(C("pub empty body", "POST", "/pub?topic=pubt", body=b""))
    A(C("pub no content-length no body", "POST", "/pub?topic=pubt"))
    A(C("pub empty body bad topic", "POST", "/pub?topic=bad!", body=b""))
    A(C("pub missing topic", "POST", "/pub", body=b"x"))
    A(C("pub empty topic", "POST", "/pub?topic=", body=b"x"))
    A(C("pub bad topic", "POST", "/pub?topic=bad!", body=b"x"))
    A(C("pub bad query", "POST", "/pub?topic=pubt&x=%zz", body=b"x"))
    A(C("pub semicolon", "POST", "/pub?topic=pubt;defer=1", body=b"x"))
    A(C("pub creates topic", "POST", "/pub?topic=pubnew", body=b"x"))
    A(C("pub max size", "POST", "/pub?topic=pubbig", body=b"m" * MAX_MSG))
    A(C("pub too big", "POST", "/pub?topic=pubbig", body=b"m" * (MAX_MSG + 1)))
    A(C("pub too big (CL header only)", "POST", "/pub?topic=pubbig", headers={"Content-Length": str(MAX_MSG + 1)},
        body=b""))
    A(C("pub too big bad topic", "POST", "/pub?topic=bad!", body=b"m" * (MAX_MSG + 1)))
    A(C("pub chunked ok", "POST", "/pub?topic=pubt", headers={"Transfer-Encoding": "chunked"},
        body=b"5\r\nchunk\r\n0\r\n\r\n"))
    A(C("pub chunked too big", "POST", "/pub?topic=pubbig", headers={"Transfer-Encoding": "chunked"},
        body=b"%x\r\n" % (MAX_MSG + 1) + b"m" * (MAX_MSG + 1) + b"\r\n0\r\n\r\n"))
    A(C("pub chunked empty", "POST", "/pub?topic=pubt", headers={"Transfer-Encoding": "chunked"},
        body=b"0\r\n\r\n"))
    A(C("pub GET (405)", "GET", "/pub?topic=pubt"))
    A(C("pub PUT (405)", "PUT", "/pub?topic=pubt", body=b"x"))
    for d in ("0", "1000", "3600000", "3600001", "-1", "abc", "", "+5", "1.5", "0x10", " 5", "%205",
              "9223372036854775807", "9223372036854775808", "-0", "00012", "%2B5", "1%00"):
        A(C("pub defer=%r" % d, "POST", "/pub?topic=pubt&defer=" + d.replace(" ", "%20"), body=b"d"))
    A(C("pub defer=18446744073710 (int64 ns overflow wraps to 0.45ms in Go)", "POST",
        "/pub?topic=pubwrap&defer=18446744073710", body=b"d"))
    A(C("cleanup: topic/delete pubwrap", "POST", "/topic/delete?topic=pubwrap"))
    A(C("pub defer twice first wins", "POST", "/pub?topic=pubt&defer=10&defer=abc", body=b"d"))
    A(C("pub defer bad + bad topic", "POST", "/pub?topic=bad!&defer=abc", body=b"d"))
    A(SLEEP(5.5))  # nsqd's queue scanner only sees a new channel after its 5 s list refresh
    L += stats_cases("after pub", "include_mem=false&topic=pubt")
    # ---- /mpub
    A(C("mpub text ok", "POST", "/mpub?topic=mp", body=b"a\nbb\nccc"))
    A(C("mpub text trailing newline", "POST", "/mpub?topic=mp", body=b"a\nbb\n"))
    A(C("mpub text empty lines", "POST", "/mpub?topic=mp", body=b"\n\na\n\n\nb\n\n"))
    A(C("mpub text CRLF keeps CR", "POST", "/mpub?topic=mp", body=b"x\r\ny\r\n"))
    A(C("mpub text empty body", "POST", "/mpub?topic=mp", body=b""))
    A(C("mpub text only newlines", "POST", "/mpub?topic=mp", body=b"\n\n\n"))
    A(C("mpub text no content-length", "POST", "/mpub?topic=mp"))
    A(C("mpub missing topic", "POST", "/mpub", body=b"a"))
    A(C("mpub bad topic", "POST", "/mpub?topic=bad!", body=b"a"))
    A(C("mpub bad query", "POST", "/mpub?topic=mp&%zz", body=b"a"))
    A(C("mpub text line too big", "POST", "/mpub?topic=mp", body=b"a\n" + b"m" * (MAX_MSG + 1) + b"\nb"))
    A(C("mpub text line max", "POST", "/mpub?topic=mpbig", body=b"m" * MAX_MSG + b"\n"))
    A(C("mpub body too big (CL)", "POST", "/mpub?topic=mp", headers={"Content-Length": str(MAX_BODY + 1)},
        body=b""))
    A(C("mpub body too big bad topic (CL)", "POST", "/mpub?topic=bad!", headers={"Content-Length": str(MAX_BODY + 1)},
        body=b""))
    A(C("mpub text body too big chunked", "POST", "/mpub?topic=mpbig", headers={"Transfer-Encoding": "chunked"},
        body=b"".join(b"%x\r\n" % 1048000 + (b"m" * 1047999 + b"\n") + b"\r\n" for _ in range(6)) + b"0\r\n\r\n"))
    A(C("mpub binary ok", "POST", "/mpub?topic=mp&binary=true", body=binmpub([b"one", b"two", b"three"])))
    A(C("mpub binary=1", "POST", "/mpub?topic=mp&binary=1", body=binmpub([b"x"])))
    A(C("mpub binary=yes (true)", "POST", "/mpub?topic=mp&binary=yes", body=binmpub([b"x"])))
    A(C("mpub binary=false text", "POST", "/mpub?topic=mp&binary=false", body=b"p\nq"))
    A(C("mpub binary=0 text", "POST", "/mpub?topic=mp&binary=0", body=b"p"))
    A(C("mpub binary= (empty=>true)", "POST", "/mpub?topic=mp&binary=", body=binmpub([b"x"])))
    A(C("mpub binary empty body", "POST", "/mpub?topic=mp&binary=true", body=b""))
    A(C("mpub binary short count", "POST", "/mpub?topic=mp&binary=true", body=b"\x00\x00"))
    A(C("mpub binary count 0", "POST", "/mpub?topic=mp&binary=true", body=struct.pack(">i", 0)))
    A(C("mpub binary count -1", "POST", "/mpub?topic=mp&binary=true", body=struct.pack(">i", -1)))
    A(C("mpub binary count too big", "POST", "/mpub?topic=mp&binary=true", body=struct.pack(">i", 1048576)))
    A(C("mpub binary count > msgs", "POST", "/mpub?topic=mp&binary=true", body=binmpub([b"a"], count=2)))
    A(C("mpub binary count < msgs (extra ignored)", "POST", "/mpub?topic=mp&binary=true",
        body=binmpub([b"a", b"b"], count=1)))
    A(C("mpub binary msg size 0", "POST", "/mpub?topic=mp&binary=true", body=binmpub([(0, b"")])))
    A(C("mpub binary msg size -5", "POST", "/mpub?topic=mp&binary=true", body=binmpub([(-5, b"")])))
    A(C("mpub binary msg size truncated", "POST", "/mpub?topic=mp&binary=true", body=binmpub([(10, b"abc")])))
    A(C("mpub binary msg size field short", "POST", "/mpub?topic=mp&binary=true",
        body=struct.pack(">i", 1) + b"\x00\x00"))
    A(C("mpub binary msg too big", "POST", "/mpub?topic=mp&binary=true",
        body=binmpub([(MAX_MSG + 1, b"m" * (MAX_MSG + 1))])))
    A(C("mpub binary 2nd msg bad", "POST", "/mpub?topic=mp&binary=true", body=binmpub([b"ok", (0, b"")])))
    A(C("mpub binary bad topic", "POST", "/mpub?topic=bad!&binary=true", body=binmpub([b"a"])))
    A(C("mpub binary=true&binary=false first wins", "POST", "/mpub?topic=mp&binary=true&binary=false",
        body=binmpub([b"a"])))
    A(C("mpub GET (405)", "GET", "/mpub?topic=mp"))
    L += stats_cases("after mpub", "include_mem=false&topic=mp")
    A(C("stats json mpbig/pubbig", "GET", "/stats?format=json&include_mem=false&topic=mpbig", mode="json_struct"))
    A(C("stats json pubbig", "GET", "/stats?format=json&include_mem=false&topic=pubbig", mode="json_struct"))
    # ---- TCP clients in /stats
    A(ACT("V2 consumer IDENTIFY+SUB ct/ch RDY 5", act_consumer))
    A(ACT("V2 producer PUB x2 + MPUB(2) ct, PUB ct2", act_producer))
    A(ACT("consumer reads 4, FIN 2, REQ 1, reread", act_consume))
    A(ACT("bare connected client", act_bare_client))
    L += stats_cases("clients full", "include_mem=false")
    A(C("stats json clients topic=ct", "GET", "/stats?format=json&include_mem=false&topic=ct", mode="json_struct"))
    A(C("stats json clients topic=ct2 (pub_counts filter)", "GET", "/stats?format=json&include_mem=false&topic=ct2",
        mode="json_struct"))
    A(C("stats json clients topic=ct channel=ch", "GET",
        "/stats?format=json&include_mem=false&topic=ct&channel=ch", mode="json_struct"))
    A(C("stats json clients include_clients=false", "GET",
        "/stats?format=json&include_mem=false&include_clients=false", mode="json_struct"))
    A(C("stats text clients include_clients=false", "GET", "/stats?include_mem=false&include_clients=false",
        mode="text_stats"))
    A(C("channel/pause ch (with consumer)", "POST", "/channel/pause?topic=ct&channel=ch"))
    L += stats_cases("clients paused", "include_mem=false&topic=ct")
    A(C("channel/unpause ch", "POST", "/channel/unpause?topic=ct&channel=ch"))
    A(ACT("consumer also publishes (PUB ct3)", act_consumer_publishes))
    L += stats_cases("consumer-producer", "include_mem=false&topic=ct")
    A(C("stats json consumer-producer, filter topic=t1 (not its topic)", "GET",
        "/stats?format=json&include_mem=false&topic=t1", mode="json_struct"))
    A(C("stats json consumer-producer, filter topic=ct&channel=nope", "GET",
        "/stats?format=json&include_mem=false&topic=ct&channel=nope", mode="json_struct"))
    A(C("channel/empty ch with in-flight", "POST", "/channel/empty?topic=ct&channel=ch"))
    L += stats_cases("after channel empty", "include_mem=false&topic=ct")
    A(ACT("consumer with odd chars in IDENTIFY strings", act_weird_client))
    A(SLEEP(0.2))
    A(C("stats json odd client strings (raw escaping)", "GET", "/stats?format=json&include_mem=false&topic=weird",
        mode="json_struct", raw_fields=["client_id", "hostname", "user_agent"]))
    A(C("stats text odd client strings", "GET", "/stats?include_mem=false&topic=weird", mode="text_stats"))
    A(ACT("close clients", act_close_clients))
    for b in (b'{"client_id":"a\xffb"}', b'{"user_agent":"\\ud83d"}', b'{"user_agent":"\xed\xa0\xbd"}'):
        A(ACT("TCP side check: IDENTIFY %r (Go replaces bad UTF-8 with U+FFFD)" % b, act_identify_probe(b)))
    L += stats_cases("clients gone", "include_mem=false")
    A(ACT("consumer SUB ct e1#ephemeral", act_eph_consumer))
    A(C("stats json eph channel present", "GET", "/stats?format=json&include_mem=false&topic=ct", mode="json_struct"))
    A(ACT("ephemeral consumer disconnects", act_eph_consumer_leaves))
    A(C("stats json eph channel gone", "GET", "/stats?format=json&include_mem=false&topic=ct", mode="json_struct"))
    A(ACT("consumers SUB td/ch and cd/ch", act_td_consumer))
    A(C("topic/delete td with consumer", "POST", "/topic/delete?topic=td"))
    A(ACT("td consumer socket closed by broker?", act_check_closed("td")))
    A(C("channel/delete cd/ch with consumer", "POST", "/channel/delete?topic=cd&channel=ch"))
    A(ACT("cd consumer socket closed by broker?", act_check_closed("cd")))
    L += stats_cases("after deletes with consumers", "include_mem=false")
    A(C("topic/pause pubt", "POST", "/topic/pause?topic=pubt"))
    A(C("pub to paused topic", "POST", "/pub?topic=pubt", body=b"paused"))
    A(C("mpub to paused topic", "POST", "/mpub?topic=pubt", body=b"p1\np2"))
    L += stats_cases("paused topic pub", "include_mem=false&topic=pubt")
    A(C("topic/unpause pubt", "POST", "/topic/unpause?topic=pubt"))
    A(C("pub ephemeral topic", "POST", "/pub?topic=eph%23ephemeral", body=b"e"))
    A(C("stats json ephemeral topic", "GET", "/stats?format=json&include_mem=false&topic=eph%23ephemeral",
        mode="json_struct"))
    # ---- read-after-write consistency (no sleeps; with --cores 2 requests land on different cores)
    for i in range(12):
        t = "rw%d" % i
        A(C("rw create topic %s" % t, "POST", "/topic/create?topic=" + t))
        A(C("rw create channel %s/c" % t, "POST", "/channel/create?topic=%s&channel=c" % t))
        A(C("rw pub %s" % t, "POST", "/pub?topic=" + t, body=b"x%d" % i))
        A(C("rw mpub %s" % t, "POST", "/mpub?topic=" + t, body=b"a\nb"))
        A(C("rw pause channel %s/c" % t, "POST", "/channel/pause?topic=%s&channel=c" % t))
        A(C("rw pause topic %s" % t, "POST", "/topic/pause?topic=" + t))
        A(C("rw stats %s" % t, "GET", "/stats?format=json&include_mem=false&topic=" + t, mode="json_struct"))
        A(C("rw empty channel %s/c" % t, "POST", "/channel/empty?topic=%s&channel=c" % t))
        A(C("rw stats after empty %s" % t, "GET", "/stats?format=json&include_mem=false&topic=" + t,
            mode="json_struct"))
        A(C("rw delete channel %s/c" % t, "POST", "/channel/delete?topic=%s&channel=c" % t))
        A(C("rw channel/pause deleted %s/c" % t, "POST", "/channel/pause?topic=%s&channel=c" % t))
        A(C("rw delete topic %s" % t, "POST", "/topic/delete?topic=" + t))
        A(C("rw stats after delete %s" % t, "GET", "/stats?format=json&include_mem=false&topic=" + t,
            mode="json_struct"))
        A(C("rw channel/create on deleted topic %s" % t, "POST", "/channel/create?topic=%s&channel=c" % t))
    # ---- routing / methods / odd requests
    for m in ("POST", "PUT", "DELETE", "PATCH", "HEAD", "FOO", "get"):
        A(C("%s /ping" % m, m, "/ping", body=b"" if m in ("POST", "PUT", "PATCH") else None))
    A(C("HEAD /stats", "HEAD", "/stats"))
    A(C("HEAD /nonexistent", "HEAD", "/nonexistent"))
    A(C("POST /stats", "POST", "/stats", body=b""))
    A(C("POST /info", "POST", "/info", body=b""))
    A(C("DELETE /topic/delete", "DELETE", "/topic/delete?topic=t1"))
    A(C("PUT /channel/create", "PUT", "/channel/create?topic=t1&channel=c1", body=b""))
    A(C("OPTIONS /pub", "OPTIONS", "/pub"))
    A(C("OPTIONS /ping", "OPTIONS", "/ping"))
    A(C("OPTIONS /config/x", "OPTIONS", "/config/x"))
    A(C("OPTIONS /nonexistent", "OPTIONS", "/nonexistent"))
    A(RAW("OPTIONS *", b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
    A(C("GET /", "GET", "/"))
    A(C("GET /nonexistent", "GET", "/nonexistent"))
    A(C("POST /nonexistent", "POST", "/nonexistent", body=b""))
    A(C("GET /ping/ (trailing slash)", "GET", "/ping/"))
    A(C("GET /PING (case)", "GET", "/PING"))
    A(C("GET /Stats?format=json (case+query)", "GET", "/Stats?format=json"))
    A(C("GET //ping", "GET", "//ping"))
    A(C("GET /./ping", "GET", "/./ping"))
    A(C("GET /x/../ping", "GET", "/x/../ping"))
    A(C("GET /p%69ng (encoded)", "GET", "/p%69ng"))
    A(C("GET /ping%2F", "GET", "/ping%2F"))
    A(C("GET /ping%zz", "GET", "/ping%zz"))
    A(C("POST /pub/ (trailing slash, 307)", "POST", "/pub/?topic=pubt", body=b"x"))
    A(C("POST /PUB (case, 307)", "POST", "/PUB?topic=pubt", body=b"x"))
    A(C("GET /ping?x=%zz", "GET", "/ping?x=%zz"))
    A(C("GET /info?x=1;2", "GET", "/info?x=1;2", mode="json_struct"))
    A(C("GET /stats/ (slash)", "GET", "/stats/"))
    A(C("GET /topic (no sub)", "GET", "/topic"))
    A(C("GET /topic/ ", "GET", "/topic/"))
    A(C("POST /topic/create/ ", "POST", "/topic/create/?topic=t1"))
    A(C("GET /metrics (ours extension)", "GET", "/metrics", mode="presence"))
    A(C("GET absolute-form URI", "GET", "http://127.0.0.1/ping"))
    A(C("GET long path 2000", "GET", "/" + "x" * 2000))
    A(C("GET long query 8KB", "GET", "/stats?format=json&include_mem=false&topic=" + "a" * 8192, mode="json_struct"))
    A(C("POST long topic 100KB", "POST", "/topic/create?topic=" + "a" * 100000))
    A(C("GET long query 1.1MB", "GET", "/ping?x=" + "a" * 1100000))
    A(C("GET 120 header fields", "GET", "/ping", headers={"X-H%d" % i: "v" for i in range(120)}))
    A(C("GET 60KB URI", "GET", "/stats?format=json&include_mem=false&topic=" + "a" * 60000, mode="json_struct"))
    A(C("GET 70KB URI", "GET", "/stats?format=json&include_mem=false&topic=" + "a" * 70000, mode="json_struct"))
    A(C("GET many headers 300KB", "GET", "/ping", headers={"X-Big": "b" * 300000}))
    A(RAW("HTTP/1.0 no Host", b"GET /ping HTTP/1.0\r\n\r\n"))
    A(RAW("HTTP/1.1 no Host", b"GET /ping HTTP/1.1\r\nConnection: close\r\n\r\n"))
    A(RAW("HTTP/1.1 pipelined 2x /ping + close", b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"
          b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", n=2))
    A(RAW("HTTP/1.0 keep-alive", b"GET /ping HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
          b"GET /ping HTTP/1.0\r\n\r\n", n=2, cmp_headers=["connection"]))
    A(RAW("garbage request line", b"HELLO\r\n\r\n"))
    A(RAW("HTTP/2.0 request line", b"GET /ping HTTP/2.0\r\nHost: x\r\n\r\n"))
    A(RAW("bad version", b"GET /ping HTTP/1.x\r\nHost: x\r\n\r\n"))
    A(RAW("space in target", b"GET /pi ng HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
    A(RAW("Expect 100-continue pub", b"POST /pub?topic=pubt HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
          b"Expect: 100-continue\r\nConnection: close\r\n\r\nabc", status_line=True))
    A(RAW("bad Content-Length", b"POST /pub?topic=pubt HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n"
          b"Connection: close\r\n\r\nabc"))
    A(RAW("negative Content-Length", b"POST /pub?topic=pubt HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n"
          b"Connection: close\r\n\r\n"))
    # ---- config
    A(C("config nsqlookupd_tcp_addresses GET", "GET", "/config/nsqlookupd_tcp_addresses"))
    A(C("config lookupd PUT ok", "PUT", "/config/nsqlookupd_tcp_addresses", body=b'["127.0.0.1:50999"]'))
    A(C("config lookupd GET after", "GET", "/config/nsqlookupd_tcp_addresses"))
    A(C("config lookupd PUT 2 + dup", "PUT", "/config/nsqlookupd_tcp_addresses",
        body=b'["127.0.0.1:50999", "127.0.0.1:50998","127.0.0.1:50999"]'))
    A(C("config lookupd PUT bad json", "PUT", "/config/nsqlookupd_tcp_addresses", body=b'["a:1"'))
    A(C("config lookupd PUT string", "PUT", "/config/nsqlookupd_tcp_addresses", body=b'"a:1"'))
    A(C("config lookupd PUT ints", "PUT", "/config/nsqlookupd_tcp_addresses", body=b'[1,2]'))
    A(C("config lookupd PUT object", "PUT", "/config/nsqlookupd_tcp_addresses", body=b'{"a":1}'))
    A(C("config lookupd PUT trailing junk", "PUT", "/config/nsqlookupd_tcp_addresses", body=b'["a:1"] x'))
    A(C("config lookupd PUT whitespace", "PUT", "/config/nsqlookupd_tcp_addresses", body=b' [ ] \n'))
    A(C("config lookupd PUT empty body", "PUT", "/config/nsqlookupd_tcp_addresses", body=b''))
    A(C("config lookupd PUT null", "PUT", "/config/nsqlookupd_tcp_addresses", body=b'null'))
    A(C("config lookupd GET after null", "GET", "/config/nsqlookupd_tcp_addresses"))
    A(C("config lookupd PUT non-addr strings", "PUT", "/config/nsqlookupd_tcp_addresses", body=b'["not an addr"]'))
    A(C("config lookupd PUT []", "PUT", "/config/nsqlookupd_tcp_addresses", body=b'[]'))
    A(C("config lookupd PUT too big", "PUT", "/config/nsqlookupd_tcp_addresses",
        body=b'["' + b"a" * MAX_MSG + b'"]'))
    A(C("config lookupd POST (405)", "POST", "/config/nsqlookupd_tcp_addresses", body=b'[]'))
    for lv in (b"warn", b"WARN", b"Debug", b"warn\n", b"bogus", b"", b"info"):
        A(C("config log_level PUT %r" % lv, "PUT", "/config/log_level", body=lv))
        A(C("config log_level GET after %r" % lv, "GET", "/config/log_level"))
    A(C("config PUT mem_queue_size", "PUT", "/config/mem_queue_size", body=b"5"))
    A(C("config PUT unknown", "PUT", "/config/bogus", body=b"5"))
    A(C("config PUT unknown empty body", "PUT", "/config/bogus", body=b""))
    for opt in ("mem_queue_size", "msg_timeout", "max_msg_size", "max_body_size", "id", "node_id", "tls_required",
                "tls_min_version", "statsd_prefix", "statsd_address", "statsd_interval", "statsd_mem_stats",
                "e2e_processing_latency_percentiles", "e2e_processing_latency_window_time",
                "broadcast_address", "broadcast_tcp_port", "broadcast_http_port", "tcp_address", "http_address",
                "https_address", "data_path", "log_prefix", "verbose", "auth_http_addresses",
                "auth_http_request_method", "enable_experiment", "topology_zone", "topology_region", "deflate",
                "snappy", "max_deflate_level", "sync_timeout", "sync_every", "max_rdy_count", "max_heartbeat_interval",
                "max_output_buffer_size", "output_buffer_timeout", "max_channel_consumers", "tls_cert",
                "tls_client_auth_policy", "client_timeout", "queue_scan_interval", "worker_id", "max_req_timeout",
                "max_bytes_per_file", "queue_scan_worker_pool_max", "http_client_connect_timeout",
                "lookupd_tcp_address", "config", "version", "cores", "connection_affinity",
                "output_coalesce", "durable_ack", "MEM_QUEUE_SIZE", "mem-queue-size"):
        A(C("config GET %s" % opt, "GET", "/config/" + opt))
    A(C("config GET empty opt", "GET", "/config/"))
    A(C("config GET nested", "GET", "/config/a/b"))
    A(C("config GET encoded", "GET", "/config/mem%5Fqueue%5Fsize"))
    # ---- debug
    for p in ("/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/symbol", "/debug/pprof/heap?debug=1",
              "/debug/pprof/goroutine?debug=1", "/debug/pprof/block?debug=1", "/debug/pprof/threadcreate?debug=1",
              "/debug/pprof/profile?seconds=1", "/debug/pprof/nonexistent", "/debug/pprof"):
        A(C("pprof GET %s" % p, "GET", p, mode="presence"))
    A(C("pprof POST symbol", "POST", "/debug/pprof/symbol", body=b"0x1", mode="presence"))
    A(C("debug freememory POST", "POST", "/debug/freememory", body=b""))
    A(C("debug freememory GET", "GET", "/debug/freememory"))
    A(C("debug setblockrate ok", "PUT", "/debug/setblockrate?rate=0", body=b""))
    A(C("debug setblockrate bad", "PUT", "/debug/setblockrate?rate=abc", body=b""))
    A(C("debug setblockrate missing", "PUT", "/debug/setblockrate", body=b""))
    A(C("debug setblockrate form body", "PUT", "/debug/setblockrate", body=b"rate=0",
        headers={"Content-Type": "application/x-www-form-urlencoded"}))
    A(C("debug setblockrate GET", "GET", "/debug/setblockrate?rate=0"))
    # ---- deprecated (pre-1.0) endpoints
    for p, m in (("/put?topic=dep", "POST"), ("/put?topic=dep", "GET"), ("/mput?topic=dep", "POST"),
                 ("/create_topic?topic=dep", "GET"), ("/delete_topic?topic=dep", "GET"),
                 ("/empty_topic?topic=dep", "GET"), ("/pause_topic?topic=dep", "GET"),
                 ("/unpause_topic?topic=dep", "GET"), ("/create_channel?topic=dep&channel=c", "GET"),
                 ("/delete_channel?topic=dep&channel=c", "GET"), ("/empty_channel?topic=dep&channel=c", "GET"),
                 ("/pause_channel?topic=dep&channel=c", "GET"), ("/unpause_channel?topic=dep&channel=c", "GET"),
                 ("/topic/create?topic=dep", "GET"), ("/pub?topic=dep", "GET"), ("/mpub?topic=dep", "GET"),
                 ("/stats?format=json", "POST")):
        A(C("deprecated %s %s" % (m, p), m, p, body=b"x" if m == "POST" else None))
    # ---- health and final state
    A(C("ping final", "GET", "/ping"))
    L += stats_cases("final", "include_mem=false")
    A(C("stats json final with mem", "GET", "/stats?format=json", mode="json_struct"))
    A(C("stats text final with mem", "GET", "/stats", mode="text_stats"))
    return L


def act_e2e(br):
    c = V2(br.tcp, br.cports)
    br.clients["e2e"] = c
    assert c.cmd(b"SUB e2e c") == (0, b"OK")
    c.cmd(b"RDY 10", expect=False)
    p = V2(br.tcp, br.cports)
    br.clients["e2ep"] = p
    for i in range(3):
        assert p.cmd(b"PUB e2e", b"m%d" % i) == (0, b"OK")
    for i in range(3):
        ft, d = c.frame()
        assert ft == 2
        time.sleep(0.002)
        c.cmd(b"FIN " + d[10:26], expect=False)
    c.cmd(b"NOP", expect=False)


def build_e2e_cases():
    """Run with --e2e-processing-latency-percentile=1.0,0.99,0.5 on both brokers."""
    L = []
    A = L.append
    A(C("e2e config GET percentiles", "GET", "/config/e2e_processing_latency_percentiles"))
    A(C("e2e topic/create", "POST", "/topic/create?topic=e2e"))
    A(C("e2e channel/create", "POST", "/channel/create?topic=e2e&channel=c"))
    A(C("e2e channel/create idle", "POST", "/channel/create?topic=e2e&channel=idle"))
    L += stats_cases("e2e no samples", "include_mem=false&topic=e2e")
    A(ACT("consume 3 with FIN", act_e2e))
    A(SLEEP(0.3))
    A(C("e2e stats json (values masked)", "GET", "/stats?format=json&include_mem=false&topic=e2e",
        mode="json_struct", mask_values=True))
    A(C("e2e stats text (durations masked)", "GET", "/stats?include_mem=false&topic=e2e", mode="text_stats",
        mask_values=True))
    return L


PROFILES = {
    "main": ([], build_cases),
    "e2e": (["--e2e-processing-latency-percentile=1.0,0.99,0.5"], build_e2e_cases),
}

# --------------------------------------------------------------------------- runner


def run_case(case, br):
    if "raw" in case:
        raw = case["raw"].replace(b"Host: x", ("Host: 127.0.0.1:%d" % br.http).encode())
        return http_req(br.http, "RAW", None, raw=raw, n_responses=case.get("n", 1), timeout=case.get("timeout", 4))
    return http_req(br.http, case["method"], case["target"], headers=case.get("headers"), body=case.get("body"),
                    timeout=case.get("timeout", 6 if "profile" not in case["target"] else 10))


def port_free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
        return True
    except OSError:
        return False
    finally:
        s.close()


def start_pair(ours_bin, ref_bin, cores, idx, extra):
    """Starts both brokers on free ports in 50100-54999 (client sockets share that range)."""
    last = None
    for attempt in range(20):
        base = 50100 + ((idx * 40 + attempt * 211) % 4800)
        if not all(port_free(p) for p in list(range(base, base + 3)) + list(range(base + 20, base + 23))):
            continue
        ref = Broker("ref", ref_bin, base, extra)
        ours = Broker("ours", ours_bin, base + 20, ["--cores", str(cores)] + extra)
        try:
            ref.start()
            ours.start()
            return ref, ours
        except RuntimeError as e:
            last = e
            ref.stop()
            ours.stop()
    raise RuntimeError("could not start brokers: %s" % last)


def run_suite(ours_bin, ref_bin, cores, idx, verbose=False, only=None, profile="main"):
    extra, builder = PROFILES[profile]
    ref, ours = start_pair(ours_bin, ref_bin, cores, idx, extra)
    results = []
    try:
        for case in builder():
            if only and only not in case["name"] and "action" not in case:
                continue
            if "action" in case:
                errs, rets = {}, {}
                for br in (ref, ours):
                    try:
                        rets[br.name] = case["action"](br)
                    except Exception as e:  # noqa
                        errs[br.name] = "%s: %r" % (type(e).__name__, e)
                if errs and case["name"] != "sleep":
                    results.append({"name": case["name"], "request": "ACTION", "diffs": ["action failed: %s" % errs]})
                elif rets.get("ref") != rets.get("ours"):
                    results.append({"name": case["name"], "request": "ACTION (TCP side check)",
                                    "diffs": ["result: ref=%r ours=%r" % (rets.get("ref"), rets.get("ours"))]})
                continue
            rr = run_case(case, ref)
            ro = run_case(case, ours)
            if isinstance(rr, list):
                diffs = []
                for i in range(max(len(rr), len(ro))):
                    a = rr[i] if i < len(rr) else {"status": None, "error": "missing"}
                    b = ro[i] if i < len(ro) else {"status": None, "error": "missing"}
                    diffs += ["resp#%d %s" % (i + 1, d) for d in compare(case, a, b, ref, ours)]
                sr, so = [summarize(x) for x in rr], [summarize(x) for x in ro]
            else:
                diffs = compare(case, rr, ro, ref, ours)
                sr, so = summarize(rr), summarize(ro)
            req = "%s %s" % (case["method"], case["target"] if len(case["target"]) < 200 else
                             case["target"][:120] + "...(%d chars)" % len(case["target"]))
            if case.get("body") is not None:
                b = case["body"]
                req += "  body=%r" % (b if len(b) < 120 else b[:60] + b"...(%d bytes)" % len(b))
            if case.get("headers"):
                req += "  headers=%s" % ({k: (v if len(v) < 50 else v[:20] + "...") for k, v in case["headers"].items()})
            results.append({"name": case["name"], "request": req, "diffs": diffs, "ref": sr, "ours": so})
            if verbose:
                print("%-50s %s" % (case["name"][:50], "DIFF" if diffs else "ok"))
        # is ours still alive?
        if ours.proc.poll() is not None:
            results.append({"name": "ours process", "request": "-", "diffs": ["ours exited: rc=%s" % ours.proc.returncode]})
    finally:
        ologs = ours.logtext()
        rlogs = ref.logtext()
        try:
            ref.stop()
        finally:
            ours.stop()
    return results, ologs, rlogs


def main():
    args = sys.argv[1:]
    if len(args) < 2:
        print(__doc__)
        sys.exit(2)
    ours_bin, ref_bin = args[0], args[1]
    cores = [1, 2]
    verbose = "--verbose" in args
    only = None
    if "--cores" in args:
        cores = [int(x) for x in args[args.index("--cores") + 1].split(",")]
    if "--only" in args:
        only = args[args.index("--only") + 1]
    total_diff = 0
    runs = [(c, p) for c in cores for p in ("main", "e2e")]
    for i, (c, prof) in enumerate(runs):
        print("=" * 78)
        print("ours --cores %d vs reference, profile %s" % (c, prof))
        print("=" * 78)
        results, ologs, rlogs = run_suite(ours_bin, ref_bin, c, i, verbose, only, prof)
        n = 0
        for r in results:
            if r["diffs"]:
                n += 1
                print("\n[%s] %s" % (r["name"], r["request"]))
                for d in r["diffs"]:
                    print("  - " + d)
                if "ref" in r:
                    print("    ref : %s" % json.dumps(r["ref"])[:700])
                    print("    ours: %s" % json.dumps(r["ours"])[:700])
        print("\n--cores %d profile %s: %d cases, %d with differences" % (c, prof, len(results), n))
        total_diff += n
        with open(os.path.join(HERE, "results-cores%d-%s.json" % (c, prof)), "w") as f:
            json.dump({"results": results, "ours_log_tail": ologs, "ref_log_tail": rlogs}, f, indent=1)
    sys.exit(1 if total_diff else 0)


if __name__ == "__main__":
    main()
