"""`trellis server` against python3-consul: agent, catalog, health, KV, blocking queries."""
import json
import subprocess
import threading
import time

import consul
import pytest

from conftest import TRELLIS, wait_until
from serverutil import start_server


@pytest.fixture
def server(procs, tmp_path):
    return start_server(procs, str(tmp_path / "data"))


def client(server):
    return consul.Consul(host="127.0.0.1", port=server.http_port)


def test_register_ttl_check_and_health(server):
    c = client(server)
    assert c.agent.service.register("api", service_id="api-1", address="127.0.0.1", port=9000,
                                    tags=["v1"], check=consul.Check.ttl("30s"))
    services = c.agent.services()
    assert services["api-1"]["Service"] == "api"
    assert services["api-1"]["Port"] == 9000
    checks = c.agent.checks()
    assert checks["service:api-1"]["Status"] == "critical"  # TTL checks start critical
    _, nodes = c.health.service("api", passing=True)
    assert nodes == []
    c.agent.check.ttl_pass("service:api-1", notes="all good")
    _, nodes = c.health.service("api", passing=True)
    assert [n["Service"]["ID"] for n in nodes] == ["api-1"]
    assert nodes[0]["Checks"][0]["Output"] == "all good"
    c.agent.check.ttl_fail("service:api-1")
    _, nodes = c.health.service("api", passing=True)
    assert nodes == []
    _, services = c.catalog.services()
    assert services["api"] == ["v1"]
    _, entries = c.catalog.service("api")
    assert entries[0]["ServicePort"] == 9000 and entries[0]["Node"] == "node1"
    assert c.agent.service.deregister("api-1")
    assert "api-1" not in c.agent.services()


def test_http_check_follows_echo(server, echo):
    e = echo("web")
    c = client(server)
    c.agent.service.register("web", service_id="web-1", address="127.0.0.1", port=e.port,
                             check=consul.Check.http(f"http://127.0.0.1:{e.port}/healthz", "1s",
                                                     timeout="1s"))

    def passing():
        _, nodes = c.health.service("web", passing=True)
        return len(nodes) == 1

    wait_until(passing, timeout=10, what="HTTP check passing")
    req = urllib_request("POST", f"http://127.0.0.1:{e.port}/admin/fail")
    assert req in (200, 204)
    wait_until(lambda: not passing(), timeout=10, what="HTTP check critical after /admin/fail")
    assert c.agent.checks()["service:web-1"]["Status"] == "critical"


def urllib_request(method, url):
    import urllib.request
    with urllib.request.urlopen(urllib.request.Request(url, method=method, data=b""),
                                timeout=5) as r:
        return r.status


def test_kv(server):
    c = client(server)
    assert c.kv.put("app/config/a", "1")
    assert c.kv.put("app/config/b", b"\x00\xffbin")
    assert c.kv.put("other", "x", flags=42)
    index, item = c.kv.get("app/config/a")
    assert item["Value"] == b"1"
    _, item = c.kv.get("app/config/b")
    assert item["Value"] == b"\x00\xffbin"
    _, item = c.kv.get("other")
    assert item["Flags"] == 42
    _, items = c.kv.get("app/", recurse=True)
    assert [i["Key"] for i in items] == ["app/config/a", "app/config/b"]
    _, keys = c.kv.get("app/", keys=True, separator="/")
    assert keys == ["app/config/"]
    # CAS: a stale index loses, the current one wins.
    _, item = c.kv.get("app/config/a")
    assert not c.kv.put("app/config/a", "2", cas=item["ModifyIndex"] - 1)
    assert c.kv.put("app/config/a", "2", cas=item["ModifyIndex"])
    assert not c.kv.put("app/config/a", "3", cas=0)  # cas=0: only if absent
    assert c.kv.get("app/config/a")[1]["Value"] == b"2"
    assert c.kv.delete("app/config/a")
    assert c.kv.get("app/config/a")[1] is None
    assert c.kv.delete("app/", recurse=True)
    assert c.kv.get("app/", recurse=True)[1] is None


def test_blocking_query_wakes_only_for_its_service(server):
    c = client(server)
    c.agent.service.register("a", service_id="a1", port=1)
    c.agent.service.register("b", service_id="b1", port=2)
    index, _ = c.health.service("a")
    result = {}

    def block():
        t0 = time.monotonic()
        idx, nodes = c.health.service("a", index=index, wait="5s")
        result["elapsed"] = time.monotonic() - t0
        result["nodes"] = nodes
        result["index"] = idx

    t = threading.Thread(target=block)
    t.start()
    time.sleep(0.3)  # let the query park (a change before it parks would answer at once too)
    c.agent.service.register("b", service_id="b2", port=3)  # another service: no wake-up
    t.join(1.0)
    assert t.is_alive(), "a change to b woke a query on a"
    c.agent.service.register("a", service_id="a2", port=4)
    t.join(3.0)
    assert not t.is_alive()
    assert result["elapsed"] < 3.0
    assert int(result["index"]) > int(index)
    assert sorted(n["Service"]["ID"] for n in result["nodes"]) == ["a1", "a2"]


