#!/usr/bin/env python3
"""Resident memory per idle subscribed connection: tern beside nats-server.

    benches/connections.py [N] [TERN_BINARY]

For each server (tern's line listener, tern's NATS listener, and
nats-server if it is on PATH), starts it alone on a random loopback port,
opens N (default 10,000) connections that each hold one subscription and
have it confirmed (PING/PONG), and reports the server's resident set size
before, with the connections, and after they all closed, as read from
/proc/PID/status. Raises this process's open-files limit to its hard limit
first (N needs N descriptors here and N in the server). Stops every server
it starts. A figure for the notes: it depends on the machine and allocator.
"""
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
TERN = sys.argv[2] if len(sys.argv) > 2 else "target/release/tern"

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
if hard < N + 200:
    sys.exit(f"open-files hard limit {hard} is too low for {N} connections")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def wait_port(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def read_until(s, marker, buf=b""):
    while marker not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError("closed")
        buf += chunk
    return buf


def measure(name, argv, port, hello, sub, ping, pong):
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        time.sleep(0.2)
        before = rss_kib(server.pid)
        conns = []
        for i in range(N):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(hello + sub + ping)
            conns.append(s)
        for s in conns:
            read_until(s, pong)
        time.sleep(0.5)
        loaded = rss_kib(server.pid)
        for s in conns:
            s.close()
        time.sleep(2)
        after = rss_kib(server.pid)
        per = (loaded - before) * 1024 / N
        print(f"| {name} | {before / 1024:.1f} MiB | {loaded / 1024:.1f} MiB | "
              f"{per / 1024:.1f} KiB | {after / 1024:.1f} MiB |")
    finally:
        server.terminate()
        server.wait()


print(f"{N} idle connections, one subscription each\n")
print("| server | RSS before | RSS with them | per connection | RSS after close |")
print("| --- | ---: | ---: | ---: | ---: |")
# Below the usual ephemeral range (32768-60999): 10,000 client sockets in
# TIME_WAIT must not hold the next server's port.
port = random.randint(20000, 30000)
common = [TERN, "--max-connections", str(N + 100)]
measure("tern (line)",
        common + ["--listen", f"127.0.0.1:{port}", "--nats-listen", "off"],
        port, b"", b"SUB bench.x\n", b"PING\n", b"PONG\n")
port += 1
measure("tern (NATS)",
        common + ["--listen", f"127.0.0.1:{port + 1000}", "--nats-listen", f"127.0.0.1:{port}"],
        port, b'CONNECT {"verbose":false}\r\n', b"SUB bench.x 1\r\n", b"PING\r\n", b"PONG\r\n")
nats = shutil.which("nats-server")
if nats:
    port += 1
    measure("nats-server", [nats, "-a", "127.0.0.1", "-p", str(port)],
            port, b'CONNECT {"verbose":false}\r\n', b"SUB bench.x 1\r\n", b"PING\r\n", b"PONG\r\n")
else:
    print("| nats-server | not installed | | | |")
