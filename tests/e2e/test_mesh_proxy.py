"""The proxy's side of the mesh: `trellis proxy --server` sidecars and gateways configured live by
`trellis server` over /v1/mesh/stream (docs/protocol.md, docs/mesh-proxy.md).

Real binaries throughout: a server, examples/echo instances each behind its own sidecar, and a
client sidecar reaching them through `--upstream` and `--http-proxy`. One test uses a small
NDJSON server in Python to send what the real server never would (an invalid update)."""
import http.client
import json
import os
import signal
import socket
import threading
import time
import urllib.request

import pytest

from conftest import TRELLIS, wait_until, free_port
from loadgen import LoadGen
from serverutil import Server


def sidecar(procs, server_addrs, service, app=None, *extra):
    args = [TRELLIS, "proxy", "--concurrency", "1", "--service", service]
    for s in server_addrs:
        args += ["--server", s]
    if app is not None:
        args += ["--app", app]
    p = procs(args + list(extra))
    inbound = int(p.wait_for_line(r"listener inbound listening on 127\.0\.0\.1:(\d+)").group(1))
    admin = int(p.wait_for_line(r"admin listening on 127\.0\.0\.1:(\d+)").group(1))
    p.inbound = inbound
    p.admin = admin
    return p


def metric(admin_port, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                yield line


def metric_value(admin_port, name, contains=""):
    for line in metric(admin_port, name):
        if contains in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def get(port, path="/", host=None, timeout=5):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"host": host} if host else {}
        c.request("GET", path, headers=headers)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def via_http_proxy(port, url, timeout=5):
    """What an app with HTTP_PROXY=127.0.0.1:port does: absolute-form request to the proxy."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", url)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def who(resp):
    status, body = resp
    assert status == 200, (status, body[:200])
    return json.loads(body)["service"]


class Instance:
    def __init__(self, echo, side):
        self.echo = echo
        self.sidecar = side

    def kill(self):
        self.echo.proc.kill()
        self.sidecar.kill()


def start_instance(procs, echo, server_addrs, service, name):
    e = echo(name)
    side = sidecar(procs, server_addrs, service, e.address, "--instance-id", name)
    return Instance(e, side)


def passing_ids(server, service):
    status, body, _ = server.request("GET", f"/v1/health/service/{service}?passing")
    if status != 200:
        return set()
    return {e["Service"]["ID"] for e in json.loads(body)}


def start_server_at(procs, data_dir, port):
    """A server on a fixed port: sidecars keep its address across a restart."""
    p = procs([TRELLIS, "server", "--data-dir", data_dir, "--http-addr", f"127.0.0.1:{port}",
               "--dns-addr", "127.0.0.1:0", "--node-name", "node1"])
    p.wait_for_line(r"http api listening on 127\.0\.0\.1:(\d+)")
    dns = int(p.wait_for_line(r"dns listening on 127\.0\.0\.1:(\d+) \(udp\+tcp\)").group(1))
    return Server(p, port, dns, data_dir)


@pytest.fixture
def mesh_server(procs, tmp_path):
    port = free_port()
    srv = start_server_at(procs, str(tmp_path / "data"), port)
    status, _, _ = srv.request("GET", "/v1/mesh/snapshot")
    if status == 404:
        pytest.skip("this build's server has no /v1/mesh yet")
    srv.addr = f"127.0.0.1:{port}"
    srv.port = port
    return srv


def test_sidecars_register_and_route_through_upstream_and_http_proxy(procs, echo, mesh_server):
    addrs = [mesh_server.addr]
    insts = [start_instance(procs, echo, addrs, "orders", f"orders-{i}") for i in range(3)]
    users = [start_instance(procs, echo, addrs, "users", f"users-{i}") for i in range(3)]
    up, hp = free_port(), free_port()
    client = sidecar(procs, addrs, "web", "127.0.0.1:9", "--upstream", f"orders:{up}",
                     "--http-proxy", f"127.0.0.1:{hp}", "--health-tcp")
    wait_until(lambda: passing_ids(mesh_server, "orders") == {"orders-0", "orders-1", "orders-2"},
               what="3 orders instances passing")
    # Registration carried the sidecar's inbound address, not the app's.
    _, body, _ = mesh_server.request("GET", "/v1/catalog/service/orders")
    ports = {e["ServicePort"] for e in json.loads(body)}
    assert ports == {i.sidecar.inbound for i in insts}

    names = set()
    wait_until(lambda: names.add(who(get(up, "/x"))) or len(names) == 3, timeout=10,
               what="all three orders instances answering through --upstream")
    assert names == {"orders-0", "orders-1", "orders-2"}
    # Through the HTTP proxy, by service name.
    names = set()
    wait_until(lambda: names.add(who(via_http_proxy(hp, "http://users/x"))) or len(names) == 3,
               what="the three users instances through --http-proxy")
    assert who(via_http_proxy(hp, "http://orders/y")).startswith("orders-")
    assert via_http_proxy(hp, "http://nosuch/")[0] == 404
    # The client acked what it runs.
    assert metric_value(client.admin, "trellis_proxy_mesh_connected") == 1
    assert metric_value(client.admin, "trellis_proxy_mesh_updates_total", 'result="accepted"') >= 1
    assert metric_value(client.admin, "trellis_proxy_mesh_updates_total", 'result="rejected"') == 0
    # A clean stop deregisters.
    users[0].sidecar.stop()
    wait_until(lambda: "users-0" not in passing_ids(mesh_server, "users"),
               what="users-0 deregistered")
    _, body, _ = mesh_server.request("GET", "/v1/catalog/service/users")
    assert {e["ServiceID"] for e in json.loads(body)} == {"users-1", "users-2"}


def test_killed_instance_no_failed_request_and_new_instance_routed_at_once(procs, echo, mesh_server):
    addrs = [mesh_server.addr]
    insts = [start_instance(procs, echo, addrs, "orders", f"orders-{i}") for i in range(3)]
    up = free_port()
    sidecar(procs, addrs, "web", "127.0.0.1:9", "--upstream", f"orders:{up}", "--health-tcp")
    seen = set()
    wait_until(lambda: seen.add(who(get(up))) or len(seen) == 3, what="3 instances in rotation")

    gen = LoadGen(up, rate=300, threads=16, inspect=lambda s, h, b: json.loads(b)["service"]
                  if s == 200 else (h, b)).start()
    time.sleep(0.5)  # load flowing before the kill
    insts[0].kill()
    time.sleep(2.5)  # outlier detection (3 failures) then the health check take it out
    killed_at = time.monotonic()
    # A new instance: from the moment the registry says it passes to its first request.
    new = start_instance(procs, echo, addrs, "orders", "orders-new")
    passing_at = wait_until(
        lambda: "orders-new" in passing_ids(mesh_server, "orders") and time.monotonic(),
        interval=0.002, what="orders-new passing")
    first = wait_until(
        lambda: next((s.start for s in gen.samples if s.extra == "orders-new"), None),
        timeout=5, interval=0.005, what="orders-new receiving traffic")
    time.sleep(0.5)
    gen.stop()
    summary = gen.summary()
    # Each failure with its time from the start of the load, status, error and body.
    bad = [(round(x.start - gen.samples[0].start, 3), x.status, x.error, x.extra)
           for x in gen.samples if not x.ok]
    assert summary["failed"] == 0, (summary["statuses"], bad)
    late = [s for s in gen.samples if s.start > killed_at and s.extra == "orders-0"]
    assert not late, "the killed instance still got traffic"
    # `passing_at` is observed by polling, so it can only be later than the real moment.
    # The figure is printed, not asserted tightly: tests run beside others on a shared machine
    # (timed assertions belong in bench/, and bench/propagation measures this). The bound
    # only says the change reached the proxy as a push, not by some slow resync.
    print(f"new instance: first request {1000 * (first - passing_at):.1f} ms after passing")
    assert first - passing_at < 1.0, f"new instance got traffic {first - passing_at:.3f}s late"


def test_server_stopped_under_load_then_back(procs, echo, mesh_server, tmp_path):
    addrs = [mesh_server.addr]
    [start_instance(procs, echo, addrs, "orders", f"orders-{i}") for i in range(2)]
    up = free_port()
    client = sidecar(procs, addrs, "web", "127.0.0.1:9", "--upstream", f"orders:{up}",
                     "--health-tcp")
    seen = set()
    wait_until(lambda: seen.add(who(get(up))) or len(seen) == 2, what="2 instances in rotation")
    gen = LoadGen(up, rate=200, threads=8).start()
    time.sleep(0.3)
    mesh_server.proc.stop()
    wait_until(lambda: metric_value(client.admin, "trellis_proxy_mesh_connected") == 0,
               what="the client notices the server is gone")
    time.sleep(30)  # static stability: traffic goes on with what it has, however long
    # Back on the same address and data: the client resyncs; new changes flow again.
    again = start_server_at(procs, mesh_server.data_dir, mesh_server.port)
    wait_until(lambda: metric_value(client.admin, "trellis_proxy_mesh_connected") == 1,
               timeout=15, what="the client reconnects (backoff at most 10 s)")
    start_instance(procs, echo, addrs, "orders", "orders-late")
    wait_until(lambda: "orders-late" in passing_ids(again, "orders"), what="orders-late passing")
    wait_until(lambda: any(who(get(up)) == "orders-late" for _ in range(6)),
               what="orders-late reached after the server came back")
    gen.stop()
    summary = gen.summary()
    assert summary["failed"] == 0, (summary, gen.windows(0.5))


# ---- against a stand-in server: what the real one never sends -------------------------------

class NdjsonServer:
    """Serves GET /v1/mesh/stream with queued lines and records /v1/mesh/ack bodies. Like a
    server that streams only to GET, it answers 405 to POST /v1/mesh/stream (a stream with
    acks in its body): the proxy asks again with GET and posts its acks."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.lines = []
        self.acks = []
        self.cv = threading.Condition()
        self.streams = 0
        self.refused = 0
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def send(self, obj):
        with self.cv:
            self.lines.append(json.dumps(obj))
            self.cv.notify_all()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = c.recv(4096)
            if not chunk:
                return
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        if head.startswith(b"POST /v1/mesh/stream"):
            with self.cv:
                self.refused += 1
            c.sendall(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n"
                      b"connection: close\r\n\r\n")
            c.close()
            return
        if head.startswith(b"POST /v1/mesh/ack"):
            length = int([l.split(b":")[1] for l in head.split(b"\r\n")
                          if l.lower().startswith(b"content-length")][0])
            while len(rest) < length:
                rest += c.recv(4096)
            with self.cv:
                self.acks.append(json.loads(rest[:length]))
                self.cv.notify_all()
            c.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            c.close()
            return
        c.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\n"
                  b"transfer-encoding: chunked\r\n\r\n")
        with self.cv:
            self.streams += 1
            sent = 0
            while not self.closed:
                while sent < len(self.lines):
                    line = (self.lines[sent] + "\n").encode()
                    c.sendall(b"%x\r\n%s\r\n" % (len(line), line))
                    sent += 1
                self.cv.wait(0.1)
        c.close()

    def wait_acks(self, n):
        wait_until(lambda: len(self.acks) >= n, what=f"{n} acks")
        return self.acks


