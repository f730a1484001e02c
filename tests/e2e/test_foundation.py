"""The binary's shape: verbs, exit codes, version; examples/echo as a real process."""
import json
import http.client
import re
import subprocess
import time

from conftest import TRELLIS, ROOT, wait_until


def run(*args):
    return subprocess.run([TRELLIS, *args], capture_output=True, text=True, timeout=30)


def get(port, path, method="GET", body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, dict(r.getheaders()), data


def test_version_prints_version_and_commit():
    r = run("version")
    assert r.returncode == 0
    m = re.fullmatch(r"trellis (\d+\.\d+\.\d+) \(commit ([0-9a-f]{7,40}|unknown)\)\n", r.stdout)
    assert m, r.stdout
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short=12", "HEAD"],
                          capture_output=True, text=True)
    if head.returncode == 0:
        assert m.group(2) == head.stdout.strip()


def test_help_lists_every_verb():
    r = run("--help")
    assert r.returncode == 0
    for verb in ["server", "proxy", "up", "apply", "get", "version"]:
        assert re.search(rf"^\s+{verb}\s", r.stdout, re.M), f"{verb} missing from:\n{r.stdout}"
    r = run("version", "--help")
    assert r.returncode == 0 and "version" in r.stdout


def test_usage_errors_exit_2():
    assert run().returncode == 2                      # no verb
    assert run("frobnicate").returncode == 2          # unknown verb
    r = run("--log-level", "loud", "version")
    assert r.returncode == 2
    assert 'invalid log level "loud"' in r.stderr


def test_echo_answers_with_its_identity(echo):
    e = echo("billing")
    status, headers, body = get(e.port, "/anything?x=1", headers={"X-Probe": "yes"})
    assert status == 200
    doc = json.loads(body)
    assert doc["service"] == "billing"
    assert doc["instance"] == e.instance
    assert doc["path"] == "/anything" and doc["query"] == "x=1"
    assert doc["headers"]["x-probe"] == "yes"
    assert headers["x-echo-instance"] == e.instance


def test_echo_health_and_failure_controls(echo):
    e = echo("api")
    assert get(e.port, "/healthz")[0] == 200
    assert get(e.port, "/admin/fail", "POST")[0] == 200
    assert get(e.port, "/healthz")[0] == 503
    assert get(e.port, "/admin/recover", "POST")[0] == 200
    assert get(e.port, "/healthz")[0] == 200
    # every answer an error
    assert get(e.port, "/admin/error-rate?r=1&status=502", "POST")[0] == 200
    assert get(e.port, "/x")[0] == 502
    assert get(e.port, "/admin/error-rate?r=0", "POST")[0] == 200
    assert get(e.port, "/x")[0] == 200
    assert get(e.port, "/status/418")[0] == 418


def test_echo_delay_and_bodies(echo):
    e = echo("slow", "--delay", "150ms")
    t0 = time.monotonic()
    assert get(e.port, "/")[0] == 200
    assert time.monotonic() - t0 >= 0.15
    status, _, body = get(e.port, "/echo", "POST", body=b"z" * 100000)
    assert status == 200 and body == b"z" * 100000
    status, headers, body = get(e.port, "/chunked/70000")
    assert status == 200 and len(body) == 70000
    assert headers.get("transfer-encoding") == "chunked"


def test_echo_rejects_bad_flags():
    from conftest import ECHO
    r = subprocess.run([ECHO, "--delay", "fast"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2
    assert 'invalid duration "fast"' in r.stderr
