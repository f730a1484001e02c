"""The proxy's fault tolerance (issue 4) against real origins under load: three examples/echo
instances behind `trellis proxy --concurrency 2`, loaded at LOAD_RATE requests/s for
LOAD_SECONDS by tests/e2e/loadgen.py while origins are killed, slowed or made to fail.

Every wait polls with a deadline (conftest.wait_until, ClusterWatcher); nothing sleeps to
synchronise. Latency bounds here are behaviour checks with a wide margin (a fast 503 against
a request that would hang, 200 ms tries against a 2 s origin), not benchmarks: the figures
are bench/failure's job.
"""
import http.client
import json
import socket
import threading
import time

from conftest import free_port, wait_until
from loadgen import ClusterWatcher, LoadGen, cluster_states, format_summary, format_windows
from proxyutil import one_route_config, request, start_proxy

LOAD_RATE = 500
LOAD_SECONDS = 10
CLUSTER = "api"


def three(echo):
    return [echo("api") for _ in range(3)]


def indent(text, n):
    return "".join(" " * n + line + "\n" for line in text.strip("\n").splitlines())


# Scenario 1 and 4: active checks, outlier detection and retries of what never reached an
# origin (the configuration).
KILL_ROUTE = indent("retries: {attempts: 2, on: [connect-failure, reset, gateway-error]}", 8)
KILL_CLUSTER = indent("""
health_check: {path: /healthz, interval: 1s, timeout: 500ms, healthy_threshold: 2,
               unhealthy_threshold: 2}
outlier_detection: {consecutive_gateway_failure: 3, consecutive_5xx: 5, interval: 1s,
                    base_ejection_time: 10s, max_ejection_percent: 50}
""", 4)


