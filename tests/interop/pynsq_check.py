#!/usr/bin/env python3
"""Interop check: the official Python client (pynsq) against an nsqd.

Usage (after tests/interop/setup.sh; plain python3 re-execs itself with the venv):
    $REPO/target/interop/venv/bin/python tests/interop/pynsq_check.py \
        --tcp 127.0.0.1:4150 --topic T --count N [--http 127.0.0.1:4151] [--timeout 60] \
        [--tls] [--snappy | --deflate]

--tls, --snappy and --deflate ask for those IDENTIFY features (tls_v1 without certificate
verification, for self-signed test certificates; snappy needs python-snappy) on every
connection, the Writer's and both Readers'; each connection must come up actually upgraded.
Known pynsq 0.9.1 limitation with tornado 6: its snappy/deflate socket wrappers signal "no
decompressed bytes yet" with OSError(EWOULDBLOCK), which tornado 6 treats as a fatal read
error (it only expects BlockingIOError). A broker that writes one compressed flush as several
send() calls (nsqd v1.3.0 does) therefore breaks pynsq when a read ends between them.

What it does (all in one tornado/asyncio loop, bounded by --timeout seconds):
  1. starts two pynsq Readers on topic T, channels <prefix>_a and <prefix>_b, connected
     directly with nsqd_tcp_addresses (no lookupd), and waits until both SUBs got "OK",
     so that both channels exist before anything is published;
  2. publishes N distinct bodies with a pynsq Writer, as a mix of PUB and MPUB commands
     (MPUB batch sizes cycle through 1, 7, 50, 100), with a bounded number of commands
     outstanding; every command must be answered "OK";
  3. waits until each Reader has received (and finished, by returning True from the
     handler) every one of the N bodies; duplicates are tolerated but counted;
  4. with --http, additionally polls nsqd's /stats until both channels report depth 0
     and in_flight 0 (i.e. every FIN was accepted).

Exit status: 0 = success (a summary line "pynsq_check: OK ..." is printed);
             1 = the check failed (reason printed as "pynsq_check: FAIL: ...");
             2 = usage / environment error (e.g. pynsq not installed: run setup.sh).
"""
import argparse
import asyncio
import json
import logging
import os
import ssl
import sys
import time
import urllib.request

PROG = "pynsq_check"

try:
    import nsq
    import tornado
    import tornado.iostream
except ImportError as e:  # pragma: no cover
    # Not run with the interop venv's python: re-exec with it if setup.sh made it.
    _venv_py = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                            "target", "interop", "venv", "bin", "python")
    if os.path.exists(_venv_py) and not os.environ.get("PYNSQ_CHECK_REEXEC"):
        os.environ["PYNSQ_CHECK_REEXEC"] = "1"
        os.execv(_venv_py, [_venv_py, os.path.abspath(__file__)] + sys.argv[1:])
    print("%s: ERROR: cannot import pynsq/tornado (%s); run tests/interop/setup.sh and use "
          "$REPO/target/interop/venv/bin/python" % (PROG, e), file=sys.stderr)
    sys.exit(2)


class CheckFailed(Exception):
    pass


def parse_addr(s):
    host, sep, port = s.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError("expected HOST:PORT, got %r" % s)
    return s


class Tally(object):
    """What one Reader has seen."""

    def __init__(self, name, expected, prefix):
        self.name = name
        self.expected = expected  # set of bodies
        self.prefix = prefix
        self.seen = set()
        self.received = 0
        self.duplicates = 0
        self.foreign = 0
        self.redelivered = 0  # messages with attempts > 1
        self.done = asyncio.Event()
        self.subscribed = asyncio.Event()

    def add(self, message):
        self.received += 1
        if message.attempts > 1:
            self.redelivered += 1
        body = message.body
        if body not in self.expected:
            self.foreign += 1
        elif body in self.seen:
            self.duplicates += 1
        else:
            self.seen.add(body)
            if len(self.seen) == len(self.expected):
                self.done.set()

    def summary(self):
        return "%s: unique=%d/%d received=%d dups=%d redelivered=%d foreign=%d" % (
            self.name, len(self.seen), len(self.expected), self.received,
            self.duplicates, self.redelivered, self.foreign)


