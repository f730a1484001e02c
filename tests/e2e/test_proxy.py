"""trellis proxy with a static configuration, against real origins (examples/echo)."""
import asyncio
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import TRELLIS, wait_until
from proxyutil import one_route_config, start_proxy, request, raw_exchange


def two_cluster_config(api, canary, extra_routes=""):
    return f"""
admin: {{address: 127.0.0.1:0}}
listeners:
  - name: web
    address: 127.0.0.1:0
    protocol: http
    routes:
{extra_routes}
      - match: {{prefix: /api, headers: {{x-canary: "1"}}}}
        cluster: canary
      - match: {{path: /exact, method: GET}}
        cluster: canary
      - match: {{regex: "^/re/[0-9]+$"}}
        cluster: canary
      - match: {{prefix: /api}}
        cluster: api
        request_headers_to_add: {{x-env: prod}}
clusters:
  - name: api
    endpoints: [{api.address}]
  - name: canary
    endpoints:
      - {{address: {canary.address}, weight: 1}}
"""


def assert_refused(port):
    """A new connection to `port` is closed without an answer (over max_connections)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    with pytest.raises((ConnectionError, http.client.RemoteDisconnected, OSError)):
        request(port, "/", conn=c)
    c.close()


def wait_no_open_connection(p, listener="web"):
    wait_until(lambda: p.metric("trellis_proxy_downstream_connections_active",
                                listener=listener) == 0,
               what="the proxy noticed the closes")


def who(resp):
    status, headers, body = resp
    assert status == 200, (status, body[:200])
    return json.loads(body)["service"]


def test_routes_by_path_header_method_and_regex(procs, echo):
    api, canary = echo("api"), echo("canary")
    p = start_proxy(procs, two_cluster_config(api, canary))
    port = p.port()
    assert who(request(port, "/api/x")) == "api"
    assert who(request(port, "/api/x", headers={"x-canary": "1"})) == "canary"
    assert who(request(port, "/api/x", headers={"x-canary": "2"})) == "api"
    assert who(request(port, "/exact")) == "canary"
    assert request(port, "/exact", method="POST")[0] == 404   # method mismatch, no other route
    assert who(request(port, "/re/123")) == "canary"
    assert request(port, "/re/12a")[0] == 404
    status, headers, _ = request(port, "/nothing-here")
    assert status == 404
    # the route's request_headers_to_add reached the origin
    seen = json.loads(request(port, "/api/h")[2])["headers"]
    assert seen["x-env"] == "prod"


def test_forwarding_headers(procs, echo):
    api, canary = echo("api"), echo("canary")
    p = start_proxy(procs, two_cluster_config(api, canary))
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    _, _, body = request(p.port(), "/api/h", headers={
        "Host": "shop.example", "traceparent": tp, "Connection": "x-secret, keep-alive",
        "X-Secret": "hop", "Keep-Alive": "timeout=5", "X-Forwarded-For": "10.1.2.3"})
    seen = json.loads(body)["headers"]
    assert seen["host"] == "shop.example"
    assert seen["x-forwarded-for"] == "10.1.2.3, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert len(seen["x-request-id"]) == 36
    # traceparent keeps the trace id; the span id is the proxy's own
    assert seen["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
    assert "x-secret" not in seen and "keep-alive" not in seen
    # a client-supplied request id is kept
    seen = json.loads(request(p.port(), "/api/h", headers={"x-request-id": "abc-1"})[2])["headers"]
    assert seen["x-request-id"] == "abc-1"


def test_weighted_split_within_tolerance(procs, echo):
    a, b = echo("stable"), echo("canary")
    cfg = f"""
admin: {{address: 127.0.0.1:0}}
listeners:
  - name: web
    address: 127.0.0.1:0
    routes:
      - match: {{prefix: /}}
        weighted_clusters: [{{cluster: stable, weight: 90}}, {{cluster: canary, weight: 10}}]
clusters:
  - name: stable
    endpoints: [{a.address}]
  - name: canary
    endpoints: [{b.address}]