def admin_post(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("POST", path)
    r = c.getresponse()
    body = r.read()
    c.close()
    assert r.status == 200, (path, r.status, body)


def describe(gen):
    return format_summary(gen.summary()) + "\n" + format_windows(gen.windows(0.5))


def assert_full_load(gen):
    """The schedule was kept: every due request was sent and the run did not fall behind by
    more than a second (otherwise the scenario ran under less load than it claims)."""
    s = gen.summary()
    assert s["total"] == LOAD_RATE * LOAD_SECONDS, describe(gen)
    assert gen.elapsed() < LOAD_SECONDS + 1.0, describe(gen)


def metric(p, name, **labels):
    v = p.metric(name, **labels)
    return 0.0 if v is None else v


def served_by(samples):
    counts = {}
    for s in samples:
        inst = s.headers.get("x-echo-instance")
        counts[inst] = counts.get(inst, 0) + 1
    return counts


# --- 1. kill -9 one origin under load ------------------------------------------------------

def test_kill_one_origin_under_load_no_failures_and_fast_ejection(procs, echo):
    origins = three(echo)
    victim = origins[1]
    p = start_proxy(procs, one_route_config(origins, route=KILL_ROUTE, cluster=KILL_CLUSTER))
    watcher = ClusterWatcher(p.admin_port, interval=0.01).start()
    assert watcher.state(CLUSTER, victim.address) == "healthy"
    gen = LoadGen(p.port(), rate=LOAD_RATE, threads=32).start(LOAD_SECONDS)
    try:
        wait_until(lambda: gen.elapsed() >= 3, timeout=10, what="3 s of load before the kill")
        t_kill = time.monotonic()
        victim.proc.kill()
        out = watcher.wait_for(CLUSTER, victim.address, ("ejected", "unhealthy"),
                               after=t_kill, timeout=5)
    finally:
        gen.wait()
        watcher.stop()
    s = gen.summary()
    assert s["failed"] == 0, describe(gen)
    assert_full_load(gen)
    # the victim really served its share before it died
    before = served_by(gen.select(until=t_kill))
    assert before.get(victim.instance, 0) > 0.2 * sum(before.values()), before
    assert out is not None, f"{victim.address} never left healthy: {watcher.changes}"
    t_out, state = out
    assert t_out - t_kill <= 1.0, (t_out - t_kill, state)
    assert metric(p, "trellis_proxy_outlier_ejections_total", cluster=CLUSTER) >= 1
    # the others stayed in
    for o in origins:
        if o is not victim:
            assert watcher.first_time(CLUSTER, o.address, ("ejected", "unhealthy")) is None


# --- 2. one origin answering 503 half the time ---------------------------------------------

def attempt_header(status, headers, body):
    """The x-trellis-attempt header the origin saw (echo reflects request headers)."""
    if status != 200:
        return None
    return json.loads(body)["headers"].get("x-trellis-attempt")


def test_half_failing_origin_retried_to_success(procs, echo):
    origins = three(echo)
    bad = origins[0]
    admin_post(bad.port, "/admin/error-rate?r=0.5&status=503")
    # ~80 retries/s each waiting up to 25 ms of backoff overlap ~1 at a time, 3 or more about
    # 10 % of the time: the budget's floor is sized for that burst (docs/proxy.md, "Sizing the
    # floor"); the default 3 would refuse ~1 % of requests' retries.
    p = start_proxy(procs, one_route_config(origins, route=indent(
        "retries: {attempts: 2, on: [5xx], budget_min_concurrency: 10}", 8)))
    gen = LoadGen(p.port(), rate=LOAD_RATE, threads=32, inspect=attempt_header).run(LOAD_SECONDS)
    s = gen.summary()
    refused = {k: metric(p, n, cluster=CLUSTER, **lb) for k, n, lb in (
        ("budget", "trellis_proxy_retries_budget_exhausted_total", {}),
        ("max_retries", "trellis_proxy_upstream_overflow_total", {"limit": "retries"}))}
    assert s["success_ratio"] >= 0.999, (refused, describe(gen))
    assert_full_load(gen)
    retries = metric(p, "trellis_proxy_retries_total", cluster=CLUSTER)
    succeeded = metric(p, "trellis_proxy_retries_succeeded_total", cluster=CLUSTER)
    # A third of first tries reach the bad origin and half of those fail: ~1/6 are retried,
    # each once (a retry goes to another, healthy, origin). 5000 requests make the binomial
    # spread about 0.5%; the bounds only reject "no retries" and "retries for successes".
    assert 0.10 * s["total"] <= retries <= 0.25 * s["total"], (retries, s["total"])
    assert succeeded >= 0.99 * retries, (succeeded, retries)
    # The origin is told which try it serves: 1 for first tries, 2 for the retries that
    # reached a good origin, and nothing else with attempts: 2 and healthy peers.
    attempts = {}
    for x in gen.samples:
        if x.ok:
            attempts[x.extra] = attempts.get(x.extra, 0) + 1
    assert set(attempts) <= {"1", "2"}, attempts
    assert attempts.get("2", 0) >= 0.9 * succeeded, (attempts, succeeded)
    # no 503 from the bad origin reached a client through a successful retry's answer
    assert served_by([x for x in gen.samples if x.extra == "2"]).get(bad.instance) is None


# --- 3. one origin delaying every answer by 2 s --------------------------------------------

def test_slow_origin_cut_by_per_try_timeout(procs, echo):
    origins = three(echo)
    slow = origins[2]
    admin_post(slow.port, "/admin/delay?d=2s")
    route = indent("""
timeout: 5s
retries: {attempts: 2, per_try_timeout: 200ms, on: [gateway-error]}
""", 8)
    p = start_proxy(procs, one_route_config(origins, route=route))
    # A third of requests spend 200 ms on the slow origin first: ~35 in flight at 500/s.
    gen = LoadGen(p.port(), rate=LOAD_RATE, threads=96).run(LOAD_SECONDS)
    s = gen.summary()
    assert_full_load(gen)
    assert s["p99"] < 1.0, describe(gen)
    per_try = metric(p, "trellis_proxy_timeouts_total", kind="per_try")
    # round robin sends about a third of first tries to the slow origin
    assert per_try >= 0.2 * s["total"], (per_try, s["total"])
    # ~170 retries/s each holding a retry slot for its backoff (up to 25 ms) meet the default
    # circuit_breakers.max_retries (3) and budget floor now and then: such a request gets the
    # per-try 504. Every failure must be one of those counted refusals, nothing else.
    denied = (metric(p, "trellis_proxy_retries_budget_exhausted_total", cluster=CLUSTER)
              + metric(p, "trellis_proxy_upstream_overflow_total", cluster=CLUSTER,
                       limit="retries"))
    assert set(s["statuses"]) <= {200, 504} and not s["errors"], describe(gen)
    assert s["failed"] <= denied, (s["failed"], denied, describe(gen))
    # Without retries a third would fail. Refusals: ~0.1% on a quiet machine, ~4% with both
    # cores busy elsewhere (tries in flight last longer, so the limit of 3 is met more often).
    assert s["failed"] <= 0.05 * s["total"], describe(gen)
    # and no answer came from it (each of its tries was cut at 200 ms)
    assert served_by(gen.samples).get(slow.instance) is None


# --- 4. every origin dead ------------------------------------------------------------------

class MetricSampler:
    """Reads gauges from /metrics every `interval` s on a thread: (time, {name: value})."""

    def __init__(self, proxy, names, interval=0.05):
        self.proxy = proxy
        self.names = names
        self.interval = interval
        self.rows = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join()

    def _loop(self):
        while not self._stop.wait(self.interval):
            try:
                t0 = time.monotonic()
                text = self.proxy.metrics()
                took = time.monotonic() - t0
            except Exception:
                self.failures += 1
                continue
            vals = {"scrape_seconds": took}
            for line in text.splitlines():
                for n in self.names:
                    if line.startswith(n + "{") or line.startswith(n + " "):
                        vals[n] = vals.get(n, 0.0) + float(line.rsplit(" ", 1)[1])
            self.rows.append((t0, vals))

    def max(self, name, since=None):
        vs = [v.get(name, 0.0) for t, v in self.rows if since is None or t >= since]
        return max(vs) if vs else None


def test_all_origins_dead_fail_fast_without_pile_up(procs, echo):
    origins = three(echo)
    # panic_threshold 0: with every endpoint out, answer 503 (UH) without touching them. The
    # default 50 would be in panic and try the dead endpoints anyway; that is fast here only
    # because a refused loopback connect is instant (a dead remote host costs connect_timeout).
    cluster = KILL_CLUSTER + indent("panic_threshold: 0", 4)
    p = start_proxy(procs, one_route_config(origins, route=KILL_ROUTE, cluster=cluster))
    watcher = ClusterWatcher(p.admin_port, interval=0.01).start()
    up_active = "trellis_proxy_upstream_connections_active"
    down_active = "trellis_proxy_downstream_connections_active"
    sampler = MetricSampler(p, [up_active, down_active]).start()
    threads = 32
    gen = LoadGen(p.port(), rate=LOAD_RATE, threads=threads).start(LOAD_SECONDS)
    try:
        wait_until(lambda: gen.elapsed() >= 1, timeout=10, what="1 s of load before the kill")
        t_kill = time.monotonic()
        for o in origins:
            o.proc.kill()  # SIGKILL and reap
        t_dead = time.monotonic()  # requests sent from here on find no origin alive
        # Outlier detection ejects at most max_ejection_percent (one of three); the active
        # checks (2 failures, 1 s apart) take the others out.
        outs = [watcher.wait_for(CLUSTER, o.address, ("ejected", "unhealthy"), after=t_kill,
                                 timeout=6) for o in origins]
        assert all(outs), watcher.changes
        t_all_out = max(t for t, _ in outs)
        count0 = metric(p, "trellis_proxy_request_duration_seconds_count", listener="web")
        fast0 = metric(p, "trellis_proxy_request_duration_seconds_bucket", listener="web",
                       le="0.05")
        # From here on: requests sent after the snapshot (every worker has applied the states
        # it was sent by then: it takes one poll interval at most).
        t_steady = max(time.monotonic(), t_all_out + 0.05)
        assert LOAD_SECONDS - gen.elapsed() > 2, "the origins took too long to be marked out"
    finally:
        gen.wait()
        sampler.stop()
        watcher.stop()
    count1 = metric(p, "trellis_proxy_request_duration_seconds_count", listener="web")
    fast1 = metric(p, "trellis_proxy_request_duration_seconds_bucket", listener="web", le="0.05")
    assert_full_load(gen)
    after_kill = gen.select(since=t_dead)
    # no request hangs or loses its connection: each gets an answer, a 5xx
    assert all(x.status is not None and 500 <= x.status <= 504 for x in after_kill), \
        describe(gen)
    steady = gen.select(since=t_steady)
    ss = gen.summary(since=t_steady)
    assert ss["total"] >= LOAD_RATE, describe(gen)  # at least a second of it
    assert ss["statuses"] == {503: ss["total"]}, ss
    # answered as "no usable endpoint", not after trying a dead one
    assert metric(p, "trellis_proxy_local_replies_total", flag="UH") >= len(steady)
    # "Under 50 ms" is measured by the proxy's own clock (its request-duration histogram has
    # a 50 ms bucket): at least 99% of what it answered since then, plus the requests that
    # began before t_steady and were still in flight, took under 50 ms. The Python client's
    # view adds its own scheduling (p99 ~7 ms on a quiet machine, ~100 ms with both cores
    # busy elsewhere), so from there we only require no hang.
    answered, fast = count1 - count0, fast1 - fast0
    assert answered >= len(steady), (answered, len(steady))
    assert answered - fast <= 0.01 * answered + threads, (count0, count1, fast0, fast1)
    assert ss["p99"] < 0.5, (format_summary(ss), describe(gen))
    assert ss["max"] < 1.0, format_summary(ss)
    # no pile-up: with no endpoint in service nothing is connected upstream, and clients
    # hold no more connections than they opened; /metrics kept answering promptly.
    assert sampler.max(up_active, since=t_steady) <= len(origins), sampler.rows[-5:]
    assert sampler.max(down_active) <= threads + 1, sampler.rows[-5:]
    assert sampler.failures == 0
    assert max(v["scrape_seconds"] for _, v in sampler.rows) < 1.0
    assert p.admin("/ready")[0] == 200


# --- 5. circuit breaker ---------------------------------------------------------------------

def test_circuit_breaker_rejects_exactly_the_overflow(procs, echo):
    origins = three(echo)
    breakers = indent("circuit_breakers: {max_requests: 10}", 4)
    p = start_proxy(procs, one_route_config(origins, cluster=breakers))
    remaining = "trellis_proxy_circuit_breaker_remaining"
    assert p.metric(remaining, cluster=CLUSTER, limit="requests") == 10
    n, admitted = 50, 10
    barrier = threading.Barrier(n)
    results = [None] * n

    def one(i):
        c = http.client.HTTPConnection("127.0.0.1", p.port(), timeout=10)
        c.connect()
        barrier.wait()
        t0 = time.monotonic()
        try:
            c.request("GET", "/?delay=1s")
            r = c.getresponse()
            r.read()
            results[i] = (t0, time.monotonic() - t0, r.status)
        except Exception as e:
            results[i] = (t0, time.monotonic() - t0, repr(e))
        finally:
            c.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    # While the ten admitted requests wait on their origins, the breaker is full.
    wait_until(lambda: metric(p, "trellis_proxy_upstream_overflow_total", cluster=CLUSTER,
                              limit="requests") >= n - admitted, timeout=5,
               what="the overflow to be rejected")
    during = p.metric(remaining, cluster=CLUSTER, limit="requests")
    t_read = time.monotonic()
    for t in threads:
        t.join()
    starts = [r[0] for r in results]
    # all fifty were sent while the first ten were still in flight (their origin takes 1 s)
    assert max(starts) - min(starts) < 0.5, "the client could not send 50 requests at once"
    statuses = [r[2] for r in results]
    assert statuses.count(200) == admitted and statuses.count(503) == n - admitted, statuses
    rejected = [r[1] for r in results if r[2] == 503]
    served = [r for r in results if r[2] == 200]
    assert max(rejected) < 0.5, rejected          # at once, not after the origin's second
    assert min(r[1] for r in served) >= 1.0, served
    assert all(r[0] + r[1] > t_read for r in served)  # `during` was read while they waited
    assert during == 0, during
    assert metric(p, "trellis_proxy_upstream_overflow_total", cluster=CLUSTER,
                  limit="requests") == n - admitted
    assert metric(p, "trellis_proxy_local_replies_total", flag="UO") == n - admitted
    wait_until(lambda: p.metric(remaining, cluster=CLUSTER, limit="requests") == admitted,
               timeout=5, what="the breaker to drain back to 10")


# --- 6. retry budget --------------------------------------------------------------------------

def test_retry_budget_caps_retries_when_everything_fails(procs, echo):
    origins = three(echo)
    for o in origins:
        admin_post(o.port, "/admin/error-rate?r=1&status=503")
    # circuit_breakers.max_retries (default 3) also caps retries in flight; lift it so the
    # budget is what holds them.
    route = indent("retries: {attempts: 3, on: [5xx], budget_percent: 20, "
                   "budget_min_concurrency: 3}", 8)
    cluster = indent("circuit_breakers: {max_retries: 100000}", 4)
    p = start_proxy(procs, one_route_config(origins, route=route, cluster=cluster))
    # Each try takes the origin's 100 ms, so ~50 first tries are in flight at 500/s and 20%
    # of active requests (~10) is well above budget_min_concurrency: the percentage binds.
    # With instant 503s a few requests would be in flight at a time and the floor of 3
    # concurrent retries would let nearly every request retry, which is the floor's purpose
    # but not what this test measures.
    delay = 0.1
    gen = LoadGen(p.port(), rate=LOAD_RATE, threads=160, path="/?delay=100ms").run(LOAD_SECONDS)
    s = gen.summary()
    assert_full_load(gen)
    assert s["statuses"] == {503: s["total"]}, describe(gen)
    retries = metric(p, "trellis_proxy_retries_total", cluster=CLUSTER)
    exhausted = metric(p, "trellis_proxy_retries_budget_exhausted_total", cluster=CLUSTER)
    assert exhausted > 0
    # Without a budget every request would be retried 3 times (3 x requests). The budget
    # keeps decided retries (in backoff or trying) within 20% of the cluster's active
    # requests, and a request waiting on its retry is itself active: R <= 0.2 (F + R), so
    # R <= 0.25 F where F is the requests on their first try (~50 here). Each retry holds its
    # place at least as long as a first try (its backoff plus the same 100 ms), so retries/s
    # <= 0.25 x requests/s; with the average backoff and the "+1" of the integer check the
    # expected figure is ~20%. Besides, budget_min_concurrency (3) retries are always allowed
    # and each holds its place at least one 100 ms try: at most 3 x LOAD_SECONDS / 0.1 s more.
    floor = 3 * LOAD_SECONDS / delay
    ratio = retries / s["total"]
    assert retries <= 0.25 * s["total"] + floor, (retries, ratio, s["total"], exhausted)
    # and the budget is a percentage, not just the floor: the floor alone would allow about
    # 3 / (backoff + 100 ms) = ~27 retries/s, 5% of requests
    assert retries >= 0.10 * s["total"], (retries, ratio, s["total"], exhausted)


# --- short checks, no load ------------------------------------------------------------------

def test_rate_limit_answers_429_with_retry_after(procs, echo):
    origins = three(echo)
    p = start_proxy(procs, one_route_config(origins, route=indent(
        "rate_limit: {requests_per_second: 10, burst: 5}", 8)))
    conn = http.client.HTTPConnection("127.0.0.1", p.port(), timeout=10)
    t0 = time.monotonic()
    answers = [request(p.port(), "/", conn=conn) for _ in range(20)]
    took = time.monotonic() - t0
    conn.close()
    limited = [a for a in answers if a[0] == 429]
    passed = [a for a in answers if a[0] == 200]
    assert len(limited) + len(passed) == 20, [a[0] for a in answers]
    # the bucket holds 5 and refills 10/s: 5 + 10 x took pass, the rest are limited
    assert len(passed) <= 5 + 10 * took + 1, (len(passed), took)
    assert len(limited) >= 14, ([a[0] for a in answers], took)
    for _, headers, _ in limited:
        # delay-seconds (RFC 9110 10.2.3): a non-negative integer; a token comes within 1 s
        assert headers.get("retry-after", "").isdigit(), headers
        assert 0 <= int(headers["retry-after"]) <= 1, headers
    assert metric(p, "trellis_proxy_rate_limited_total") == len(limited)


def test_fault_abort_answers_without_the_origin(procs, echo):
    origins = three(echo)
    p = start_proxy(procs, one_route_config(origins, route=indent(
        "fault: {abort: {percent: 100, status: 503}}", 8)))
    statuses = [request(p.port(), "/")[0] for _ in range(10)]
    assert statuses == [503] * 10
    assert metric(p, "trellis_proxy_faults_injected_total", kind="abort") == 10
    # aborted before any upstream work
    assert metric(p, "trellis_proxy_upstream_connections_total", cluster=CLUSTER) == 0


def test_fault_delay_holds_requests(procs, echo):
    origins = three(echo)
    p = start_proxy(procs, one_route_config(origins, route=indent(
        "fault: {delay: {percent: 100, duration: 300ms}}", 8)))
    for _ in range(3):
        t0 = time.monotonic()
        status, _, _ = request(p.port(), "/")
        took = time.monotonic() - t0
        assert status == 200
        assert took >= 0.3, took  # a lower bound: the delay happened
    assert metric(p, "trellis_proxy_faults_injected_total", kind="delay") == 3


def test_health_check_takes_failing_origin_out_and_back(procs, echo):
    origins = three(echo)
    sick = origins[0]
    cluster = indent("health_check: {path: /healthz, interval: 200ms, timeout: 150ms, "
                     "healthy_threshold: 2, unhealthy_threshold: 2}", 4)
    p = start_proxy(procs, one_route_config(origins, cluster=cluster))

    def state():
        return cluster_states(p.admin_port)[(CLUSTER, sick.address)]

    def spread(n=60):
        conn = http.client.HTTPConnection("127.0.0.1", p.port(), timeout=10)
        counts = {}
        for _ in range(n):
            status, headers, _ = request(p.port(), "/", conn=conn)
            assert status == 200
            counts[headers["x-echo-instance"]] = counts.get(headers["x-echo-instance"], 0) + 1
        conn.close()
        return counts

    assert state() == "healthy"
    assert spread().get(sick.instance, 0) > 0
    admin_post(sick.port, "/admin/fail")
    wait_until(lambda: state() == "unhealthy", timeout=5, what="the origin to turn unhealthy")
    counts = spread()
    assert sick.instance not in counts, counts
    assert len(counts) == 2, counts
    admin_post(sick.port, "/admin/recover")
    wait_until(lambda: state() == "healthy", timeout=5, what="the origin to turn healthy")
    # round robin over three again: a third each
    assert spread().get(sick.instance, 0) >= 10


# --- 11. a peer Trellis proxy's own failures (the mesh: sidecar inbounds) ------------------

class At:
    """An endpoint given by its address only."""

    def __init__(self, address):
        self.address = address


class ClosingApp:
    """An app that reads each request and closes the connection without answering: what a
    proxy in front of it sees when its app dies in the middle of a request."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            c.settimeout(5)
            try:
                c.recv(65536)
            except OSError:
                pass
            c.close()

    def close(self):
        self.sock.close()


def inner_proxy(procs, app_address):
    """A Trellis proxy in front of one app, as a sidecar's inbound is."""
    return start_proxy(procs, one_route_config([At(app_address)]))


def peers_behind(procs, failing, live, retry_on, trust):
    """A proxy whose cluster is the two inner proxies (round robin on one worker, one retry on
    `retry_on`, no outlier detection so the failing one keeps its turn)."""
    eps = [At(f"127.0.0.1:{failing.port()}"), At(f"127.0.0.1:{live.port()}")]
    return start_proxy(procs, one_route_config(
        eps, route=indent(f"retries: {{attempts: 1, on: [{retry_on}]}}", 8),
        cluster=indent(f"trust_proxy_errors: {'true' if trust else 'false'}", 4)),
        concurrency=1)


def peer_errors(p):
    return metric(p, "trellis_proxy_upstream_errors_total", cluster=CLUSTER, kind="proxy_error")


def gets_retried_posts_not(p, status, flag):
    """Six GETs, then six POSTs through `p` (round robin over a failing and a live peer). Each
    GET whose first try failed at the peer is retried on the other: all succeed. A POST is
    not retried: those that failed are answered by `p` itself with `status` and `flag`.
    Returns (retries, failed POSTs)."""
    gets = [request(p.port(), "/") for _ in range(6)]
    assert [a[0] for a in gets] == [200] * 6, gets
    assert all("x-trellis-proxy-error" not in a[1] for a in gets)
    retried = metric(p, "trellis_proxy_retries_total", cluster=CLUSTER)
    assert retried >= 3 and retried == peer_errors(p)
    posts = [request(p.port(), "/", method="POST", body=b"x") for _ in range(6)]
    failed = [a for a in posts if a[0] != 200]
    assert len(failed) >= 3, posts
    assert all(a[0] == status and a[1].get("x-trellis-proxy-error") == flag for a in failed)
    assert metric(p, "trellis_proxy_retries_total", cluster=CLUSTER) == retried
    assert peer_errors(p) == retried + len(failed)
    return retried, failed


def test_peer_proxy_connect_failure_is_retried_on_another_endpoint(procs, echo):
    dead_app = f"127.0.0.1:{free_port()}"  # nothing listens there
    failing = inner_proxy(procs, dead_app)
    live = inner_proxy(procs, echo("api").address)
    # The inner proxy's own answer names its failure.
    status, headers, _ = request(failing.port(), "/")
    assert (status, headers.get("x-trellis-proxy-error")) == (503, "UF"), headers

    p = peers_behind(procs, failing, live, "connect-failure", trust=True)
    # The failing peer's 503 counts as a connect failure here: a GET is retried on the other
    # endpoint. Not a POST: an endpoint registered without a sidecar could send the header
    # after doing the work, so its word does not make a non-idempotent request retried. It
    # fails as it would have without the header.
    gets_retried_posts_not(p, 503, "UF")

    # Not trusted: the peer's 503 is an answer like any other, passed on without the header
    # (only a proxy's own answers carry it). Without retries, round robin alternates.
    q = peers_behind(procs, failing, live, "connect-failure", trust=False)
    answers = [request(q.port(), "/") for _ in range(10)]
    assert sorted(a[0] for a in answers) == [200] * 5 + [503] * 5, answers
    assert all("x-trellis-proxy-error" not in a[1] for a in answers), answers
    assert metric(q, "trellis_proxy_retries_total", cluster=CLUSTER) == 0
    assert peer_errors(q) == 0


def test_peer_proxy_reset_is_retried_for_idempotent_methods_only(procs, echo):
    app = ClosingApp()
    try:
        failing = inner_proxy(procs, app.address)
        status, headers, _ = request(failing.port(), "/")
        assert (status, headers.get("x-trellis-proxy-error")) == (502, "UC"), headers
        live = inner_proxy(procs, echo("api").address)
        p = peers_behind(procs, failing, live, "reset", trust=True)
        # A GET whose first try hits the failing peer is retried on the other; a POST may have
        # reached the app: its reset is final, answered by this proxy (UC).
        gets_retried_posts_not(p, 502, "UC")
    finally:
        app.close()
