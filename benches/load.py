#!/usr/bin/env python3
"""The two processes of benches/load.sh.

    load.py write LOG ERRORS_LOG RATE SECONDS BURST_EVERY BURST_RECORDS TIMELINE
        Appends ordinary Django/gunicorn log lines to LOG at RATE lines/s for
        SECONDS, paced every 10 ms, and every BURST_EVERY s (first at half of it)
        a burst of BURST_RECORDS database error records: the real records of
        ERRORS_LOG (Django tracebacks, as the fixture's old replica logged them)
        with the current time. Each burst's records are written with one write()
        so that no burst overlaps a sampling gap. TIMELINE gets one JSON line per
        burst and a summary line.

    load.py sample URL TIMELINE PID[,PID...] [PEER_PID,...]
        Every 100 ms until its stdin closes: the daemon's /metrics (source events,
        bytes, truncation, UTF-8 and error counters, correlated errors), the
        resident set size and CPU time of the daemon (the first PID list) and of
        the peer's processes (the second), as JSON lines in TIMELINE.
"""
import json
import os
import random
import re
import sys
import time
import urllib.request

TICK = 0.01


def stamp(now):
    t = time.localtime(now)
    return time.strftime("%Y-%m-%d %H:%M:%S", t) + ",%03d" % int((now % 1) * 1000)


def records(path):
    """The log records of a Django log file: a record line and its traceback."""
    out = []
    for line in open(path).read().splitlines():
        starts = len(line) > 23 and line[4] == "-" and line[19] == ","
        if starts or not out:
            out.append([line])
        else:
            out[-1].append(line)
    return ["\n".join(r) for r in out if " ERROR " in r[0]]


def ordinary_suffixes(rng, n):
    """Lines of a busy app, without their time: Django's runserver and request
    loggers, gunicorn's access log, SQL debug lines."""
    paths = ["/catalog/%d/" % i for i in range(300)] + ["/orders/%d/" % i for i in range(300)] + ["/api/v2/cart/", "/healthz", "/accounts/login/"]
    agents = ["Mozilla/5.0 (X11; Linux x86_64)", "kube-probe/1.30", "python-requests/2.32.3", "curl/8.5.0"]
    templates = [
        ' INFO django.server "GET {p} HTTP/1.1" 200 {n}',
        ' INFO django.server "POST {p} HTTP/1.1" 302 0',
        ' INFO gunicorn.access 10.0.{a}.{b} - - "GET {p} HTTP/1.1" 200 {n} "-" "{ua}"',
        ' INFO gunicorn.access 10.0.{a}.{b} - - "POST {p} HTTP/1.1" 201 {n} "-" "{ua}"',
        ' WARNING django.request Not Found: {p}',
        ' DEBUG django.db.backends (0.{m:03d}) SELECT "catalog_product"."id", "catalog_product"."name" FROM "catalog_product" WHERE "catalog_product"."id" = {n} LIMIT 21; args=({n},); alias=default',
        ' INFO celery.worker.strategy Task orders.tasks.send_receipt[{a}{b}{n}] received',
    ]
    return [
        rng.choice(templates).format(p=rng.choice(paths), n=rng.randrange(100, 99999), m=rng.randrange(1000), a=rng.randrange(256), b=rng.randrange(256), ua=rng.choice(agents))
        for _ in range(n)
    ]