def test_rejected_update_keeps_last_good_and_counts(procs, echo):
    stand_in = NdjsonServer()
    a, b = echo("orders-a"), echo("orders-b")
    up = free_port()
    client = sidecar(procs, [f"127.0.0.1:{stand_in.port}"], "web", "127.0.0.1:9",
                     "--upstream", f"orders:{up}", "--health-tcp")
    # Before any state: the listener is up and answers 503 (no endpoints yet).
    assert get(up)[0] == 503
    svc = {"protocol": "http", "cluster": {"lb": "round_robin"},
           "endpoints": [{"address": a.address, "weight": 1}],
           "routes": [{"match": {"prefix": "/"}, "cluster": "orders"}]}
    stand_in.send({"type": "snapshot", "version": 10, "stream": "x1",
                   "services": {"orders": svc}, "gateways": {}})
    acks = stand_in.wait_acks(1)
    assert acks[0]["accepted"] is True and acks[0]["version"] == 10 and acks[0]["stream"] == "x1"
    assert stand_in.refused == 1  # asked with POST once, then with GET
    wait_until(lambda: who(get(up)) == "orders-a", what="orders-a served")
    stand_in.send({"type": "delta", "version": 11,
                   "services": {"orders": {"cluster": {"lb": "round-robbin"},
                                           "endpoints": [b.address]}}})
    acks = stand_in.wait_acks(2)
    assert acks[1]["accepted"] is False and acks[1]["version"] == 11
    assert acks[1]["error"].startswith("services.orders.cluster.lb: unknown policy"), acks[1]
    assert metric_value(client.admin, "trellis_proxy_mesh_updates_total", 'result="rejected"') == 1
    assert metric_value(client.admin, "trellis_proxy_mesh_version") == 10
    assert all(who(get(up)) == "orders-a" for _ in range(5))
    # The next delta applies against the received state: it fixes the policy and the
    # endpoints rejected with it arrive too.
    stand_in.send({"type": "delta", "version": 12,
                   "services": {"orders": {"cluster": {"lb": "random"}}}})
    acks = stand_in.wait_acks(3)
    assert acks[2]["accepted"] is True, acks[2]
    wait_until(lambda: who(get(up)) == "orders-b", what="orders-b served")
    assert metric_value(client.admin, "trellis_proxy_mesh_version") == 12
    stand_in.closed = True


