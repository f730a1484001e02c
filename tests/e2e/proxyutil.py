"""Helpers for tests that run `trellis proxy` with an inline configuration."""
import http.client
import os
import re
import socket
import tempfile
import urllib.request

from conftest import TRELLIS, wait_until


class Proxy:
    def __init__(self, proc, cfg_path, listeners, admin_port):
        self.proc = proc
        self.cfg_path = cfg_path
        self.listeners = listeners  # name -> port
        self.admin_port = admin_port

    def port(self, name="web"):
        return self.listeners[name]

    def admin(self, path, method="GET"):
        c = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=10)
        c.request(method, path)
        r = c.getresponse()
        body = r.read()
        c.close()
        return r.status, body

    def metrics(self):
        status, body = self.admin("/metrics")
        assert status == 200
        return body.decode()

    def metric(self, name, **labels):
        """Sums the samples of `name` whose labels include `labels`."""
        total = 0.0
        found = False
        for line in self.metrics().splitlines():
            if line.startswith("#"):
                continue
            m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? (\S+)$", line)
            if not m or m.group(1) != name:
                continue
            have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
            if all(have.get(k) == str(v) for k, v in labels.items()):
                total += float(m.group(4))
                found = True
        return total if found else None


def one_route_config(origins, route="", cluster="", listener=""):
    """One http listener `web` with one route to cluster `api` made of `origins` (objects with
    an `address`); `route`, `cluster` and `listener` are extra YAML lines (indented for their
    place) for the route, the cluster, the listener."""
    eps = ", ".join(o.address for o in origins)
    return f"""
admin: {{address: 127.0.0.1:0}}
listeners:
  - name: web
    address: 127.0.0.1:0
{listener}    routes:
      - match: {{prefix: /}}
        cluster: api
{route}clusters:
  - name: api
    endpoints: [{eps}]
{cluster}"""


def start_proxy(procs, yaml_text, concurrency=2, extra_args=()):
    """Writes the config, starts the proxy, and waits until every listener reports its port."""
    d = tempfile.mkdtemp(prefix="trellis-proxy-")
    path = os.path.join(d, "proxy.yaml")
    with open(path, "w") as f:
        f.write(yaml_text)
    p = procs([TRELLIS, "proxy", "--config", path, "--concurrency", str(concurrency),
               *extra_args])
    admin = int(p.wait_for_line(r"admin listening on 127\.0\.0\.1:(\d+)").group(1))
    names = re.findall(r"^\s*- name: (\S+)\n\s+address:", yaml_text, re.M)
    listeners = {}
    for n in names:
        m = p.wait_for_line(rf"listener {re.escape(n)} listening on 127\.0\.0\.1:(\d+)")
        listeners[n] = int(m.group(1))
    proxy = Proxy(p, path, listeners, admin)
    wait_until(lambda: proxy.admin("/ready")[0] == 200, what="proxy ready")
    return proxy


def request(port, path="/", method="GET", headers=None, body=None, conn=None, timeout=10):
    """One request; returns (status, headers dict lower-cased, body bytes)."""
    own = conn is None
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    hdrs = {k.lower(): v for k, v in r.getheaders()}
    if own:
        c.close()
    return r.status, hdrs, data


def raw_exchange(port, data, timeout=5):
    """Sends raw bytes and returns everything the peer sends until it closes (or timeout)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except socket.timeout:
        pass
    s.close()
    return out
