"""Shared fixtures for Trellis end-to-end tests.

Every test starts real binaries on port 0 (or on ports the process reports back) and waits for
conditions by polling with a deadline, never by sleeping a fixed time.
"""
import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("TRELLIS_BUILD_DIR", os.path.join(ROOT, "build"))
TRELLIS = os.path.join(BUILD, "trellis")
ECHO = os.path.join(BUILD, "examples", "echo")


def wait_until(predicate, timeout=10.0, interval=0.01, what="condition"):
    """Polls predicate() until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # the thing polled may not be up yet
            last_exc = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                         + (f" (last error: {last_exc!r})" if last_exc else ""))


class Proc:
    """A child process whose output is collected line by line in the background."""

    def __init__(self, args, env=None, cwd=None):
        self.args = [str(a) for a in args]
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        self.p = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  env=full_env, cwd=cwd, text=True, bufsize=1,
                                  start_new_session=True)
        self.lines = []
        self._cv = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.p.stdout:
            with self._cv:
                self.lines.append(line.rstrip("\n"))
                self._cv.notify_all()
        with self._cv:
            self._cv.notify_all()

    def output(self):
        with self._cv:
            return "\n".join(self.lines)

    def wait_for_line(self, pattern, timeout=10.0):
        """Returns the regex match of the first output line matching pattern."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cv:
            seen = 0
            while True:
                for line in self.lines[seen:]:
                    m = rx.search(line)
                    if m:
                        return m
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or (self.p.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"{self.args[0]} never printed /{pattern}/ (exit={self.p.poll()}):\n"
                        + "\n".join(self.lines[-40:]))
                self._cv.wait(min(left, 0.1))

    def signal(self, sig):
        if self.p.poll() is None:
            os.killpg(self.p.pid, sig)

    def stop(self, timeout=10.0):
        if self.p.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.p.wait()
        return self.p.returncode

    def kill(self):
        self.signal(signal.SIGKILL)
        self.p.wait()


class Echo:
    def __init__(self, proc, port, name):
        self.proc = proc
        self.port = port
        self.name = name
        self.address = f"127.0.0.1:{port}"
        self.instance = f"{name}-{port}"


@pytest.fixture
def procs():
    """Starts processes for one test and stops every one of them afterwards."""
    started = []

    def start(args, **kw):
        p = Proc(args, **kw)
        started.append(p)
        return p

    yield start
    for p in reversed(started):
        p.stop()


@pytest.fixture
def echo(procs):
    """Starts examples/echo on a free port; returns an Echo."""

    def start(name="echo", *extra):
        p = procs([ECHO, "--listen", "127.0.0.1:0", "--name", name, *extra])
        m = p.wait_for_line(r"listening on 127\.0\.0\.1:(\d+)")
        return Echo(p, int(m.group(1)), name)

    return start


def free_port(kind=socket.SOCK_STREAM):
    """A port that was free a moment ago, for peers (HAProxy, unbound) that cannot take 0."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
