"""Shared pieces of the benchmark scripts: processes, ports, /proc readings, wrk parsing."""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BUILD = os.environ.get("TRELLIS_BUILD_DIR", os.path.join(ROOT, "build"))
TRELLIS = os.path.join(BUILD, "trellis")
STREAMS_BIN = os.path.join(BUILD, "bench", "trellis_mesh_streams")
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


def _percentile(out, p):
    """The `p%` line of wrk's latency distribution. Anchored at the line's start: a stdev
    column such as "87.50%" ends with "50%" too, and the next line's first word would be read
    as the latency."""
    m = re.search(rf"^\s*{p}%\s+(\S+)\s*$", out, re.M)
    if m is None:
        raise ValueError(f"wrk output has no {p}% latency line:\n{out}")
    return m.group(1)


def wrk(url, seconds, connections, threads=1, script=None):
    """Runs wrk; returns dict(requests, rps, p50_ms, p99_ms, errors)."""
    args = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--latency"]
    if script:
        args += ["-s", script]
    out = subprocess.run(args + [url], capture_output=True, text=True, check=True).stdout
    res = {"requests": int(re.search(r"(\d+) requests in", out).group(1)),
           "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
           "p50_ms": _ms(_percentile(out, "50")),
           "p99_ms": _ms(_percentile(out, "99"))}
    errs = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["errors"] = (int(errs.group(1)) if errs else 0) + (
        sum(int(x) for x in sock.groups()) if sock else 0)
    return res


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def ensure_tool(binary, source, target):
    if not os.path.exists(binary) or os.path.getmtime(binary) < os.path.getmtime(
            os.path.join(ROOT, "bench", "tools", source)):
        subprocess.run(["cmake", "--build", BUILD, "--target", target], check=True)


class Streams:
    """trellis_mesh_streams, driven through its stdin/stdout (see mesh_streams.cc)."""

    def __init__(self, port, n, prefix="sim", timeout=300):
        self.p = subprocess.Popen([STREAMS_BIN, "--server", f"127.0.0.1:{port}", "--streams",
                                   str(n), "--node-prefix", prefix],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  bufsize=1)
        self.done = {}
        self.closed = []
        line = self._line(timeout)
        if not line.startswith("ready "):
            raise RuntimeError(f"mesh streams: {line}")
        self.open = int(line.split()[1])
        if self.open != n:
            raise RuntimeError(f"only {self.open} of {n} streams opened: {self.closed[:3]}")

    def _line(self, timeout):
        """The next line that is not a `closed` notice (a silent client is stuck: killed)."""
        t = threading.Timer(timeout, self.p.kill)
        t.start()
        try:
            while True:
                line = self.p.stdout.readline().strip()
                if not line:
                    raise RuntimeError(f"mesh streams exited; closed: {self.closed[:3]}")
                if line.startswith("closed "):
                    self.closed.append(line)
                    continue
                if line.startswith("error"):
                    raise RuntimeError(f"mesh streams: {line}")
                if line.startswith("done "):
                    f = line.split()
                    self.done[f[1]] = dict(version=int(f[2]), first=int(f[3]), median=int(f[4]),
                                           last=int(f[5]), streams=int(f[6]))
                return line
        finally:
            t.cancel()

    def watch_many(self, watches):
        """watches: [(id, service, address, 'add'|'remove')]; returns once all are set."""
        self.p.stdin.write("".join(f"watch {w[0]} {w[1]} {w[2]} {w[3]}\n" for w in watches))
        self.p.stdin.flush()
        n = 0
        while n < len(watches):
            n += self._line(30).startswith("watching ")

    def wait_done(self, ids, timeout=60):
        """Blocks on the client's output (no polling: it would share the cores)."""
        while any(i not in self.done for i in ids):
            self._line(timeout)
        return [self.done[i] for i in ids]

    def stats(self):
        self.p.stdin.write("stats\n")
        self.p.stdin.flush()
        while True:
            line = self._line(30)
            if line.startswith("stats "):
                return {k: int(v) for k, v in (f.split("=") for f in line.split()[1:])}

    def stop(self):
        try:
            self.p.stdin.write("quit\n")
            self.p.stdin.flush()
            self.p.wait(10)
        except Exception:
            self.p.kill()
