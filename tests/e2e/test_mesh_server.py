"""The server side of the mesh protocol (docs/protocol.md): a real `trellis server`, instances
registered with python3-consul, the stream read with http.client over a real socket."""
import http.client
import json
import queue
import threading
import time

import consul
import pytest

from conftest import wait_until
from serverutil import start_server


@pytest.fixture
def server(procs, tmp_path):
    return start_server(procs, str(tmp_path / "data"), "--mesh-heartbeat", "300ms")


def client(server):
    return consul.Consul(host="127.0.0.1", port=server.http_port)


class Stream:
    """One mesh stream; a thread puts each NDJSON line on a queue."""

    def __init__(self, server, node, **params):
        q = "&".join(f"{k}={v}" for k, v in {"node": node, **params}.items())
        self.conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
        self.conn.request("GET", f"/v1/mesh/stream?{q}")
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.headers = dict(self.resp.getheaders())
        self.q = queue.Queue()
        if self.status == 200:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            while True:
                line = self.resp.readline()
                if not line:
                    self.q.put(None)
                    return
                self.q.put(json.loads(line))
        except Exception as e:  # socket closed by the test
            self.q.put(e)

    def next(self, timeout=5.0, skip_heartbeats=True):
        deadline = time.monotonic() + timeout
        while True:
            m = self.q.get(timeout=max(0.01, deadline - time.monotonic()))
            assert isinstance(m, dict), f"stream ended: {m!r}"
            if skip_heartbeats and m["type"] == "heartbeat":
                continue
            return m

    def close(self):
        self.conn.close()


def ack(server, node, stream, version, accepted=True, error=None):
    body = {"node": node, "stream": stream, "version": version, "accepted": accepted}
    if error:
        body["error"] = error
    return server.request("POST", "/v1/mesh/ack", body)


def addresses(entry):
    # An endpoint of weight 1 is its address string; others {"address", "weight"} (protocol.md).
    return sorted(e if isinstance(e, str) else e["address"] for e in entry["endpoints"])


def test_stream_snapshot_deltas_heartbeat_ack(server):
    c = client(server)
    assert c.agent.service.register("orders", service_id="orders-1", address="127.0.0.1",
                                    port=9001, check=consul.Check.ttl("60s"))
    c.agent.check.ttl_pass("service:orders-1")
    # A change is pushed after --mesh-coalesce (2ms): wait until the state has it.
    wait_until(lambda: addresses(server.get_json("/v1/mesh/snapshot")["services"]["orders"]),
               what="orders in the mesh state")

    s = Stream(server, "sidecar-1", service="orders")
    assert s.status == 200
    assert s.headers["Content-Type"] == "application/x-ndjson"
    assert s.headers["Transfer-Encoding"] == "chunked"
    snap = s.next()
    assert snap["type"] == "snapshot"
    stream_id = snap["stream"]
    orders = snap["services"]["orders"]
    assert addresses(orders) == ["127.0.0.1:9001"]
    assert orders["protocol"] == "http"
    assert orders["cluster"]["lb"] == "least_request"
    assert orders["routes"][0]["retries"]["on"] == ["connect-failure", "reset"]
    assert orders["cluster"]["trust_proxy_errors"] is True
    assert snap["gateways"] == {}
    index = int(server.request("GET", "/v1/health/service/orders")[2]["X-Consul-Index"])
    assert snap["version"] == index

    # A registration: a new service arrives complete, as one small delta.
    assert c.agent.service.register("users", service_id="users-1", address="127.0.0.1",
                                    port=7001)
    d = s.next()
    assert d["type"] == "delta" and d["version"] > snap["version"]
    assert set(d["services"]) == {"users"}
    assert addresses(d["services"]["users"]) == ["127.0.0.1:7001"]
    assert d["removed"] == []

    # A health change (TTL check failed): only that service's endpoints.
    c.agent.check.ttl_fail("service:orders-1")
    d2 = s.next()
    assert d2["version"] > d["version"]
    assert d2["services"] == {"orders": {"endpoints": []}}

    # A heartbeat when nothing else is sent (--mesh-heartbeat 300ms).
    hb = s.next(timeout=3, skip_heartbeats=False)
    assert hb == {"type": "heartbeat", "version": d2["version"]}

    # Acks: accepted, rejected (counted), unknown stream.
    st, body, _ = ack(server, "sidecar-1", stream_id, d2["version"])
    assert st == 200, body
    st, _, _ = ack(server, "sidecar-1", stream_id, d2["version"], False, "routes[0]: bad")
    assert st == 200
    st, body, _ = ack(server, "sidecar-1", "ffffffffffffffff", d2["version"])
    assert st == 404 and b"no stream" in body
    st, body, _ = server.request("POST", "/v1/mesh/ack", "{nope")
    assert st == 400 and b"not valid JSON" in body
    proxies = server.get_json("/v1/mesh/proxies")
    assert [p["node"] for p in proxies] == ["sidecar-1"]
    assert proxies[0]["service"] == "orders"
    assert proxies[0]["acked_version"] == d2["version"]
    assert proxies[0]["accepted"] is False and proxies[0]["last_error"] == "routes[0]: bad"

    # The snapshot endpoint is the state the deltas built.
    full = server.get_json("/v1/mesh/snapshot")
    assert full["version"] == d2["version"]
    assert addresses(full["services"]["orders"]) == []
    assert addresses(full["services"]["users"]) == ["127.0.0.1:7001"]

    _, metrics, _ = server.request("GET", "/metrics")
    text = metrics.decode()
    assert "trellis_mesh_streams 1" in text
    assert 'trellis_mesh_messages_sent_total{type="snapshot"} 1' in text
    assert 'trellis_mesh_messages_sent_total{type="delta"} 2' in text
    assert "trellis_mesh_rejected_total 1" in text
    assert 'trellis_mesh_acks_total{result="accepted"} 1' in text

    # Deregistration removes the service.
    assert c.agent.service.deregister("users-1")
    d3 = s.next()
    assert d3["removed"] == ["users"]

    # The same node connecting again replaces the stream: the old one ends.
    s2 = Stream(server, "sidecar-1", service="orders")
    assert s2.next()["type"] == "snapshot"
    assert s.q.get(timeout=5) is None
    s2.close()
    wait_until(lambda: server.get_json("/v1/mesh/proxies") == [], what="stream gone")
    s.close()