def test_flag_errors_exit_2(tmp_path):
    import subprocess
    cases = [
        (["--config", "x.yaml", "--server", "127.0.0.1:1"], "--config and --server exclude"),
        (["--server", "127.0.0.1:1"], "exactly one of --service"),
        (["--server", "127.0.0.1:1", "--service", "web"], "--service needs --app"),
        (["--server", "127.0.0.1:1", "--service", "web", "--app", "127.0.0.1:1",
          "--upstream", "orders"], "--upstream orders: expected SERVICE:LOCALPORT"),
        (["--server", "127.0.0.1:1", "--gateway", "edge"], "--gateway needs --listen"),
        (["--server", "127.0.0.1:1", "--gateway", "edge", "--listen", "127.0.0.1:0",
          "--upstream", "a:1"], "--upstream is for sidecars"),
        (["--server", "nowhere", "--service", "web", "--app", "127.0.0.1:1"], "--server nowhere"),
    ]
    for args, msg in cases:
        r = subprocess.run([TRELLIS, "proxy", *args], capture_output=True, text=True, timeout=10)
        assert r.returncode == 2, (args, r.stderr)
        assert msg in r.stderr, (args, r.stderr)


def test_gateway_routes_bound_to_it(procs, echo):
    stand_in = NdjsonServer()
    a, b = echo("orders-a"), echo("users-a")
    listen = free_port()
    gw = procs([TRELLIS, "proxy", "--concurrency", "1", "--server", f"127.0.0.1:{stand_in.port}",
                "--gateway", "edge", "--listen", f"127.0.0.1:{listen}"])
    gw.wait_for_line(r"listener gateway listening on 127\.0\.0\.1:%d" % listen)
    assert get(listen)[0] == 404  # no routes before the server says so

    def svc(name, ep):
        return {"protocol": "http", "cluster": {}, "endpoints": [ep],
                "routes": [{"match": {"prefix": "/"}, "cluster": name}]}
    stand_in.send({"type": "snapshot", "version": 3, "stream": "g1",
                   "services": {"orders": svc("orders", a.address),
                                "users": svc("users", b.address)},
                   "gateways": {
                       "edge": {"routes": [
                           {"match": {"prefix": "/orders", "headers": {"host": "shop.example"}},
                            "cluster": "orders"},
                           {"match": {"prefix": "/users"}, "cluster": "users"}]},
                       "other": {"routes": [{"match": {"prefix": "/"}, "cluster": "orders"}]}}})
    acks = stand_in.wait_acks(1)
    assert acks[0]["accepted"] is True, acks[0]
    assert who(get(listen, "/orders/1", host="shop.example")) == "orders-a"
    assert get(listen, "/orders/1", host="other.example")[0] == 404
    assert who(get(listen, "/users/1")) == "users-a"
    assert get(listen, "/")[0] == 404  # the "other" gateway's routes are not ours
    # Its routes removed: back to 404.
    stand_in.send({"type": "delta", "version": 4, "removed_gateways": ["edge"]})
    stand_in.wait_acks(2)
    wait_until(lambda: get(listen, "/users/1")[0] == 404, what="edge routes removed")
    stand_in.closed = True