"""
    p = start_proxy(procs, cfg)
    conn = http.client.HTTPConnection("127.0.0.1", p.port(), timeout=10)
    counts = {"stable": 0, "canary": 0}
    n = 2000
    for _ in range(n):
        counts[who(request(p.port(), "/", conn=conn))] += 1
    conn.close()
    # binomial(2000, 0.1): sd ~ 13.4; 5 sd either side
    assert 200 - 67 <= counts["canary"] <= 200 + 67, counts


def test_keepalive_reuse_visible_in_metrics(procs, echo):
    api, canary = echo("api"), echo("canary")
    p = start_proxy(procs, two_cluster_config(api, canary), concurrency=1)
    conn = http.client.HTTPConnection("127.0.0.1", p.port(), timeout=10)
    for _ in range(200):
        assert request(p.port(), "/api/k", conn=conn)[0] == 200
    conn.close()
    opened = p.metric("trellis_proxy_upstream_connections_total", cluster="api")
    reused = p.metric("trellis_proxy_upstream_pool_reuse_total", cluster="api")
    assert opened is not None and opened <= 2, opened
    assert reused is not None and reused >= 198, reused
    assert p.metric("trellis_proxy_downstream_connections_total", listener="web") >= 1
    assert p.metric("trellis_proxy_requests_total", listener="web", cluster="api",
                    code_class="2xx") == 200


def test_large_and_chunked_bodies_both_ways(procs, echo):
    api, canary = echo("api"), echo("canary")
    cfg = two_cluster_config(api, canary, extra_routes="""      - match: {prefix: /}
        cluster: api
""")
    p = start_proxy(procs, cfg)
    big = os.urandom(10 * 1024 * 1024)
    status, headers, body = request(p.port(), "/echo", method="POST", body=big,
                                    headers={"content-type": "application/octet-stream"})
    assert status == 200 and body == big
    # chunked upload, streamed in 64 KiB pieces
    c = http.client.HTTPConnection("127.0.0.1", p.port(), timeout=30)
    pieces = (big[i:i + 65536] for i in range(0, len(big), 65536))
    c.request("POST", "/echo", body=pieces, encode_chunked=True,
              headers={"Transfer-Encoding": "chunked"})
    r = c.getresponse()
    assert r.status == 200 and r.read() == big
    # chunked download
    c.request("GET", "/chunked/10485760")
    r = c.getresponse()
    assert r.status == 200 and r.getheader("transfer-encoding") == "chunked"
    assert len(r.read()) == 10485760
    c.close()


def test_expect_100_continue(procs, echo):
    api, canary = echo("api"), echo("canary")
    p = start_proxy(procs, two_cluster_config(api, canary))
    s = socket.create_connection(("127.0.0.1", p.port()), timeout=10)
    s.sendall(b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
              b"Expect: 100-continue\r\n\r\n")
    interim = s.recv(4096)
    assert interim.startswith(b"HTTP/1.1 100"), interim
    s.sendall(b"hello")
    data = b""
    while b"}" not in data:
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk
    assert data.startswith(b"HTTP/1.1 200")
    body = json.loads(data.split(b"\r\n\r\n", 1)[1])
    assert body["body_bytes"] == 5 and "expect" not in body["headers"]
    s.close()


@pytest.mark.parametrize("raw,status", [
    (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    (b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"BLAH\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", 431),
])
def test_hostile_requests_get_an_answer_and_a_close(procs, echo, raw, status):
    api, canary = echo("api"), echo("canary")
    p = start_proxy(procs, two_cluster_config(api, canary, extra_routes="""      - match: {prefix: /}
        cluster: api
"""))
    out = raw_exchange(p.port(), raw)
    assert out.startswith(f"HTTP/1.1 {status}".encode()), out[:200]
    assert out.count(b"HTTP/1.1 ") == 1, "no second (smuggled) response"
    errors = p.metric("trellis_proxy_parse_errors_total")
    assert errors is not None and errors >= 1
    # and the proxy is still there
    assert request(p.port(), "/api/ok")[0] == 200


def test_upstream_failures(procs, echo):
    # An origin that answers garbage, and an address nobody listens on.
    garbage = socket.socket()
    garbage.bind(("127.0.0.1", 0))
    garbage.listen(16)
    gport = garbage.getsockname()[1]

    def serve():
        while True:
            try:
                c, _ = garbage.accept()
            except OSError:
                return
            c.recv(65536)
            c.sendall(b"SPDY/9 what\r\n\r\n")
            c.close()
    threading.Thread(target=serve, daemon=True).start()
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dport = dead.getsockname()[1]
    dead.close()
    cfg = f"""
admin: {{address: 127.0.0.1:0}}
listeners:
  - name: web
    address: 127.0.0.1:0
    routes:
      - match: {{prefix: /garbage}}
        cluster: garbage
      - match: {{prefix: /dead}}
        cluster: dead