def test_stream_parameters_are_checked(server):
    for query, says in [("", b"node: required"),
                        ("?node=a%20b", b"is not 1..128 characters"),
                        ("?node=n&kind=mesh", b"kind: \"mesh\" is not sidecar or gateway"),
                        ("?node=n&kind=gateway", b"gateway: required")]:
        st, body, _ = server.request("GET", "/v1/mesh/stream" + query)
        assert st == 400 and says in body, (query, st, body)
    # POST opens a stream whose acks come in its chunked body; a complete body is refused.
    st, body, _ = server.request("POST", "/v1/mesh/stream?node=n", "")
    assert st == 400 and b"chunked request body" in body, (st, body)
    st, _, _ = server.request("PUT", "/v1/mesh/stream?node=n", "")
    assert st == 405


POLICY = """apiVersion: trellis.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: orders}
spec:
  targetRef: {kind: Service, name: orders}
  loadBalancer: {policy: RoundRobin}
  retries: {attempts: 3, on: [connect-failure, gateway-error]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: edge-orders}
spec:
  parentRefs: [{name: edge}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /orders}}]
      backendRefs: [{name: orders, port: 80}]
"""


def test_resources_put_get_delete_are_pushed(server):
    c = client(server)
    assert c.agent.service.register("orders", service_id="orders-1", address="127.0.0.1",
                                    port=9001)
    wait_until(lambda: "orders" in server.get_json("/v1/mesh/snapshot")["services"],
               what="orders in the mesh state")
    gw = Stream(server, "edge-1", kind="gateway", gateway="edge")
    assert gw.next()["gateways"] == {}

    st, body, _ = server.request("PUT", "/v1/mesh/resources", POLICY)
    assert st == 200, body
    applied = json.loads(body)["applied"]
    assert [(a["kind"], a["name"], a["result"]) for a in applied] == [
        ("TrafficPolicy", "orders", "created"), ("HTTPRoute", "edge-orders", "created")]
    d = gw.next()
    assert d["services"]["orders"]["cluster"]["lb"] == "round_robin"
    assert d["services"]["orders"]["routes"][0]["retries"]["attempts"] == 3
    routes = d["gateways"]["edge"]["routes"]
    assert [r["match"] for r in routes] == [{"path": "/orders"}, {"prefix": "/orders/"}]
    assert all(r["cluster"] == "orders" for r in routes)

    st, body, _ = server.request("PUT", "/v1/mesh/resources", POLICY)
    assert [a["result"] for a in json.loads(body)["applied"]] == ["unchanged", "unchanged"]

    got = server.get_json("/v1/mesh/resources/TrafficPolicy/orders")
    assert got["kind"] == "TrafficPolicy" and got["spec"]["retries"]["attempts"] == 3
    assert len(server.get_json("/v1/mesh/resources")) == 2
    assert [r["metadata"]["name"] for r in server.get_json("/v1/mesh/resources/HTTPRoute")] == [
        "edge-orders"]

    # Invalid: nothing stored, the error names the document and the field.
    bad = POLICY.replace("attempts: 3", "attempts: 30")
    st, body, _ = server.request("PUT", "/v1/mesh/resources", bad)
    assert st == 400
    assert b"document 1" in body and b"spec.retries.attempts" in body, body
    assert server.get_json("/v1/mesh/resources/TrafficPolicy/orders")["spec"]["retries"][
        "attempts"] == 3

    st, body, _ = server.request("DELETE", "/v1/mesh/resources/HTTPRoute/edge-orders")
    assert st == 200, body
    d = gw.next()
    assert d["removed_gateways"] == ["edge"]
    st, _, _ = server.request("DELETE", "/v1/mesh/resources/HTTPRoute/edge-orders")
    assert st == 404
    st, body, _ = server.request("GET", "/v1/mesh/resources/Gateway")
    assert st == 400 and b"HTTPRoute, TrafficPolicy or Service" in body
    gw.close()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_memory_per_stream(server):
    """Each connected proxy costs under 64 KiB beyond the shared state."""
    c = client(server)
    for i in range(100):
        c.catalog.register(f"node{i}", f"127.0.1.{i + 1}",
                           service={"Service": f"svc{i % 20}", "ID": f"i{i}", "Port": 8000 + i})
    snap = server.get_json("/v1/mesh/snapshot")  # builds (and caches) the shared snapshot
    assert len(snap["services"]) == 20
    # Warm up the allocator with a few streams first, so what is measured is per stream.
    warm = [Stream(server, f"warm-{i}") for i in range(20)]
    for s in warm:
        s.next()
    before = rss_kib(server.proc.p.pid)
    n = 300
    streams = [Stream(server, f"proxy-{i}") for i in range(n)]
    for s in streams:
        assert s.next()["type"] == "snapshot"
    wait_until(lambda: len(server.get_json("/v1/mesh/proxies")) == n + 20, what="streams")
    after = rss_kib(server.proc.p.pid)
    per_stream = (after - before) / n
    print(f"server RSS {before} KiB -> {after} KiB for {n} streams: {per_stream:.1f} KiB each")
    assert per_stream < 64, per_stream
    for s in streams + warm:
        s.close()
