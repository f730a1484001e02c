"""Shared pieces of the benchmark scripts: processes, ports, /proc readings, wrk parsing."""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BUILD = os.environ.get("TRELLIS_BUILD_DIR", os.path.join(ROOT, "build"))
TRELLIS = os.path.join(BUILD, "trellis")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def need(*tools):
    missing = [t for t in tools if shutil.which(t) is None and not os.path.exists(t)]
    if missing:
        sys.exit(f"missing {', '.join(missing)}: run scripts/install-deps --bench")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.01)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s")


def cpu_seconds(pid):
    """utime+stime of a process and its threads, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_split(pid):
    """(utime, stime) of a process and its threads, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def minor_faults(pid):
    """Minor page faults of a process and its threads so far (each a kernel entry)."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])


def thread_cpu_ns(pid):
    """(main thread, other threads) time on CPU in ns, from each thread's schedstat: exact,
    where utime/stime are sampled per tick. A thread that has exited is not counted."""
    main = other = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                ns = int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(tid) == pid:
            main += ns
        else:
            other += ns
    return main, other


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def children_pids(pid):
    """pid and its descendants (NGINX and HAProxy fork workers)."""
    out = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            for c in f.read().split():
                out += children_pids(int(c))
    except OSError:
        pass
    return out


def tree_cpu(pid):
    return sum(cpu_seconds(p) for p in children_pids(pid))


def tree_rss(pid):
    return sum(rss_kib(p) for p in children_pids(pid))


class Service:
    def __init__(self, name, args, port, cwd=None, env=None, log=None):
        self.name = name
        self.port = port
        self.log = open(log or os.devnull, "w")
        self.p = subprocess.Popen(args, cwd=cwd, env=env, stdout=self.log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        wait_port(port)

    def pids(self):
        return children_pids(self.p.pid)

    def stop(self):
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait()


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text):
    m = re.match(r"([\d.]+)(us|ms|s)$", text)
    if m is None:
        raise ValueError(f"wrk latency {text!r}: not a number of us, ms or s")
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(url, seconds, connections, threads=1, script=None):
    """Runs wrk; returns dict(requests, rps, p50_ms, p99_ms, errors)."""
    args = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--latency"]
    if script:
        args += ["-s", script]
    out = subprocess.run(args + [url], capture_output=True, text=True, check=True).stdout
    res = {"requests": int(re.search(r"(\d+) requests in", out).group(1)),
           "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
           "p50_ms": _ms(re.search(r"50%\s+(\S+)", out).group(1)),
           "p99_ms": _ms(re.search(r"99%\s+(\S+)", out).group(1))}
    errs = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["errors"] = (int(errs.group(1)) if errs else 0) + (
        sum(int(x) for x in sock.groups()) if sock else 0)
    return res


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]