clusters:
  - name: garbage
    endpoints: [127.0.0.1:{gport}]
  - name: dead
    connect_timeout: 1s
    endpoints: [127.0.0.1:{dport}]
"""
    p = start_proxy(procs, cfg)
    assert request(p.port(), "/garbage")[0] == 502
    assert request(p.port(), "/dead")[0] == 503
    garbage.close()


def test_websocket_tunnel(procs):
    websockets = pytest.importorskip("websockets")
    loop = asyncio.new_event_loop()

    async def handler(ws, path=None):
        async for msg in ws:
            await ws.send("echo:" + msg)

    async def serve():
        # built inside the loop that will run it (websockets binds to the current loop)
        return await websockets.serve(handler, "127.0.0.1", 0)

    server = loop.run_until_complete(serve())
    wsport = server.sockets[0].getsockname()[1]
    threading.Thread(target=loop.run_forever, daemon=True).start()
    cfg = f"""
admin: {{address: 127.0.0.1:0}}
listeners:
  - name: web
    address: 127.0.0.1:0
    routes:
      - match: {{prefix: /}}
        cluster: ws
clusters:
  - name: ws
    endpoints: [127.0.0.1:{wsport}]
"""
    p = start_proxy(procs, cfg)

    async def client():
        async with websockets.connect(f"ws://127.0.0.1:{p.port()}/chat") as ws:
            out = []
            for i in range(20):
                await ws.send(f"m{i}" * (i * 100 + 1))
                out.append(await ws.recv())
            return out

    got = asyncio.new_event_loop().run_until_complete(client())
    assert got == [f"echo:" + f"m{i}" * (i * 100 + 1) for i in range(20)]
    loop.call_soon_threadsafe(server.close)


def test_tcp_proxy_with_half_close(procs, echo):
    # An origin that reads until the client half-closes, then answers and closes.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    sport = srv.getsockname()[1]

    def serve():
        c, _ = srv.accept()
        data = b""
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            data += chunk
        c.sendall(b"got %d bytes" % len(data))
        c.close()
    threading.Thread(target=serve, daemon=True).start()
    cfg = f"""
admin: {{address: 127.0.0.1:0}}
listeners:
  - name: raw
    address: 127.0.0.1:0
    protocol: tcp
    cluster: origin
clusters:
  - name: origin
    endpoints: [127.0.0.1:{sport}]
"""
    p = start_proxy(procs, cfg)
    s = socket.create_connection(("127.0.0.1", p.port("raw")), timeout=10)
    payload = os.urandom(3 * 1024 * 1024)
    s.sendall(payload)
    s.shutdown(socket.SHUT_WR)
    reply = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        reply += chunk
    s.close()
    assert reply == b"got %d bytes" % len(payload)
    srv.close()


def test_reload_under_load_drops_nothing(procs, echo):
    a, b = echo("blue"), echo("green")

    def cfg(target):
        return f"""
admin: {{address: 127.0.0.1:0}}
listeners:
  - name: web
    address: 127.0.0.1:0
    routes:
      - match: {{prefix: /}}
        cluster: {target}
clusters:
  - name: blue
    endpoints: [{a.address}]
  - name: green
    endpoints: [{b.address}]
"""
    p = start_proxy(procs, cfg("blue"))
    stop = threading.Event()
    results = {"ok": 0, "failed": [], "seen": set()}

    def load():
        conn = None
        while not stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", p.port(), timeout=10)
                status, _, body = request(p.port(), "/", conn=conn)
                if status == 200:
                    results["ok"] += 1
                    results["seen"].add(json.loads(body)["service"])
                else:
                    results["failed"].append(status)
            except Exception as e:
                results["failed"].append(repr(e))
                conn = None
    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: results["ok"] > 200, what="load running")
    with open(p.cfg_path, "w") as f:
        f.write(cfg("green"))
    p.proc.signal(signal.SIGHUP)
    wait_until(lambda: "green" in results["seen"], what="new route in effect")
    # a broken file is rejected and the running configuration stays
    with open(p.cfg_path, "w") as f:
        f.write("listeners: [oops\n")
    assert p.admin("/reload", "POST")[0] == 400
    before = results["ok"]
    wait_until(lambda: results["ok"] > before + 200, what="load continues")
    stop.set()
    for t in threads:
        t.join()
    assert results["failed"] == []
    assert request(p.port(), "/")[0] == 200


def test_metrics_pass_promtool(procs, echo):
    api, canary = echo("api"), echo("canary")
    p = start_proxy(procs, two_cluster_config(api, canary))
    for path in ["/api/a", "/nope", "/exact"]:
        request(p.port(), path)
    raw_exchange(p.port(), b"BAD\r\n\r\n")
    text = p.metrics()
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert p.metric("trellis_proxy_request_duration_seconds_count") >= 3
    status, body = p.admin("/config")
    assert status == 200 and json.loads(body)["listeners"][0]["name"] == "web"
    status, body = p.admin("/clusters")
    assert status == 200 and b"canary" in body


def test_config_error_exits_2_naming_file_line_and_key(tmp_path):
    path = tmp_path / "proxy.yaml"
    path.write_text("""listeners:
  - name: web
    address: 127.0.0.1:0
    routes:
      - match: {prefix: /}
        cluster: api