def test_blocking_query_times_out_with_same_index(server):
    c = client(server)
    c.agent.service.register("a", service_id="a1", port=1)
    index, _ = c.health.service("a")
    t0 = time.monotonic()
    idx, _ = c.health.service("a", index=index, wait="1s")
    elapsed = time.monotonic() - t0
    assert 1.0 <= elapsed < 1.0 + 1.0 / 16 + 0.5
    assert idx == index


def test_errors(server):
    s = server
    st, body, _ = s.request("PUT", "/v1/agent/service/register", "{bad json")
    assert st == 400 and b"decode" in body
    st, body, _ = s.request("PUT", "/v1/agent/service/register", {"Port": 1})
    assert st == 400 and body.strip() == b"Name: missing"
    st, _, _ = s.request("PUT", "/v1/agent/service/deregister/nope")
    assert st == 404
    st, _, _ = s.request("PUT", "/v1/agent/check/pass/nope")
    assert st == 404
    st, _, _ = s.request("GET", "/v1/agent/service/register")
    assert st == 405
    st, _, _ = s.request("PUT", "/v1/kv/big", b"x" * (512 * 1024 + 1))
    assert st == 413
    st, _, _ = s.request("PUT", "/v1/catalog/register", b"x" * (1024 * 1024 + 10))
    assert st == 413
    st, _, _ = s.request("GET", "/v1/health/state/bogus")
    assert st == 400
    st, body, _ = s.request("GET", "/v1/catalog/service/x?filter=Nope%20%3D%3D%201")
    assert st == 400 and b"unknown selector" in body
    st, _, _ = s.request("GET", "/v1/catalog/services?index=abc")
    assert st == 400
    # The server is still fine.
    st, body, hdrs = s.request("GET", "/v1/catalog/services")
    assert st == 200 and int(hdrs["X-Consul-Index"]) >= 1
    assert hdrs["X-Consul-KnownLeader"] == "true"


def test_catalog_register_filter_and_nodes(server):
    s = server
    for i, version in enumerate(["1", "2", "2"]):
        st, body, _ = s.request("PUT", "/v1/catalog/register", {
            "Node": f"ext{i}", "Address": f"10.0.0.{i + 1}", "NodeMeta": {"rack": f"r{i % 2}"},
            "Service": {"ID": f"db{i}", "Service": "db", "Port": 5432,
                        "Tags": ["primary"] if i == 0 else ["replica"],
                        "Meta": {"version": version}}})
        assert st == 200 and body == b"true"
    q = "/v1/catalog/service/db?filter=" + \
        urllib_quote('ServiceMeta.version == "2"')
    assert [e["ServiceID"] for e in s.get_json(q)] == ["db1", "db2"]
    q = "/v1/catalog/service/db?filter=" + urllib_quote('ServiceTags contains "primary"')
    assert [e["ServiceID"] for e in s.get_json(q)] == ["db0"]
    assert [e["ServiceID"] for e in s.get_json("/v1/catalog/service/db?tag=replica")] == \
        ["db1", "db2"]
    assert [e["ServiceID"] for e in s.get_json("/v1/catalog/service/db?node-meta=rack:r0")] == \
        ["db0", "db2"]
    nodes = [n["Node"] for n in s.get_json("/v1/catalog/nodes")]
    assert nodes == ["ext0", "ext1", "ext2", "node1"]
    node = s.get_json("/v1/catalog/node/ext1")
    assert node["Services"]["db1"]["Port"] == 5432
    st, body, _ = s.request("PUT", "/v1/catalog/deregister", {"Node": "ext1"})
    assert st == 200
    assert s.get_json("/v1/catalog/node/ext1") is None
    assert s.get_json("/v1/status/leader") == f"127.0.0.1:{s.http_port}"
    assert s.get_json("/v1/status/peers") == [f"127.0.0.1:{s.http_port}"]
    assert s.get_json("/v1/agent/self")["Config"]["NodeName"] == "node1"


def urllib_quote(s):
    import urllib.parse
    return urllib.parse.quote(s)


def test_bad_flags_exit_2(tmp_path):
    r = subprocess.run([TRELLIS, "server", "--data-dir", str(tmp_path), "--http-addr", "nope"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "--http-addr" in r.stderr


def test_bind_failure_exits_1(procs, tmp_path):
    first = start_server(procs, str(tmp_path / "a"))
    r = subprocess.run([TRELLIS, "server", "--data-dir", str(tmp_path / "b"), "--http-addr",
                        f"127.0.0.1:{first.http_port}", "--dns-addr", "127.0.0.1:0"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 1, r.stderr


def test_sigterm_exits_0(procs, tmp_path):
    s = start_server(procs, str(tmp_path / "d"))
    assert s.proc.stop() == 0
