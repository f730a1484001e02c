#!/usr/bin/python3
"""A paced HTTP/1.1 load generator (stdlib only) for the fault-tolerance tests and bench/failure.

N threads, each with its own keep-alive http.client connection (a new one after any error),
share one schedule: request i is due at start + i / rate. A thread takes the next due slot,
sleeps until it is due and sends; when every thread is busy the schedule runs late and the
threads catch up as they free, so the offered rate is the target as long as N covers
rate x latency (Little's law). Every request is recorded: its start (monotonic seconds), its
latency, its status or the exception that ended it, and the response headers asked for.

As a library:
    gen = LoadGen(port, rate=500, threads=32).run(10)      # or .start() ... .stop()
    gen.summary()     # total, failed, success_ratio, p50/p99/max latency, achieved rate
    gen.windows(0.5)  # the same per time window, to see when failures happened

From the command line (prints the summary and the per-window view):
    tests/e2e/loadgen.py --port 10000 --rate 500 --seconds 10 [--threads 32] [--path /]
"""
import argparse
import http.client
import json
import sys
import threading
import time


class Sample:
    """One request: start (monotonic s), latency (s), status (None on exception), error."""
    __slots__ = ("start", "latency", "status", "error", "headers", "extra")

    def __init__(self, start, latency, status, error, headers, extra):
        self.start = start
        self.latency = latency
        self.status = status
        self.error = error
        self.headers = headers
        self.extra = extra

    @property
    def ok(self):
        return self.status is not None and 200 <= self.status < 300


def percentile(sorted_values, q):
    """Nearest-rank percentile of an already sorted list (q in 0..100); None when empty."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil(n * q / 100), at least 1
    return sorted_values[int(rank) - 1]


def summarize(samples, seconds=None):
    """Totals and latency figures of a list of Samples (latencies in seconds)."""
    lat = sorted(s.latency for s in samples)
    failed = sum(1 for s in samples if not s.ok)
    statuses = {}
    errors = {}
    for s in samples:
        if s.status is not None:
            statuses[s.status] = statuses.get(s.status, 0) + 1
        else:
            errors[s.error] = errors.get(s.error, 0) + 1
    out = {
        "total": len(samples),
        "failed": failed,
        "success_ratio": (len(samples) - failed) / len(samples) if samples else None,
        "p50": percentile(lat, 50),
        "p99": percentile(lat, 99),
        "max": lat[-1] if lat else None,
        "statuses": statuses,
        "errors": errors,
    }
    if seconds:
        out["rate"] = len(samples) / seconds
    return out


class LoadGen:
    def __init__(self, port, rate=500.0, threads=32, path="/", method="GET", headers=None,
                 host="127.0.0.1", timeout=5.0, keep_headers=("x-echo-instance",),
                 inspect=None):
        """inspect(status, headers, body) -> value, when given, is stored as Sample.extra
        (e.g. to pull a field out of the body); it runs on the load threads, keep it cheap."""
        if rate <= 0 or threads <= 0:
            raise ValueError("rate and threads must be positive")
        self.host = host
        self.port = port
        self.rate = float(rate)
        self.nthreads = threads
        self.path = path
        self.method = method
        self.headers = dict(headers or {})
        self.timeout = timeout
        self.keep_headers = tuple(h.lower() for h in keep_headers)
        self.inspect = inspect
        self.t0 = None
        self.t_end = None
        self._deadline = None
        self._issued = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []
        self._per_thread = []

    # --- running -------------------------------------------------------------------------

    def start(self, seconds=None):
        """Starts sending; runs until stop(), or for `seconds` when given."""
        if self._threads:
            raise RuntimeError("already started")
        self.t0 = time.monotonic()
        self._deadline = self.t0 + seconds if seconds else None
        for i in range(self.nthreads):
            bucket = []
            self._per_thread.append(bucket)
            t = threading.Thread(target=self._loop, args=(bucket,), daemon=True,
                                 name=f"loadgen-{i}")
            self._threads.append(t)
            t.start()
        return self

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join()
        if self.t_end is None:
            self.t_end = time.monotonic()
        return self

    def wait(self):
        """Waits for a run started with a duration to finish."""
        for t in self._threads:
            t.join()
        if self.t_end is None:
            self.t_end = time.monotonic()
        return self

    def run(self, seconds):
        return self.start(seconds).wait()

    def elapsed(self):
        """Seconds since start (so far, or of the whole run once it ended)."""
        return (self.t_end or time.monotonic()) - self.t0

    def _next_due(self):
        with self._lock:
            i = self._issued
            self._issued += 1
        return self.t0 + i / self.rate

    def _loop(self, out):
        conn = None
        while not self._stop.is_set():
            due = self._next_due()
            if self._deadline is not None and due >= self._deadline:
                break
            delay = due - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            if conn is None:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            start = time.monotonic()
            try:
                conn.request(self.method, self.path, headers=self.headers)
                r = conn.getresponse()
                body = r.read()
                latency = time.monotonic() - start
                hdrs = {}
                for k, v in r.getheaders():
                    k = k.lower()
                    if k in self.keep_headers:
                        hdrs[k] = v
                extra = self.inspect(r.status, hdrs, body) if self.inspect else None
                out.append(Sample(start, latency, r.status, None, hdrs, extra))
                if r.will_close:
                    conn.close()
                    conn = None
            except Exception as e:  # a failure to record, then a fresh connection
                out.append(Sample(start, time.monotonic() - start, None, type(e).__name__,
                                  {}, None))
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    # --- results -------------------------------------------------------------------------

    @property
    def samples(self):
        """Every sample so far, ordered by start time."""
        out = []
        for bucket in self._per_thread:
            out.extend(bucket[:len(bucket)])  # a snapshot; threads may still append
        out.sort(key=lambda s: s.start)
        return out

    def select(self, since=None, until=None):
        """Samples that started in [since, until) (monotonic seconds)."""
        return [s for s in self.samples
                if (since is None or s.start >= since) and (until is None or s.start < until)]

    def summary(self, since=None, until=None):
        samples = self.select(since, until)
        lo = since if since is not None else self.t0
        hi = until if until is not None else (self.t_end or time.monotonic())
        return summarize(samples, max(hi - lo, 1e-9))

    def windows(self, width=0.5):
        """Per-window summaries: [{'t': offset from start, total, failed, p50, p99, ...}]."""
        samples = self.samples
        if not samples:
            return []
        out = []
        n = int((samples[-1].start - self.t0) / width) + 1
        buckets = [[] for _ in range(n)]
        for s in samples:
            buckets[int((s.start - self.t0) / width)].append(s)
        for i, b in enumerate(buckets):
            row = summarize(b, width)
            row["t"] = i * width
            out.append(row)
        return out


def cluster_states(admin_port, host="127.0.0.1", timeout=5.0):
    """{(cluster, address): state} from a trellis proxy's admin GET /clusters."""
    c = http.client.HTTPConnection(host, admin_port, timeout=timeout)
    try:
        c.request("GET", "/clusters")
        r = c.getresponse()
        body = r.read()
        if r.status != 200:
            raise RuntimeError(f"/clusters answered {r.status}: {body[:200]!r}")
    finally:
        c.close()
    out = {}
    for cl in json.loads(body):
        for ep in cl["endpoints"]:
            out[(cl["name"], ep["address"])] = ep["state"]
    return out


