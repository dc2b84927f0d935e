#!/usr/bin/env python3
"""How long one client's expensive publishes stall the others on its shard.

    benches/stall_probe.py [TERN_BINARY] [PUBLISHES]

Starts TERN_BINARY (default target/release/tern) with one shard on CPU 0
and only its line listener, on a random loopback port. A subscriber holds
8,192 wildcard patterns ({a,*}^13.>, which every subject a.a....a.<n>
matches); a publisher sends PUBLISHES (default 1,000) messages on subjects
never seen before, so each one walks the whole pattern trie; meanwhile a
third client sends PING after PING and times each round trip. Prints the
worst round trip: how long the shard was deaf to everyone else. Stops the
relay it started. Not a test: a figure for the notes, which depends on the
machine.
"""
import os
import random
import socket
import subprocess
import sys
import threading
import time

binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/tern"
publishes = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
port = random.randint(40000, 50000)
relay = subprocess.Popen(
    [binary, "--cores", "0", "--listen", f"127.0.0.1:{port}", "--nats-listen", "off"],
    stderr=subprocess.DEVNULL,
)
try:
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)

    def connect():
        s = socket.create_connection(("127.0.0.1", port))
        s.settimeout(30)
        return s

    def ping(s):
        s.sendall(b"PING\n")
        buf = b""
        while b"PONG\n" not in buf:
            buf += s.recv(1 << 20)

    sub = connect()
    patterns = (
        "SUB " + "".join("*." if bits >> i & 1 else "a." for i in range(13)) + ">\n"
        for bits in range(1 << 13)
    )
    sub.sendall("".join(patterns).encode())
    ping(sub)
    done = threading.Event()

    def drain():
        sub.settimeout(0.5)
        while not done.is_set():
            try:
                sub.recv(1 << 20)
            except OSError:
                pass

    threading.Thread(target=drain, daemon=True).start()
    pub, probe = connect(), connect()
    ping(pub)
    ping(probe)
    start = time.monotonic()
    pub.sendall(
        "".join(f"PUB a.a.a.a.a.a.a.a.a.a.a.a.a.{i} x\n" for i in range(publishes)).encode()
        + b"PING\n"
    )
    pub.settimeout(0.001)
    seen, worst, probes = b"", 0.0, 0
    deadline = start + 60
    while time.monotonic() < deadline and b"PONG\n" not in seen:
        t = time.monotonic()
        ping(probe)
        worst = max(worst, time.monotonic() - t)
        probes += 1
        try:
            seen += pub.recv(1 << 16)
        except OSError:
            pass
    done.set()
    print(
        f"{os.path.basename(binary)}: {publishes} publishes in "
        f"{time.monotonic() - start:.2f} s; {probes} PINGs from another client, "
        f"worst round trip {worst * 1000:.1f} ms"
    )
finally:
    relay.terminate()
    relay.wait()
