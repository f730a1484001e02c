"""Routing and policy for the whole mesh through `trellis apply`: an HTTPRoute canary split and a
TrafficPolicy change reach running sidecars and show in how requests are served, with nothing
restarted (docs/resources.md, docs/mesh-proxy.md).

Real binaries throughout: a server, examples/echo instances each behind its own sidecar, a
client sidecar reaching them through `--upstream`, and the `trellis` CLI."""
import json
import subprocess

from conftest import TRELLIS, wait_until, free_port
from test_mesh_proxy import (get, metric_value, mesh_server, passing_ids, sidecar,  # noqa: F401
                             start_instance)


def apply(server, tmp_path, name, text):
    f = tmp_path / name
    f.write_text(text)
    r = subprocess.run([TRELLIS, "apply", "-f", str(f), "--server", server.addr],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, (r.stdout, r.stderr)
    return r.stdout


def delete(server, kind, name):
    r = subprocess.run([TRELLIS, "delete", kind, name, "--server", server.addr],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, (r.stdout, r.stderr)


def policy_version(server, service, attempts):
    """The server's mesh version once `service`'s routes retry `attempts` times, else None."""
    status, body, _ = server.request("GET", "/v1/mesh/snapshot")
    assert status == 200, body
    snap = json.loads(body)
    routes = snap["services"].get(service, {}).get("routes", [])
    if routes and all(r.get("retries", {}).get("attempts") == attempts for r in routes):
        return snap["version"]
    return None


def served_by(port, n):
    """n requests through the client sidecar: {answering instance or status: count}."""
    counts = {}
    for _ in range(n):
        status, body = get(port, "/x")
        key = json.loads(body)["service"] if status == 200 else status
        counts[key] = counts.get(key, 0) + 1
    return counts


def test_canary_httproute_splits_90_10_and_delete_restores(procs, echo, mesh_server, tmp_path):
    addrs = [mesh_server.addr]
    [start_instance(procs, echo, addrs, "orders", f"orders-{i}") for i in range(3)]
    start_instance(procs, echo, addrs, "orders-canary", "orders-canary-0")
    up = free_port()
    client = sidecar(procs, addrs, "web", "127.0.0.1:9", "--upstream", f"orders:{up}",
                     "--health-tcp")
    wait_until(lambda: passing_ids(mesh_server, "orders-canary") == {"orders-canary-0"},
               what="the canary passing")
    wait_until(lambda: len(served_by(up, 12)) == 3, what="the 3 orders instances in rotation")
    assert "orders-canary-0" not in served_by(up, 60)  # no route names it yet

    apply(mesh_server, tmp_path, "canary.yaml", """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: orders-canary}
spec:
  parentRefs: [{group: "", kind: Service, name: orders}]
  rules:
    - backendRefs:
        - {name: orders, port: 80, weight: 90}
        - {name: orders-canary, port: 80, weight: 10}
""")
    wait_until(lambda: "orders-canary-0" in served_by(up, 50), what="the canary receiving traffic")
    n = 2000
    counts = served_by(up, n)
    canary = counts.get("orders-canary-0", 0)
    stable = sum(v for k, v in counts.items() if isinstance(k, str) and k.startswith("orders-")
                 and k != "orders-canary-0")
    assert canary + stable == n, counts  # every request answered by one of the two services
    # 10 % of 2000: the standard deviation of a weighted random pick is 13 requests; the bounds
    # are about 4.5 of them either way.
    assert 140 <= canary <= 260, counts
    # The stable share still spreads over all three instances.
    assert all(counts.get(f"orders-{i}", 0) > 0.2 * stable for i in range(3)), counts

    delete(mesh_server, "httproute", "orders-canary")
    wait_until(lambda: "orders-canary-0" not in served_by(up, 100),
               what="the canary out of the split once the route is deleted")
    assert client.p.poll() is None


def test_traffic_policy_retries_change_behaviour_live(procs, echo, mesh_server, tmp_path):
    addrs = [mesh_server.addr]
    # Outlier detection off (never eject), so the failing instance stays in rotation and only
    # the retry policy decides what the client sees.
    no_ejection = """\
apiVersion: trellis.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: orders}
spec:
  targetRef: {kind: Service, name: orders}
  loadBalancer: {policy: RoundRobin}
  outlierDetection: {consecutive5xx: 5, maxEjectionPercent: 0}
"""
    apply(mesh_server, tmp_path, "policy-1.yaml", no_ejection)
    good = echo("orders-good")
    bad = echo("orders-bad", "--error-rate", "1", "--error-status", "503")
    sides = [sidecar(procs, addrs, "orders", e.address, "--instance-id", e.name)
             for e in (good, bad)]
    up = free_port()
    client = sidecar(procs, addrs, "web", "127.0.0.1:9", "--upstream", f"orders:{up}",
                     "--health-tcp")
    wait_until(lambda: passing_ids(mesh_server, "orders") == {"orders-good", "orders-bad"},
               what="both instances passing (the health check is TCP)")
    # The mesh default retries connect failures only: every other request is the bad 503.
    wait_until(lambda: served_by(up, 20).get(503, 0) >= 8, what="half the requests failing")
    before = served_by(up, 200)
    assert 80 <= before.get(503, 0) <= 120, before

    apply(mesh_server, tmp_path, "policy-2.yaml", no_ejection + """\
  retries: {attempts: 2, on: [5xx]}
""")
    # The first server version whose state carries the new retries, then the client acking it.
    version = wait_until(lambda: policy_version(mesh_server, "orders", 2),
                         what="the server compiling the new policy")
    wait_until(lambda: metric_value(client.admin, "trellis_proxy_mesh_version") >= version,
               what="the client applying the new policy")
    after = served_by(up, 200)
    assert after == {"orders-good": 200}, after  # a failed try is retried on the other one
    retries = metric_value(client.admin, "trellis_proxy_retries_total", 'cluster="orders"')
    assert retries >= 80, retries
    # Nothing was restarted: the same processes serve.
    assert client.p.poll() is None and all(s.p.poll() is None for s in sides)


def request(port, path, headers=None):
    """GET through the client sidecar: (status, headers, echo's JSON or None)."""
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        body = r.read()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        return r.status, hdrs, json.loads(body) if r.status == 200 else None
    finally:
        c.close()


def test_httproute_matches_header_edits_and_redirect(procs, echo, mesh_server, tmp_path):
    addrs = [mesh_server.addr]
    start_instance(procs, echo, addrs, "orders", "orders-0")
    start_instance(procs, echo, addrs, "orders-beta", "orders-beta-0")
    up = free_port()
    sidecar(procs, addrs, "web", "127.0.0.1:9", "--upstream", f"orders:{up}", "--health-tcp")
    wait_until(lambda: passing_ids(mesh_server, "orders-beta") == {"orders-beta-0"},
               what="orders-beta passing")
    apply(mesh_server, tmp_path, "routes.yaml", """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: orders}
spec:
  parentRefs: [{group: "", kind: Service, name: orders}]
  rules:
    - matches:
        - headers: [{type: RegularExpression, name: x-user, value: "beta-[0-9]+"}]
        - queryParams: [{name: track, value: beta channel}]
      backendRefs: [{name: orders-beta, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /old}}]
      filters:
        - type: RequestRedirect
          requestRedirect:
            path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}
            statusCode: 301
    - filters:
        - type: RequestHeaderModifier
          requestHeaderModifier:
            set: [{name: x-env, value: mesh}]
            add: [{name: x-tag, value: added}]
            remove: [x-secret]
      backendRefs: [{name: orders, port: 80}]
""")
    wait_until(lambda: request(up, "/old/a")[0] == 301, what="the routes applied")
    wait_until(lambda: request(up, "/x")[0] == 200, what="orders-0 reachable")
    # Regex header match and percent-decoded query parameter match pick the beta service.
    assert request(up, "/x", {"x-user": "beta-42"})[2]["service"] == "orders-beta-0"
    assert request(up, "/x", {"x-user": "beta-42x"})[2]["service"] == "orders-0"
    assert request(up, "/x?track=beta%20channel")[2]["service"] == "orders-beta-0"
    assert request(up, "/x?track=beta")[2]["service"] == "orders-0"
    # Prefix redirect keeps the rest of the path and the query; /olden is not under /old.
    status, hdrs, _ = request(up, "/old/a/b?q=1", {"host": "shop.example:8080"})
    assert status == 301 and hdrs["location"] == "http://shop.example:8080/new/a/b?q=1", hdrs
    assert request(up, "/old", {"host": "shop.example"})[1]["location"] == \
        "http://shop.example/new"
    assert request(up, "/olden")[0] == 200
    # Header edits on the forwarded request: set replaces, add appends, remove drops.
    _, _, body = request(up, "/x", {"x-env": "client", "x-tag": "mine", "x-secret": "s"})
    seen = {k.lower(): v for k, v in body["headers"].items()}
    assert seen.get("x-env") == "mesh", seen
    assert "x-secret" not in seen, seen
    assert seen.get("x-tag") == "mine, added", seen