def conn_options(args):
    """pynsq connection kwargs (nsq.AsyncConn) for the requested IDENTIFY features."""
    opts = {}
    if args.tls:
        # pynsq's defaults are cert_reqs=CERT_REQUIRED, ssl_version=PROTOCOL_TLSv1_2
        opts.update(tls_v1=True, tls_options={"cert_reqs": ssl.CERT_NONE})
    if args.snappy:
        opts["snappy"] = True
    if args.deflate:
        opts["deflate"] = True
    return opts


def wanted_features(args):
    return [f for f, on in (("tls_v1", args.tls), ("snappy", args.snappy),
                            ("deflate", args.deflate)) if on]


def negotiated_features(conn):
    """The upgrades actually in place on a ready pynsq connection."""
    got = []
    if isinstance(conn.stream, tornado.iostream.SSLIOStream):
        got.append("tls_v1")
    wrapper = type(conn.socket).__name__  # nsq.snappy_socket / nsq.deflate_socket
    if wrapper == "SnappySocket":
        got.append("snappy")
    elif wrapper == "DeflateSocket":
        got.append("deflate")
    return got


def check_features(name, conn, want, failures):
    got = negotiated_features(conn)
    if got != want:
        failures.append("%s: connection %s negotiated %s, asked for %s" % (
            name, conn.id, ",".join(got) or "no features", ",".join(want) or "none"))


class CheckReader(nsq.Reader):
    """A pynsq Reader that reports its SUB response, errors and unexpected closes."""

    def __init__(self, tally, failures, features, *args, **kwargs):
        self._tally = tally
        self._failures = failures
        self._features = features
        self._closing = False
        super(CheckReader, self).__init__(*args, message_handler=self._handle, **kwargs)

    def _handle(self, message):
        self._tally.add(message)
        return True  # pynsq sends FIN

    def _on_connection_ready(self, conn, **kwargs):
        # Called right before pynsq sends SUB on this connection: the next
        # RESPONSE frame on it is the SUB's answer.
        def on_sub_response(conn, data, **kw):
            conn.off("response", on_sub_response)
            if data == b"OK":
                self._tally.subscribed.set()
            else:
                self._failures.append("%s: unexpected SUB response %r" % (self.name, data))
        conn.on("response", on_sub_response)
        check_features(self.name, conn, self._features, self._failures)
        super(CheckReader, self)._on_connection_ready(conn, **kwargs)

    def _on_connection_error(self, conn, error, **kwargs):
        if not self._closing:
            self._failures.append("%s: connection error: %r" % (self.name, error))
        super(CheckReader, self)._on_connection_error(conn, error, **kwargs)

    def _on_connection_close(self, conn, **kwargs):
        if not self._closing:
            self._failures.append("%s: connection to %s closed unexpectedly" % (self.name, conn.id))
        super(CheckReader, self)._on_connection_close(conn, **kwargs)

    def shutdown(self):
        self._closing = True
        self.close()


class CheckWriter(nsq.Writer):
    def __init__(self, failures, features, *args, **kwargs):
        self._failures = failures
        self._features = features
        self._closing = False
        super(CheckWriter, self).__init__(*args, **kwargs)

    def _on_connection_ready(self, conn, **kwargs):
        check_features("writer", conn, self._features, self._failures)
        super(CheckWriter, self)._on_connection_ready(conn, **kwargs)

    def _on_connection_close(self, conn, **kwargs):
        if not self._closing:
            self._failures.append("writer: connection to %s closed unexpectedly" % conn.id)
        super(CheckWriter, self)._on_connection_close(conn, **kwargs)

    def shutdown(self):
        self._closing = True
        for conn in list(self.conns.values()):
            conn.close()


def publish_plan(count, pub_every=3, mpub_sizes=(1, 7, 50, 100)):
    """Split range(count) into commands: every pub_every-th command is a PUB of one
    body, the others are MPUBs whose sizes cycle through mpub_sizes."""
    plan = []
    i = 0
    cmd = 0
    m = 0
    while i < count:
        if cmd % pub_every == 0:
            plan.append(("pub", i, i + 1))
            i += 1
        else:
            n = min(mpub_sizes[m % len(mpub_sizes)], count - i)
            m += 1
            plan.append(("mpub", i, i + n))
            i += n
        cmd += 1
    return plan


