"""Helpers for `trellis server` end-to-end tests."""
import json
import os
import urllib.request

from conftest import TRELLIS


class Server:
    def __init__(self, proc, http_port, dns_port, data_dir):
        self.proc = proc
        self.http_port = http_port
        self.dns_port = dns_port
        self.data_dir = data_dir
        self.base = f"http://127.0.0.1:{http_port}"

    def request(self, method, path, body=None, timeout=10):
        data = None
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            if isinstance(data, str):
                data = data.encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read(), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read(), dict(e.headers)

    def get_json(self, path):
        status, body, _ = self.request("GET", path)
        assert status == 200, (path, status, body)
        return json.loads(body)


def start_server(procs, data_dir, *extra):
    p = procs([TRELLIS, "server", "--data-dir", data_dir, "--http-addr", "127.0.0.1:0",
               "--dns-addr", "127.0.0.1:0", "--node-name", "node1", *extra])
    http = int(p.wait_for_line(r"http api listening on 127\.0\.0\.1:(\d+)").group(1))
    dns = int(p.wait_for_line(r"dns listening on 127\.0\.0\.1:(\d+) \(udp\+tcp\)").group(1))
    return Server(p, http, dns, data_dir)
