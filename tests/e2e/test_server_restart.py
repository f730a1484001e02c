"""`trellis server` durability: kill -9 right after the acknowledgements, restart on the same
data dir, everything acknowledged is there. And /metrics passes promtool."""
import json
import shutil
import subprocess

import pytest

from serverutil import start_server


def test_kill9_keeps_acknowledged_writes(procs, tmp_path):
    data = str(tmp_path / "data")
    s = start_server(procs, data)
    for i in range(50):
        st, _, _ = s.request("PUT", "/v1/agent/service/register",
                             {"Name": f"svc{i % 5}", "ID": f"svc-{i}", "Port": 1000 + i,
                              "Check": {"TTL": "60s", "Status": "passing"}})
        assert st == 200
        st, body, _ = s.request("PUT", f"/v1/kv/cfg/{i}", f"value-{i}")
        assert st == 200 and body == b"true"
    st, body, _ = s.request("PUT", "/v1/catalog/register",
                            {"Node": "ext", "Address": "10.9.9.9",
                             "Service": {"Service": "db", "Port": 5432}})
    assert st == 200
    s.proc.kill()  # SIGKILL right after the last 200

    s2 = start_server(procs, data)
    services = s2.get_json("/v1/agent/services")
    assert sorted(services) == sorted(f"svc-{i}" for i in range(50))
    assert services["svc-7"]["Port"] == 1007
    checks = s2.get_json("/v1/agent/checks")
    assert checks["service:svc-7"]["Status"] == "passing"
    keys = s2.get_json("/v1/kv/cfg/?keys")
    assert len(keys) == 50
    st, body, _ = s2.request("GET", "/v1/kv/cfg/42?raw")
    assert st == 200 and body == b"value-42"
    assert [e["ServiceID"] for e in s2.get_json("/v1/catalog/service/db")] == ["db"]
    # Indexes never go backwards across a restart.
    _, _, h = s2.request("GET", "/v1/kv/cfg/?recurse")
    assert int(h["X-Consul-Index"]) >= 100


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_metrics_pass_promtool(procs, tmp_path):
    s = start_server(procs, str(tmp_path / "data"))
    s.request("PUT", "/v1/agent/service/register", {"Name": "a", "Check": {"TTL": "10s"}})
    s.request("PUT", "/v1/kv/x", "1")
    s.request("GET", "/v1/health/service/a")
    subprocess.run(["dig", "@127.0.0.1", "-p", str(s.dns_port), "a.service.trellis", "+short"],
                   capture_output=True, timeout=10)
    for path in ("/metrics", "/v1/agent/metrics?format=prometheus"):
        st, body, hdrs = s.request("GET", path)
        assert st == 200
        r = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True,
                           timeout=20)
        assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    text = body.decode()
    assert 'trellis_catalog_service_instances 1' in text
    assert 'trellis_health_checks{status="critical"} 1' in text
    assert 'trellis_api_requests_total{endpoint="kv.put",code="200"} 1' in text
    assert 'trellis_dns_queries_total{type="A"} 1' in text
    assert 'trellis_registry_write_duration_seconds_count' in text
