#!/usr/bin/env python3
"""Does the time of a refused `POST /api/v1/deploys` tell anything about the token?

    token_timing.py HOST PORT TOKEN [N]     (N requests in all, default 20000)

Four kinds of wrong bearer token, interleaved in a shuffled order, each request
on the same keep-alive connection, timed from the first byte sent to the last
byte of the 401 received (time.perf_counter_ns):

  none_same_len   same length, no byte equal to the token's at its position
  last_differs    same length, all but the last byte equal
  prefix_shorter  the token without its last byte (every byte equal, shorter)
  none_longer     eight bytes longer, no byte equal at any position

Prints each kind's percentiles, then, against `none_same_len`, the median
difference with a bootstrap 95% confidence interval and a Mann-Whitney U test
(normal approximation). A leak would show as a difference whose interval
excludes 0 and a small p, the same way in repeated runs.
"""
import math
import random
import socket
import statistics
import sys
import time

host, port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3]
n = int(sys.argv[4]) if len(sys.argv) > 4 else 20000


def other(c):
    """A printable byte that is not `c`."""
    return "x" if c != "x" else "y"


kinds = {
    "none_same_len": "".join(other(c) for c in token),
    "last_differs": token[:-1] + other(token[-1]),
    "prefix_shorter": token[:-1],
    "none_longer": "".join(other(c) for c in token) + "x" * 8,
}
for name, wrong in kinds.items():
    assert wrong != token, name
requests = {
    name: (
        f"POST /api/v1/deploys HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {wrong}\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    for name, wrong in kinds.items()
}


def connect():
    s = socket.create_connection((host, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def exchange(s, request):
    """Sends `request`, reads one response; returns (ns, status)."""
    start = time.perf_counter_ns()
    s.sendall(request)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = 0
            for line in head.split(b"\r\n")[1:]:
                key, _, value = line.partition(b":")
                if key.strip().lower() == b"content-length":
                    length = int(value)
            if len(body) >= length:
                break
    elapsed = time.perf_counter_ns() - start
    return elapsed, int(head.split(b" ", 2)[1])


s = connect()
for _ in range(500):  # warm up: connection, caches, the server's allocator
    exchange(s, requests["none_same_len"])
order = [name for name in kinds for _ in range(n // len(kinds))]
random.Random(5).shuffle(order)
times = {name: [] for name in kinds}
reconnects = 0
for name in order:
    try:
        ns, status = exchange(s, requests[name])
    except ConnectionError:
        reconnects += 1
        s = connect()
        ns, status = exchange(s, requests[name])
    assert status == 401, (name, status)
    times[name].append(ns / 1000)


def q(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]


def mann_whitney(a, b):
    """Two-sided p of the Mann-Whitney U test, normal approximation with ties."""
    both = sorted([(x, 0) for x in a] + [(x, 1) for x in b])
    ranks = [0.0] * len(both)
    i = 0
    ties = 0.0
    while i < len(both):
        j = i
        while j + 1 < len(both) and both[j + 1][0] == both[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        t = j - i + 1
        ties += t**3 - t
        i = j + 1
    r1 = sum(r for r, (_, g) in zip(ranks, both) if g == 0)
    n1, n2 = len(a), len(b)
    u = r1 - n1 * (n1 + 1) / 2
    mu = n1 * n2 / 2
    sigma = math.sqrt(n1 * n2 / 12 * ((n1 + n2 + 1) - ties / ((n1 + n2) * (n1 + n2 - 1))))
    z = (u - mu) / sigma
    return u / (n1 * n2), math.erfc(abs(z) / math.sqrt(2))


def bootstrap_median_diff(a, b, rounds=1000):
    rng = random.Random(9)
    diffs = sorted(
        statistics.median(rng.choices(b, k=len(b))) - statistics.median(rng.choices(a, k=len(a)))
        for _ in range(rounds)
    )
    return diffs[int(0.025 * rounds)], diffs[int(0.975 * rounds)]


print(f"{n} requests, {len(kinds)} kinds interleaved, token of {len(token)} bytes, {reconnects} reconnects")
print(f"{'kind':<16} {'n':>6} {'p10 µs':>8} {'p50 µs':>8} {'p90 µs':>8} {'p99 µs':>8}")
for name, xs in times.items():
    print(f"{name:<16} {len(xs):>6} {q(xs, .1):>8.1f} {q(xs, .5):>8.1f} {q(xs, .9):>8.1f} {q(xs, .99):>8.1f}")
base = times["none_same_len"]
for name, xs in times.items():
    if name == "none_same_len":
        continue
    lo, hi = bootstrap_median_diff(base, xs)
    auc, p = mann_whitney(xs, base)
    diff = statistics.median(xs) - statistics.median(base)
    print(f"{name} - none_same_len: median diff {diff:+.2f} µs, 95% CI [{lo:+.2f}, {hi:+.2f}]; "
          f"Mann-Whitney P(slower) {auc:.3f}, p = {p:.3g}")