clusters:
  - name: api
    lb: round-robbin
    endpoints: [127.0.0.1:1]
""")
    r = subprocess.run([TRELLIS, "proxy", "--config", str(path)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2
    assert f'{path}:9: clusters[0].lb: unknown policy "round-robbin"' in r.stderr, r.stderr


def test_slow_header_client_gets_408(procs, echo):
    p = start_proxy(procs,
                    one_route_config([echo("api")], listener="    header_read_timeout: 300ms\n"))
    s = socket.create_connection(("127.0.0.1", p.port()), timeout=10)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")   # and never finishes the head
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    assert data.startswith(b"HTTP/1.1 408"), data
    assert p.metric("trellis_proxy_local_replies_total", flag="DT") == 1


def test_connection_limit_counts_connections_closed_after_a_reload(procs, echo):
    """max_connections counts open connections however many configurations they lived
    through: one accepted before a reload and closed after it leaves the count."""
    p = start_proxy(procs, one_route_config([echo("api")], listener="    max_connections: 2\n"),
                    concurrency=1)
    for _ in range(3):
        c = http.client.HTTPConnection("127.0.0.1", p.port(), timeout=10)
        assert request(p.port(), "/", conn=c)[0] == 200  # open, kept alive
        assert p.admin("/reload", method="POST")[0] == 200
        c.close()  # closed under the new configuration, without another request
        wait_no_open_connection(p)
    # Nothing is open: two at once are within the limit, and a third is over it.
    conns = [http.client.HTTPConnection("127.0.0.1", p.port(), timeout=10) for _ in range(2)]
    for c in conns:
        assert request(p.port(), "/", conn=c)[0] == 200
    assert_refused(p.port())
    for c in conns:
        c.close()
    assert p.metric("trellis_proxy_downstream_connections_rejected_total", listener="web") == 1


def test_connection_moves_to_a_listener_added_back(procs, echo):
    """A connection kept open while its listener is removed and added back is counted by the
    listener's new runtime once it sends another request: max_connections holds."""
    origin = echo("api")

    def cfg(with_web):
        web = """  - name: web
    address: 127.0.0.1:0
    max_connections: 1
    routes:
      - match: {prefix: /}
        cluster: api
""" if with_web else ""
        return f"""
admin: {{address: 127.0.0.1:0}}
listeners:
{web}  - name: other
    address: 127.0.0.1:0
    routes:
      - match: {{prefix: /}}
        cluster: api
clusters:
  - name: api
    endpoints: [{origin.address}]
"""
    p = start_proxy(procs, cfg(True), concurrency=1)
    a = http.client.HTTPConnection("127.0.0.1", p.port(), timeout=10)
    assert request(p.port(), "/", conn=a)[0] == 200
    for with_web in (False, True):
        with open(p.cfg_path, "w") as f:
            f.write(cfg(with_web))
        assert p.admin("/reload", method="POST")[0] == 200
    rx = re.compile(r"listener web listening on 127\.0\.0\.1:(\d+)")
    wait_until(lambda: len([m for m in map(rx.search, p.proc.lines) if m]) == 2,
               what="web bound again")
    port = int([m for m in map(rx.search, p.proc.lines) if m][-1].group(1))
    assert request(p.port(), "/", conn=a)[0] == 200  # still served, now counted by the new web
    assert_refused(port)  # one open already: over max_connections
    a.close()
    wait_no_open_connection(p)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    assert request(port, "/", conn=c)[0] == 200  # and released when it closed
    c.close()