class ClusterWatcher:
    """Polls /clusters every `interval` seconds on its own thread and keeps every state change
    with the monotonic time it was first seen, so "how long from the kill until the endpoint
    was ejected" can be read afterwards to within one poll interval."""

    def __init__(self, admin_port, interval=0.01, host="127.0.0.1"):
        self.admin_port = admin_port
        self.host = host
        self.interval = interval
        self.changes = []  # (time, cluster, address, old_state, new_state)
        self.errors = 0
        self._last = {}
        self._cv = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="cluster-watcher")

    def start(self):
        self.poll()  # the starting states, before anything is done to the endpoints
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join()

    def poll(self):
        try:
            states = cluster_states(self.admin_port, self.host)
        except Exception:
            self.errors += 1
            return
        now = time.monotonic()
        with self._cv:
            for key, st in states.items():
                old = self._last.get(key)
                if old != st:
                    self.changes.append((now, key[0], key[1], old, st))
                    self._last[key] = st
            self._cv.notify_all()

    def _loop(self):
        while not self._stop.wait(self.interval):
            self.poll()

    def state(self, cluster, address):
        with self._cv:
            return self._last.get((cluster, address))

    def first_time(self, cluster, address, states, after=None):
        """When (cluster, address) was first seen in one of `states` (after `after`), or None."""
        with self._cv:
            for t, c, a, _, st in self.changes:
                if c == cluster and a == address and st in states and (after is None or
                                                                          t >= after):
                    return t, st
        return None

    def wait_for(self, cluster, address, states, after=None, timeout=10.0):
        """Blocks until first_time(...) is known; returns (time, state) or None on timeout."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                hit = self.first_time(cluster, address, states, after)
                left = deadline - time.monotonic()
                if hit or left <= 0:
                    return hit
                self._cv.wait(min(left, 0.1))


def ms(seconds):
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def format_summary(s):
    ratio = "-" if s["success_ratio"] is None else f"{100 * s['success_ratio']:.3f}%"
    line = (f"requests {s['total']}  failed {s['failed']}  success {ratio}  "
            f"p50 {ms(s['p50'])} ms  p99 {ms(s['p99'])} ms  max {ms(s['max'])} ms")
    if "rate" in s:
        line += f"  rate {s['rate']:.0f}/s"
    if s["statuses"]:
        line += "  statuses " + json.dumps({str(k): v for k, v in sorted(s["statuses"].items())})
    if s["errors"]:
        line += "  errors " + json.dumps(s["errors"])
    return line


def format_windows(rows):
    lines = [f"{'t(s)':>6} {'total':>6} {'failed':>6} {'p50 ms':>8} {'p99 ms':>8}"]
    for r in rows:
        lines.append(f"{r['t']:6.1f} {r['total']:6d} {r['failed']:6d} {ms(r['p50']):>8} "
                     f"{ms(r['p99']):>8}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description="paced HTTP/1.1 load with per-request records")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--rate", type=float, default=500, help="requests per second (target)")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--threads", type=int, default=32)
    ap.add_argument("--path", default="/")
    ap.add_argument("--method", default="GET")
    ap.add_argument("--timeout", type=float, default=5.0, help="per request, seconds")
    ap.add_argument("--window", type=float, default=1.0, help="seconds per window row")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    a = ap.parse_args(argv)
    gen = LoadGen(a.port, rate=a.rate, threads=a.threads, path=a.path, method=a.method,
                  host=a.host, timeout=a.timeout).run(a.seconds)
    s = gen.summary()
    if a.json:
        s = dict(s, statuses={str(k): v for k, v in s["statuses"].items()},
                 windows=gen.windows(a.window))
        for w in s["windows"]:
            w["statuses"] = {str(k): v for k, v in w["statuses"].items()}
        print(json.dumps(s, indent=2))
    else:
        print(format_summary(s))
        print(format_windows(gen.windows(a.window)))
    return 0 if s["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