def write(log, errors_log, rate, seconds, burst_every, burst_records, timeline):
    rng = random.Random(11)
    pool = ordinary_suffixes(rng, 50000)
    kinds = records(errors_log)
    if not kinds:
        sys.exit(f"no error records in {errors_log}")
    patterns = [re.compile(p) for p in open(os.path.join(os.path.dirname(__file__), "replay_patterns.txt")).read().splitlines() if p]
    out = open(log, "a", buffering=1 << 20)
    tl = open(timeline, "w", buffering=1)
    written = ordinary = error_records = error_lines = matching_lines = nbytes = 0
    cursor = 0
    next_burst = burst_every / 2
    bursts = 0
    late_ticks = 0
    start = time.monotonic()
    wall0 = time.time()
    while True:
        now = time.monotonic() - start
        if now >= seconds:
            break
        due = int(rate * min(now + TICK, seconds)) - written
        if due > 0:
            ts = stamp(wall0 + now)
            if cursor + due > len(pool):
                cursor = 0
            chunk = "".join(ts + s + "\n" for s in pool[cursor:cursor + due])
            cursor += due
            out.write(chunk)
            out.flush()
            written += due
            ordinary += due
            nbytes += len(chunk)
        if now >= next_burst:
            ts = stamp(time.time())
            burst = [kinds[i % len(kinds)] for i in range(burst_records)]
            text = "".join(ts + r[23:] + "\n" for r in burst)
            lines = text.count("\n")
            match = sum(1 for line in text.splitlines() if any(p.search(line) for p in patterns))
            before = time.time()
            out.write(text)
            out.flush()
            written += lines
            error_records += burst_records
            error_lines += lines
            matching_lines += match
            nbytes += len(text)
            bursts += 1
            tl.write(json.dumps({"burst": bursts, "at": before, "records": burst_records, "lines": lines, "matching_lines": match, "second": round(now, 3)}) + "\n")
            next_burst += burst_every
        sleep = TICK - ((time.monotonic() - start) % TICK)
        if time.monotonic() - start - now > TICK:
            late_ticks += 1
        time.sleep(sleep)
    out.close()
    elapsed = time.monotonic() - start
    tl.write(json.dumps({
        "summary": True, "lines": written, "ordinary_lines": ordinary, "error_records": error_records,
        "error_lines": error_lines, "matching_lines": matching_lines, "bytes": nbytes,
        "seconds": round(elapsed, 3), "rate": round(written / elapsed), "ordinary_rate": round(ordinary / elapsed),
        "late_ticks": late_ticks, "ended": time.time(),
    }) + "\n")


METRIC = re.compile(r'^(dropguard_[a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$')


def scrape(url):
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    m = {}
    for line in text.splitlines():
        hit = METRIC.match(line)
        if not hit:
            continue
        name, labels, value = hit.groups()
        if name.startswith(("dropguard_source_", "dropguard_correlated_errors_total", "dropguard_incidents_opened_total")):
            key = name if name != "dropguard_source_errors_total" else name + (labels or "")
            m[key] = m.get(key, 0) + float(value)
    return m


def proc(pid):
    """Resident set size now and at its peak (KiB), CPU seconds so far."""
    try:
        status = open(f"/proc/{pid}/status").read()
        stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
    hwm = int(re.search(r"VmHWM:\s+(\d+)", status).group(1))
    ticks = os.sysconf("SC_CLK_TCK")
    return {"rss_kib": rss, "hwm_kib": hwm, "cpu_s": (int(stat[11]) + int(stat[12])) / ticks}


def sample(url, timeline, daemon, peer):
    import select
    out = open(timeline, "w", buffering=1)
    while True:
        t = time.time()
        row = {"t": t}
        try:
            row["m"] = scrape(url)
        except Exception as err:  # noqa: BLE001 - a missed scrape is recorded, not fatal
            row["scrape_error"] = str(err)
        row["daemon"] = [proc(p) for p in daemon]
        row["peer"] = [proc(p) for p in peer]
        out.write(json.dumps(row) + "\n")
        ready, _, _ = select.select([sys.stdin], [], [], max(0.0, 0.1 - (time.time() - t)))
        if ready and not sys.stdin.read(1):
            break


if __name__ == "__main__":
    if sys.argv[1] == "write":
        log, errors_log, rate, seconds, every, size, timeline = sys.argv[2:9]
        write(log, errors_log, int(rate), float(seconds), float(every), int(size), timeline)
    elif sys.argv[1] == "sample":
        url, timeline, daemon = sys.argv[2:5]
        peer = sys.argv[5] if len(sys.argv) > 5 else ""
        sample(url, timeline, [int(p) for p in daemon.split(",") if p], [int(p) for p in peer.split(",") if p])
    else:
        sys.exit(__doc__)