async def wait_until(pred, deadline, what, failures, poll=0.01):
    while not pred():
        if failures:
            raise CheckFailed("; ".join(failures))
        if time.monotonic() > deadline:
            raise CheckFailed("timed out waiting for %s" % (what() if callable(what) else what))
        await asyncio.sleep(poll)


async def wait_event(ev, deadline, what, failures):
    await wait_until(ev.is_set, deadline, what, failures, poll=0.02)


def fetch_channel_stats(http, topic):
    url = "http://%s/stats?format=json&topic=%s" % (http, topic)
    with urllib.request.urlopen(url, timeout=5) as r:
        data = json.loads(r.read().decode("utf-8"))
    if "data" in data and isinstance(data["data"], dict):  # very old nsqd wraps the body
        data = data["data"]
    for t in data.get("topics") or []:
        if t.get("topic_name") == topic:
            return {c["channel_name"]: c for c in (t.get("channels") or [])}
    return {}


async def run(args):
    t0 = time.monotonic()
    deadline = t0 + args.timeout
    failures = []
    run_id = "%x%x" % (int(time.time() * 1000), os.getpid())
    prefix = ("pynsq-%s-" % run_id).encode()
    bodies = [prefix + (b"%08d" % i) for i in range(args.count)]
    expected = set(bodies)
    channels = [args.channel_prefix + "_a", args.channel_prefix + "_b"]

    tallies = [Tally(ch, expected, prefix) for ch in channels]
    features = wanted_features(args)
    readers = [
        CheckReader(t, failures, features, topic=args.topic, channel=ch,
                    nsqd_tcp_addresses=[args.tcp], max_in_flight=args.max_in_flight,
                    user_agent="pynsq_check/" + nsq.__version__, **conn_options(args))
        for t, ch in zip(tallies, channels)
    ]
    writer = None
    try:
        for t in tallies:
            await wait_event(t.subscribed, deadline, "reader %s to subscribe" % t.name, failures)
        t_sub = time.monotonic()

        writer = CheckWriter(failures, features, [args.tcp], **conn_options(args))
        await wait_until(lambda: any(c.connected() for c in writer.conns.values()), deadline,
                         "writer to connect", failures)

        plan = publish_plan(args.count)
        window = asyncio.Semaphore(args.window)
        acked = {"n": 0}
        stats = {"pub": 0, "mpub": 0, "mpub_msgs": 0}

        def make_cb(desc):
            def cb(conn, data):
                window.release()
                if isinstance(data, nsq.Error) or data != b"OK":
                    failures.append("writer: %s answered %r" % (desc, data))
                else:
                    acked["n"] += 1
            return cb

        for kind, lo, hi in plan:
            try:
                await asyncio.wait_for(window.acquire(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise CheckFailed("timed out waiting for PUB/MPUB responses (%d of %d commands "
                                  "answered)" % (acked["n"], len(plan)))
            if failures:
                raise CheckFailed("; ".join(failures))
            desc = "%s of bodies [%d,%d)" % (kind.upper(), lo, hi)
            if kind == "pub":
                stats["pub"] += 1
                writer.pub(args.topic, bodies[lo], callback=make_cb(desc))
            else:
                stats["mpub"] += 1
                stats["mpub_msgs"] += hi - lo
                writer.mpub(args.topic, bodies[lo:hi], callback=make_cb(desc))
        await wait_until(lambda: acked["n"] == len(plan), deadline,
                         "publish acks (%d commands)" % len(plan), failures)
        t_pub = time.monotonic()

        for t in tallies:
            await wait_until(
                t.done.is_set, deadline,
                lambda: "every channel to receive all %d messages (have %s)" % (
                    args.count, "; ".join(x.summary() for x in tallies)),
                failures)
        t_recv = time.monotonic()

        # Let the FINs of the last messages reach the socket before closing.
        await wait_until(
            lambda: not any(c.stream and c.stream.writing()
                            for r in readers for c in r.conns.values()),
            deadline, "FINs to flush", failures)

        stats_note = ""
        if args.http:
            last = {}

            def drained():
                cs = fetch_channel_stats(args.http, args.topic)
                last.clear()
                last.update(cs)
                return all(ch in cs and cs[ch].get("depth") == 0 and cs[ch].get("in_flight_count") == 0
                           for ch in channels)
            try:
                await wait_until(drained, deadline, "/stats to show both channels drained", failures,
                                 poll=0.1)
            except CheckFailed as e:
                raise CheckFailed("%s; last /stats: %s" % (e, json.dumps(
                    {ch: {k: last.get(ch, {}).get(k) for k in
                          ("depth", "in_flight_count", "message_count", "requeue_count",
                           "timeout_count")} for ch in channels})))
            stats_note = " stats=drained"
        await asyncio.sleep(0.05)
        if failures:
            raise CheckFailed("; ".join(failures))
    finally:
        # closing our own connections makes pynsq log read errors; they are expected now
        if not args.verbose:
            logging.getLogger("nsq").setLevel(logging.CRITICAL)
        for r in readers:
            try:
                r.shutdown()
            except Exception:
                pass
        if writer is not None:
            writer.shutdown()
        await asyncio.sleep(0.05)

    print("%s: OK topic=%s count=%d features=%s pub_cmds=%d mpub_cmds=%d (mpub_msgs=%d) | %s |%s "
          "subscribe=%.2fs publish=%.2fs consume_done=%.2fs total=%.2fs (pynsq %s, tornado %s)" % (
              PROG, args.topic, args.count, ",".join(features) or "none",
              stats["pub"], stats["mpub"], stats["mpub_msgs"],
              " | ".join(t.summary() for t in tallies), stats_note,
              t_sub - t0, t_pub - t_sub, t_recv - t0, time.monotonic() - t0,
              nsq.__version__, tornado.version))


def main():
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    ap.add_argument("--tcp", required=True, type=parse_addr, help="nsqd TCP address HOST:PORT")
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", required=True, type=int, help="number of messages (>= 1)")
    ap.add_argument("--http", type=parse_addr, default=None,
                    help="optional nsqd HTTP address; if given, /stats must show both channels drained")
    ap.add_argument("--timeout", type=float, default=60.0, help="overall time bound in seconds (60)")
    ap.add_argument("--channel-prefix", default="pynsq", help="channels are PREFIX_a and PREFIX_b")
    ap.add_argument("--max-in-flight", type=int, default=200, help="per-reader max_in_flight (200)")
    ap.add_argument("--window", type=int, default=64,
                    help="max outstanding PUB/MPUB commands (64)")
    ap.add_argument("--tls", action="store_true",
                    help="IDENTIFY tls_v1 (TLS without certificate verification)")
    compression = ap.add_mutually_exclusive_group()
    compression.add_argument("--snappy", action="store_true",
                             help="IDENTIFY snappy (needs python-snappy)")
    compression.add_argument("--deflate", action="store_true", help="IDENTIFY deflate")
    ap.add_argument("-v", "--verbose", action="store_true", help="pynsq INFO logging")
    args = ap.parse_args()
    if args.count < 1:
        ap.error("--count must be >= 1")
    if not nsq.valid_topic_name(args.topic):
        ap.error("invalid topic name %r (pynsq refuses it client-side)" % args.topic)
    for suffix in ("_a", "_b"):
        if not nsq.valid_channel_name(args.channel_prefix + suffix):
            ap.error("invalid channel name %r" % (args.channel_prefix + suffix))

    if args.snappy:
        try:
            import snappy  # noqa: F401  (what pynsq's snappy support imports)
        except ImportError as e:
            print("%s: ERROR: --snappy needs python-snappy (%s); run tests/interop/setup.sh"
                  % (PROG, e), file=sys.stderr)
            sys.exit(2)

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(asyncio.wait_for(run(args), args.timeout + 5))
    except CheckFailed as e:
        print("%s: FAIL: %s" % (PROG, e), file=sys.stderr)
        sys.exit(1)
    except asyncio.TimeoutError:
        print("%s: FAIL: overall timeout (%.0fs) exceeded" % (PROG, args.timeout + 5), file=sys.stderr)
        sys.exit(1)
    except (ConnectionError, OSError) as e:
        print("%s: FAIL: %r" % (PROG, e), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
