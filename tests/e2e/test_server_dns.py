"""`trellis server` DNS: dig (UDP, TCP, SRV, NXDOMAIN, truncation), unbound as a stub
resolver in front of it, and HAProxy discovering backends through it."""
import os
import shutil
import subprocess
import time
import urllib.request

import pytest

from conftest import ECHO, Echo, wait_until, free_port
from serverutil import start_server


@pytest.fixture
def server(procs, tmp_path):
    return start_server(procs, str(tmp_path / "data"))


def dig(port, *args):
    r = subprocess.run(["dig", "@127.0.0.1", "-p", str(port), "+time=2", "+tries=1", *args],
                       capture_output=True, text=True, timeout=15)
    return r.stdout


def register(server, name, sid, port, address="127.0.0.1"):
    st, body, _ = server.request("PUT", "/v1/agent/service/register",
                                 {"Name": name, "ID": sid, "Address": address, "Port": port})
    assert st == 200, body


def test_a_srv_tcp_and_nxdomain(server):
    register(server, "web", "web-1", 8081, "127.0.0.11")
    register(server, "web", "web-2", 8082, "127.0.0.12")
    register(server, "other", "o-1", 9000, "127.0.0.13")
    a = dig(server.dns_port, "web.service.trellis", "A", "+short").split()
    assert sorted(a) == ["127.0.0.11", "127.0.0.12"]
    a_tcp = dig(server.dns_port, "web.service.trellis", "A", "+short", "+tcp").split()
    assert sorted(a_tcp) == ["127.0.0.11", "127.0.0.12"]
    # The consul domain is answered too.
    assert dig(server.dns_port, "other.service.consul", "A", "+short").split() == ["127.0.0.13"]
    srv = dig(server.dns_port, "_web._tcp.service.trellis", "SRV", "+short").splitlines()
    ports = sorted(int(line.split()[2]) for line in srv)
    assert ports == [8081, 8082]
    nx = dig(server.dns_port, "nope.service.trellis", "A")
    assert "status: NXDOMAIN" in nx
    assert "SOA" in nx.split("AUTHORITY SECTION:")[1]
    # Deregistering removes the answer.
    st, _, _ = server.request("PUT", "/v1/agent/service/deregister/web-1")
    assert st == 200
    assert dig(server.dns_port, "web.service.trellis", "A", "+short").split() == ["127.0.0.12"]


def test_truncation_then_tcp(server):
    for i in range(60):
        register(server, "big", f"big-{i}", 10000 + i, f"127.0.1.{i + 1}")
    udp = dig(server.dns_port, "big.service.trellis", "A", "+ignore", "+noedns")
    assert " tc" in udp.split("flags:")[1].split(";")[0]
    tcp = dig(server.dns_port, "big.service.trellis", "A", "+short", "+tcp").split()
    assert len(tcp) == 60
    # dig's default retries over TCP on TC and gets everything.
    assert len(dig(server.dns_port, "big.service.trellis", "A", "+short", "+noedns").split()) == 60


@pytest.mark.skipif(not os.path.exists("/usr/sbin/unbound"), reason="unbound not installed")
def test_unbound_stub_zone(server, procs, tmp_path):
    register(server, "api", "api-1", 7000, "127.0.0.21")
    port, unbound = start_unbound(procs, tmp_path, server.dns_port)
    wait_until(lambda: dig(port, "api.service.trellis", "A", "+short").split() == ["127.0.0.21"],
               timeout=15, what="unbound resolving api.service.trellis through trellis:\n"
               + unbound.output())


def start_unbound(procs, tmp_path, trellis_dns_port, attempts=5):
    """unbound with a stub zone `trellis` pointing at our DNS server. The port is free when
    chosen but another test's process may take it before unbound binds it (UDP and TCP):
    then unbound exits, and we try another. so-reuseport off: sharing a port with another
    process's SO_REUSEPORT socket would split the queries between the two."""
    for attempt in range(attempts):
        port = free_port(socket_kind_udp())
        conf = tmp_path / f"unbound-{attempt}.conf"
        conf.write_text(f"""server:
        interface: 127.0.0.1
        port: {port}
        do-daemonize: no
        chroot: ""
        username: ""
        directory: "{tmp_path}"
        pidfile: "{tmp_path}/unbound.pid"
        use-syslog: no
        logfile: ""
        do-not-query-localhost: no
        domain-insecure: "trellis"
        local-zone: "trellis." nodefault
        access-control: 127.0.0.0/8 allow
        auto-trust-anchor-file: ""
        num-threads: 1
        so-reuseport: no
stub-zone:
        name: "trellis"
        stub-addr: 127.0.0.1@{trellis_dns_port}
""")
        p = procs(["/usr/sbin/unbound", "-d", "-c", str(conf)])
        try:
            p.wait_for_line(r"start of service", timeout=10)
            return port, p
        except AssertionError:
            if p.p.poll() is None or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def socket_kind_udp():
    import socket
    return socket.SOCK_DGRAM


@pytest.mark.skipif(not os.path.exists("/usr/sbin/haproxy"), reason="haproxy not installed")
def test_haproxy_discovers_backends(server, procs, tmp_path):
    # One loopback address per instance: HAProxy gives each SRV target host name one server,
    # so instances must not share an address (their SRV targets are address names).
    echoes = []
    for i in range(3):
        ip = f"127.0.0.{31 + i}"
        p = procs([ECHO, "--listen", f"{ip}:0", "--name", f"web{i}"])
        port = int(p.wait_for_line(r"listening on 127\.0\.0\.\d+:(\d+)").group(1))
        echoes.append(Echo(p, port, f"web{i}"))
        register(server, "web", f"web{i}", port, ip)
    fport = free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(f"""global
    log stdout format raw local0 info
defaults
    mode http
    log global
    option httplog
    timeout connect 2s
    timeout client 5s
    timeout server 5s
resolvers trellis
    nameserver t 127.0.0.1:{server.dns_port}
    accepted_payload_size 8192
    hold valid 1s
    hold obsolete 1s
    resolve_retries 3
    timeout resolve 200ms
    timeout retry 200ms
frontend fe
    bind 127.0.0.1:{fport}
    default_backend be
backend be
    balance roundrobin
    server-template web 5 _web._tcp.service.trellis resolvers trellis resolve-prefer ipv4 check inter 500ms
""")
    hap = procs(["/usr/sbin/haproxy", "-f", str(cfg), "-db"])
    seen = set()

    def reached_all():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{fport}/", timeout=2) as r:
                body = r.read().decode()
        except Exception:
            return False
        for e in echoes:
            if e.name in body:
                seen.add(e.name)
        return len(seen) == 3

    try:
        wait_until(reached_all, timeout=30, interval=0.05, what="HAProxy reaching all three echoes")
    except AssertionError as e:
        raise AssertionError(f"{e}; seen {seen}; haproxy said:\n{hap.output()}")
