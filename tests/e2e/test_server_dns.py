"""`trellis server` DNS: dig (UDP, TCP, SRV, NXDOMAIN, truncation), unbound as a stub
resolver in front of it, dnsmasq as the recursor behind it, and HAProxy discovering backends
through it."""
import os
import re
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


def flags(dig_output):
    return dig_output.split("flags:")[1].split(";")[0]


def start_on_free_port(procs, argv_for, ready, attempts=5):
    """A peer that cannot take port 0, on a port that was free a moment ago: argv_for(port,
    attempt) gives its command line and `ready` the log line that says it serves. Another
    test's process may take the port (UDP and TCP) before the peer binds it: then the peer
    exits, and another port is tried."""
    for attempt in range(attempts):
        port = free_port(socket_kind_udp())
        p = procs(argv_for(port, attempt))
        try:
            p.wait_for_line(ready, timeout=10)
            return port, p
        except AssertionError:
            if p.p.poll() is None or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def start_dnsmasq(procs, txt_records):
    """dnsmasq as an upstream recursor: small.example A 192.0.2.7 and big.example with the
    given TXT records; nothing else (no upstream)."""
    return start_on_free_port(procs, lambda port, attempt: [
        "/usr/sbin/dnsmasq", "-k", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
        f"--port={port}", "--listen-address=127.0.0.1", "--bind-interfaces", "--pid-file=",
        "--log-facility=-", "--user=root", "--address=/small.example/192.0.2.7",
        *[f"--txt-record=big.example,{t}" for t in txt_records]], r"cleared cache")


@pytest.mark.skipif(not os.path.exists("/usr/sbin/dnsmasq"), reason="dnsmasq not installed")
def test_forwarding_asks_again_over_tcp_when_the_recursor_truncates(procs, tmp_path):
    """dnsmasq as the recursor. An answer too big for UDP comes back from it truncated; trellis
    asks it again over TCP, so a client asking over TCP gets the whole answer, and one asking
    over UDP gets TC and then the whole answer over TCP (dig's default)."""
    records = [f"record-{i}-" + "x" * 180 for i in range(10)]
    port, dnsmasq = start_dnsmasq(procs, records)
    server = start_server(procs, str(tmp_path / "data"), "--recursor", f"127.0.0.1:{port}")
    assert dig(server.dns_port, "small.example", "A", "+short").split() == ["192.0.2.7"]

    tcp = dig(server.dns_port, "big.example", "TXT", "+tcp", "+short").splitlines()
    assert sorted(t.strip('"') for t in tcp) == sorted(records), tcp
    udp = dig(server.dns_port, "big.example", "TXT", "+ignore", "+noedns")
    assert " tc" in flags(udp), udp
    retried = dig(server.dns_port, "big.example", "TXT", "+short").splitlines()
    assert sorted(t.strip('"') for t in retried) == sorted(records), retried

    metrics = server.request("GET", "/metrics")[1].decode()
    by_transport = {t: float(v) for t, v in re.findall(
        r'^trellis_dns_forwarded_total\{transport="(udp|tcp)"\} (\S+)$', metrics, re.M)}
    # small.example once; big.example four times (the last dig asked twice: over UDP, then over
    # TCP after our TC), each answered truncated by dnsmasq over UDP and asked again over TCP.
    assert by_transport == {"udp": 5.0, "tcp": 4.0}, by_transport


def start_unbound(procs, tmp_path, trellis_dns_port):
    """unbound with a stub zone `trellis` pointing at our DNS server. so-reuseport off: sharing
    a port with another process's SO_REUSEPORT socket would split the queries between the
    two."""
    def argv(port, attempt):
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
        return ["/usr/sbin/unbound", "-d", "-c", str(conf)]
    return start_on_free_port(procs, argv, r"start of service")


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
