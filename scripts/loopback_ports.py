"""Free loopback ports for the parity scripts, each in its own range so the scripts can run
beside each other and beside the test suite. Stdlib only."""
import random
import socket


def free_ports(n, lo, hi, taken=()):
    """`n` distinct ports in `lo..hi` that bind on 127.0.0.1 right now and are not in `taken`."""
    out = []
    for _ in range(5000):
        if len(out) == n:
            return out
        p = random.randint(lo, hi)
        if p in out or p in taken:
            continue
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
            out.append(p)
        except OSError:
            pass
        finally:
            s.close()
    if len(out) == n:
        return out
    raise RuntimeError("no free ports in %d-%d" % (lo, hi))
