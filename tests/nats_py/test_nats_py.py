"""tern's NATS listener driven by an unmodified NATS client, nats-py.

Each test starts its own tern with two shards (see conftest.py) and checks
behaviour a nats-py application relies on: delivery, wildcards, queue
groups, request/reply across shards, headers, no responders, auto-unsubscribe,
flush, drain, echo off, the payload limit, reconnecting after a restart, and
the meeting of the NATS and line protocols. Nothing here measures time:
every wait is bounded, and absence is checked behind a fence (a marker
published after the messages that must not arrive, by the same publisher, so
per-publisher order puts it behind them).
"""

import asyncio
import contextlib

import nats
import nats.errors
import pytest

WAIT_S = 5.0  # bound on any single expected arrival


class Clients:
    """Opens nats-py connections and closes them all at the end."""

    def __init__(self):
        self.conns = []
        self.errors = []

    async def connect(self, url, **kw):
        async def on_error(e):
            self.errors.append(e)

        kw.setdefault("allow_reconnect", False)
        kw.setdefault("connect_timeout", 5)
        nc = await nats.connect(url, error_cb=on_error, **kw)
        self.conns.append(nc)
        return nc

    async def close(self):
        for nc in self.conns:
            if not nc.is_closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(nc.close(), WAIT_S)


@contextlib.asynccontextmanager
async def clients():
    c = Clients()
    try:
        yield c
    finally:
        await c.close()


async def barrier(nc):
    """Make every SUB/UNSUB this client has issued so far in force on every
    shard: a PING sent after them, answered.

    nats-py 2.16.0's flush() writes its PING straight to the socket, ahead of
    SUB/UNSUB commands still queued for its flusher task (subscribe() only
    queues), so after `subscribe(); flush()` the wire carries `PING` then
    `SUB`, and that PONG says nothing about the SUB. By the time the first
    flush returns, the flusher has written the queued commands, so a second
    PING follows them.
    """
    await nc.flush(timeout=WAIT_S)
    await nc.flush(timeout=WAIT_S)


async def next_msgs(sub, n):
    """The next n messages of a subscription, each within WAIT_S."""
    return [await sub.next_msg(timeout=WAIT_S) for _ in range(n)]


async def fence(publisher, receiver_sub, subject):
    """Publish a marker on `subject` from `publisher` and wait for it on
    `receiver_sub` (subscribed to `subject`): everything the publisher sent
    before it has then reached the receiving connection."""
    await publisher.publish(subject, b"fence")
    msg = await receiver_sub.next_msg(timeout=WAIT_S)
    assert (msg.subject, msg.data) == (subject, b"fence")


# ---------------------------------------------------------------- connect


async def test_connect_and_server_info(tern):
    """nats-py connects on the shared NATS listener and on each shard's private
    one, and INFO carries what the client reads: proto 1, headers, max_payload
    (tern's default --max-frame, 1 MiB), a 2.x version and a server_id."""
    async with clients() as c:
        for url in (tern.nats_url, tern.nats_shard_url(0), tern.nats_shard_url(1)):
            nc = await c.connect(url)
            assert nc.is_connected
            info = nc._server_info
            assert info["proto"] == 1
            assert info["headers"] is True
            assert nc.max_payload == 1024 * 1024
            assert nc.connected_server_version.major == 2
            assert info["server_id"]
            assert isinstance(info["client_id"], int)
            await nc.flush(timeout=WAIT_S)
        assert c.errors == []


# --------------------------------------------------------- publish/subscribe


async def test_publish_subscribe_across_shards(tern):
    """A subscriber on shard 0 gets, in order, what a publisher on shard 1
    publishes, with subject, payload (binary, empty, with CR LF inside) and
    reply subject intact; a subscriber on the same shard as the publisher
    gets the same."""
    payloads = [b"one", b"", b"\x00\xff binary", b"with\r\ncrlf", b"x" * 70000]
    async with clients() as c:
        sub_nc = await c.connect(tern.nats_shard_url(0))
        local_nc = await c.connect(tern.nats_shard_url(1))
        pub_nc = await c.connect(tern.nats_shard_url(1))
        far = await sub_nc.subscribe("ps.subject")
        near = await local_nc.subscribe("ps.subject")
        await barrier(sub_nc)
        await barrier(local_nc)
        for p in payloads:
            await pub_nc.publish("ps.subject", p)
        await pub_nc.publish("ps.subject", b"asks", reply="ps.reply.1")
        for sub in (far, near):
            got = await next_msgs(sub, len(payloads) + 1)
            assert [m.subject for m in got] == ["ps.subject"] * (len(payloads) + 1)
            assert [m.data for m in got] == payloads + [b"asks"]
            assert [m.reply for m in got] == [""] * len(payloads) + ["ps.reply.1"]
        assert c.errors == []


async def test_wildcards(tern):
    """`*` matches exactly one token and `>` one or more at the end, as in
    nats-server: `w.*` gets w.a only, `w.>` gets w.a and w.a.b, `w.*.b`
    gets w.a.b, and nothing matches `w` or `v.a`."""
    async with clients() as c:
        sub_nc = await c.connect(tern.nats_shard_url(0))
        pub_nc = await c.connect(tern.nats_shard_url(1))
        star = await sub_nc.subscribe("w.*")
        full = await sub_nc.subscribe("w.>")
        mid = await sub_nc.subscribe("w.*.b")
        done = await sub_nc.subscribe("w_done")
        await barrier(sub_nc)
        for subj in ("w", "v.a", "w.a", "w.a.b", "w.a.c", "w.a.b.c"):
            await pub_nc.publish(subj, subj.encode())
        await fence(pub_nc, done, "w_done")
        assert [m.subject for m in await next_msgs(star, 1)] == ["w.a"]
        assert [m.subject for m in await next_msgs(full, 4)] == ["w.a", "w.a.b", "w.a.c", "w.a.b.c"]
        assert [m.subject for m in await next_msgs(mid, 1)] == ["w.a.b"]
        # Everything before the fence has been read off the socket by now.
        assert (star.pending_msgs, full.pending_msgs, mid.pending_msgs) == (0, 0, 0)
        assert sub_nc.stats["in_msgs"] == 1 + 4 + 1 + 1


async def test_one_msg_per_matching_subscription(tern):
    """A connection with two subscriptions that both match gets the message
    once per subscription (one MSG per sid), as nats-server does."""
    async with clients() as c:
        sub_nc = await c.connect(tern.nats_shard_url(0))
        pub_nc = await c.connect(tern.nats_shard_url(1))
        a = await sub_nc.subscribe("twice.x")
        b = await sub_nc.subscribe("twice.*")
        await barrier(sub_nc)
        await pub_nc.publish("twice.x", b"m")
        assert (await a.next_msg(timeout=WAIT_S)).data == b"m"
        assert (await b.next_msg(timeout=WAIT_S)).data == b"m"


# -------------------------------------------------------------- queue groups


async def test_queue_group_members_on_both_shards(tern):
    """A queue group with two members on each shard: every message goes to
    exactly one member, every member gets some of 100 messages, and a plain
    subscriber on the same subject gets all of them."""
    n = 100
    async with clients() as c:
        members = []
        for shard in (0, 0, 1, 1):
            nc = await c.connect(tern.nats_shard_url(shard))
            q = await nc.subscribe("q.work", queue="workers")
            done = await nc.subscribe("q.done")
            await barrier(nc)
            members.append((nc, q, done))
        plain_nc = await c.connect(tern.nats_shard_url(1))
        plain = await plain_nc.subscribe("q.work")
        await barrier(plain_nc)
        pub_nc = await c.connect(tern.nats_url)
        for i in range(n):
            await pub_nc.publish("q.work", str(i).encode())
        await pub_nc.publish("q.done", b"fence")
        got = []
        for nc, q, done in members:
            assert (await done.next_msg(timeout=WAIT_S)).data == b"fence"
            mine = [(await q.next_msg(timeout=WAIT_S)).data for _ in range(q.pending_msgs)]
            assert nc.stats["in_msgs"] == len(mine) + 1
            assert mine, "a member got none of the messages"
            got.extend(mine)
        assert sorted(got, key=int) == [str(i).encode() for i in range(n)]
        assert [m.data for m in await next_msgs(plain, n)] == [str(i).encode() for i in range(n)]


# ------------------------------------------------------------ request/reply


async def test_request_responder_on_other_shard(tern):
    """request() from a client on shard 0 to a responder on shard 1, each
    requester making its first request at once after connecting (nats-py
    sends SUB for its inbox and the PUB back to back, no flush): every reply
    arrives. Covers the new-style (one wildcard inbox) and old-style (one
    inbox per request, auto-unsubscribed after 1) requests."""
    async with clients() as c:
        responder = await c.connect(tern.nats_shard_url(1))

        async def echo(msg):
            await responder.publish(msg.reply, b"re:" + msg.data)

        await responder.subscribe("svc.echo", cb=echo)
        await barrier(responder)
        for i in range(5):
            requester = await c.connect(tern.nats_shard_url(0))
            reply = await requester.request("svc.echo", f"new{i}".encode(), timeout=WAIT_S)
            assert reply.data == f"re:new{i}".encode()
            reply = await requester.request("svc.echo", f"old{i}".encode(), timeout=WAIT_S, old_style=True)
            assert reply.data == f"re:old{i}".encode()
        assert c.errors == []


async def test_no_responders(tern):
    """request() on a subject nobody subscribes to, anywhere in the relay,
    fails at once with NoRespondersError (tern answers `HMSG <inbox> <sid>
    16 16` with `NATS/1.0 503`), for new- and old-style requests; the
    connection stays usable."""
    async with clients() as c:
        other = await c.connect(tern.nats_shard_url(1))
        await other.subscribe("nr.elsewhere")
        await barrier(other)
        nc = await c.connect(tern.nats_shard_url(0))
        with pytest.raises(nats.errors.NoRespondersError):
            await nc.request("nr.nobody", b"?", timeout=WAIT_S)
        with pytest.raises(nats.errors.NoRespondersError):
            await nc.request("nr.nobody", b"?", timeout=WAIT_S, old_style=True)
        await nc.flush(timeout=WAIT_S)
        assert nc.is_connected


# ------------------------------------------------------------------ headers


async def test_headers_round_trip(tern):
    """Headers published with HPUB arrive with HMSG on another shard, keys and
    values intact, payload unchanged; a request with headers gets a reply
    with headers (responder on the other shard)."""
    async with clients() as c:
        sub_nc = await c.connect(tern.nats_shard_url(0))
        pub_nc = await c.connect(tern.nats_shard_url(1))
        sub = await sub_nc.subscribe("hdr.x")
        await barrier(sub_nc)
        headers = {"Foo": "Bar", "X-Trace-Id": "abc-123", "Empty-Payload": "yes"}
        await pub_nc.publish("hdr.x", b"body", headers=headers)
        await pub_nc.publish("hdr.x", b"", headers={"Only": "headers"})
        await pub_nc.publish("hdr.x", b"plain")
        m1, m2, m3 = await next_msgs(sub, 3)
        assert (m1.data, m1.headers) == (b"body", headers)
        assert (m2.data, m2.headers) == (b"", {"Only": "headers"})
        assert (m3.data, m3.headers) == (b"plain", None)

        async def respond(msg):
            await sub_nc.publish(msg.reply, b"ok", headers={"Answer": msg.headers["Question"]})

        await sub_nc.subscribe("hdr.svc", cb=respond)
        await barrier(sub_nc)
        reply = await pub_nc.request("hdr.svc", b"", headers={"Question": "42"}, timeout=WAIT_S)
        assert (reply.data, reply.headers) == (b"ok", {"Answer": "42"})


async def test_headers_stripped_for_client_without_headers(tern, raw):
    """A NATS connection that sent `headers:false` gets a message published
    with headers as a plain MSG carrying only the payload (nats-server does
    the same)."""
    r = raw(tern.nats_shard_addr[0])
    assert r.read_until(b"\r\n").startswith(b"INFO ")
    r.send(b'CONNECT {"verbose":false,"headers":false}\r\nSUB hs.x 9\r\nPING\r\n')
    assert r.read_until(b"PONG\r\n") == b"PONG\r\n"
    async with clients() as c:
        pub_nc = await c.connect(tern.nats_shard_url(1))
        await pub_nc.publish("hs.x", b"payload", headers={"K": "V"})
        await pub_nc.flush(timeout=WAIT_S)
    assert r.read_until(b"payload\r\n") == b"MSG hs.x 9 7\r\npayload\r\n"


# --------------------------------------------------------- unsubscribe(limit)


async def test_unsubscribe_limit(tern):
    """`unsubscribe(limit=3)` right after subscribing (SUB then UNSUB sid 3):
    the server delivers 3 messages on that subscription and then none
    (counted at the socket: nats-py counts every MSG it reads, even one for
    a subscription it has already dropped)."""
    async with clients() as c:
        sub_nc = await c.connect(tern.nats_shard_url(0))
        pub_nc = await c.connect(tern.nats_shard_url(1))
        sub = await sub_nc.subscribe("lim.a")
        await sub.unsubscribe(limit=3)
        done = await sub_nc.subscribe("lim.done")
        await barrier(sub_nc)
        for i in range(10):
            await pub_nc.publish("lim.a", f"a{i}".encode())
        await fence(pub_nc, done, "lim.done")
        assert [m.data for m in await next_msgs(sub, 3)] == [b"a0", b"a1", b"a2"]
        assert sub_nc.stats["in_msgs"] == 3 + 1


async def test_unsubscribe_limit_counts_earlier_deliveries(tern):
    """`unsubscribe(limit=3)` on a subscription that already got 2 messages:
    max_msgs counts deliveries in total, so the server delivers 1 more and
    then none (nats-server's rule; the spec's 'in total')."""
    async with clients() as c:
        sub_nc = await c.connect(tern.nats_shard_url(0))
        pub_nc = await c.connect(tern.nats_shard_url(1))
        sub = await sub_nc.subscribe("lim.b")
        done = await sub_nc.subscribe("lim.done")
        await barrier(sub_nc)
        await pub_nc.publish("lim.b", b"first0")
        await pub_nc.publish("lim.b", b"first1")
        assert [m.data for m in await next_msgs(sub, 2)] == [b"first0", b"first1"]
        await sub.unsubscribe(limit=3)
        await barrier(sub_nc)
        for i in range(10):
            await pub_nc.publish("lim.b", f"b{i}".encode())
        await fence(pub_nc, done, "lim.done")
        assert [m.data for m in await next_msgs(sub, 1)] == [b"b0"]
        # first0, first1, b0 and the fence; nothing past the limit reached the socket.
        assert sub_nc.stats["in_msgs"] == 2 + 1 + 1


# -------------------------------------------------------------------- flush


async def test_flush_is_a_barrier_across_shards(tern):
    """Once a flush() whose PING follows the SUB on the wire has returned (see
    barrier()), the new subscription is in force on every shard: a publisher
    on the other shard that publishes at once is delivered. Repeated with
    fresh subjects, in both directions; and flush() on a publisher returns
    after the 200 messages it had queued were written, all of them
    delivered in order."""
    async with clients() as c:
        a = await c.connect(tern.nats_shard_url(0))
        b = await c.connect(tern.nats_shard_url(1))
        for i in range(20):
            sub_nc, pub_nc = (a, b) if i % 2 == 0 else (b, a)
            sub = await sub_nc.subscribe(f"fl.{i}")
            await barrier(sub_nc)
            await pub_nc.publish(f"fl.{i}", b"x")
            assert (await sub.next_msg(timeout=WAIT_S)).subject == f"fl.{i}"
        sub = await a.subscribe("fl.many")
        await barrier(a)
        for i in range(200):
            await b.publish("fl.many", str(i).encode())
        await b.flush(timeout=WAIT_S)
        assert b.pending_data_size == 0
        assert [m.data for m in await next_msgs(sub, 200)] == [str(i).encode() for i in range(200)]


async def test_unsubscribe_then_flush_stops_delivery(tern):
    """After unsubscribe() and flush(), a publisher on the other shard no
    longer reaches that connection (checked behind a fence)."""
    async with clients() as c:
        sub_nc = await c.connect(tern.nats_shard_url(0))
        pub_nc = await c.connect(tern.nats_shard_url(1))
        sub = await sub_nc.subscribe("us.x")
        done = await sub_nc.subscribe("us.done")
        await barrier(sub_nc)
        await pub_nc.publish("us.x", b"before")
        assert (await sub.next_msg(timeout=WAIT_S)).data == b"before"
        await sub.unsubscribe()
        await barrier(sub_nc)
        await pub_nc.publish("us.x", b"after")
        await fence(pub_nc, done, "us.done")
        assert sub_nc.stats["in_msgs"] == 2


# -------------------------------------------------------------------- drain


async def test_drain_connection(tern):
    """drain(): messages already delivered are all handed to the callback,
    then the connection closes (closed_cb runs, publish raises
    ConnectionClosedError)."""
    async with clients() as c:
        closed = asyncio.Event()

        async def on_closed():
            closed.set()

        sub_nc = await c.connect(tern.nats_shard_url(0), closed_cb=on_closed)
        pub_nc = await c.connect(tern.nats_shard_url(1))
        seen = []

        async def slow(msg):
            await asyncio.sleep(0.001)
            seen.append(msg.data)

        await sub_nc.subscribe("dr.x", cb=slow)
        done = await sub_nc.subscribe("dr.done")
        await barrier(sub_nc)
        for i in range(50):
            await pub_nc.publish("dr.x", str(i).encode())
        await fence(pub_nc, done, "dr.done")
        await asyncio.wait_for(sub_nc.drain(), WAIT_S)
        await asyncio.wait_for(closed.wait(), WAIT_S)
        assert seen == [str(i).encode() for i in range(50)]
        assert sub_nc.is_closed
        with pytest.raises(nats.errors.ConnectionClosedError):
            await sub_nc.publish("dr.x", b"late")


async def test_drain_subscription(tern):
    """Subscription.drain(): the drained subscription stops receiving (the
    server sends no more MSG for it) while the connection and its other
    subscriptions keep working."""
    async with clients() as c:
        sub_nc = await c.connect(tern.nats_shard_url(0))
        pub_nc = await c.connect(tern.nats_shard_url(1))
        seen = []

        async def collect(msg):
            seen.append(msg.data)

        drained = await sub_nc.subscribe("ds.x", cb=collect)
        done = await sub_nc.subscribe("ds.done")
        await barrier(sub_nc)
        await pub_nc.publish("ds.x", b"1")
        await fence(pub_nc, done, "ds.done")
        await asyncio.wait_for(drained.drain(), WAIT_S)
        assert seen == [b"1"]
        # drain() sends UNSUB, then flush()'s PING ahead of it (see barrier()).
        await barrier(sub_nc)
        await pub_nc.publish("ds.x", b"2")
        await fence(pub_nc, done, "ds.done")
        assert seen == [b"1"]
        assert sub_nc.stats["in_msgs"] == 3
        assert sub_nc.is_connected


# ----------------------------------------------------------------- echo off


async def test_echo_off(tern):
    """A connection with echo off (no_echo=True) does not get its own
    publishes on a matching subscription, while another subscriber does and
    while it still gets what others publish; a connection with echo on gets
    its own (the control case)."""
    async with clients() as c:
        quiet = await c.connect(tern.nats_shard_url(0), no_echo=True)
        loud = await c.connect(tern.nats_shard_url(1))
        q_sub = await quiet.subscribe("echo.x")
        l_sub = await loud.subscribe("echo.x")
        await barrier(quiet)
        await barrier(loud)

        await quiet.publish("echo.x", b"from-quiet")
        await quiet.flush(timeout=WAIT_S)
        assert (await l_sub.next_msg(timeout=WAIT_S)).data == b"from-quiet"
        # loud publishes after seeing quiet's message: quiet gets loud's
        # message, and nothing before it.
        await loud.publish("echo.x", b"from-loud")
        assert (await q_sub.next_msg(timeout=WAIT_S)).data == b"from-loud"
        assert (await l_sub.next_msg(timeout=WAIT_S)).data == b"from-loud"
        await quiet.flush(timeout=WAIT_S)
        assert quiet.stats["in_msgs"] == 1
        assert q_sub.pending_msgs == 0


# -------------------------------------------------------------- max payload


async def test_max_payload_refused_by_client(start_tern):
    """With --max-frame 1024, INFO announces max_payload 1024: nats-py
    publishes 1024 bytes (delivered) and refuses 1025 bytes itself with
    MaxPayloadError, the connection staying up."""
    tern = start_tern("--max-frame", "1024")
    async with clients() as c:
        nc = await c.connect(tern.nats_shard_url(0))
        assert nc.max_payload == 1024
        sub = await nc.subscribe("mp.x")
        await barrier(nc)
        await nc.publish("mp.x", b"y" * 1024)
        assert len((await sub.next_msg(timeout=WAIT_S)).data) == 1024
        with pytest.raises(nats.errors.MaxPayloadError):
            await nc.publish("mp.x", b"y" * 1025)
        await nc.flush(timeout=WAIT_S)
        assert nc.is_connected


@pytest.mark.parametrize(
    "op",
    [
        b"PUB mp.x 1025\r\n",
        b"HPUB mp.x 12 1025\r\n",
    ],
    ids=["PUB", "HPUB"],
)
def test_max_payload_violation_over_raw_socket(start_tern, raw, op):
    """A PUB/HPUB announcing more than max_payload (sent without its payload)
    gets `-ERR 'Maximum Payload Violation'` and the connection is closed, as
    nats-server does; other connections are unaffected."""
    tern = start_tern("--max-frame", "1024")
    r = raw(tern.nats_shard_addr[0])
    assert r.read_until(b"\r\n").startswith(b"INFO ")
    r.send(b'CONNECT {"verbose":false,"headers":true}\r\nPING\r\n')
    assert r.read_until(b"PONG\r\n") == b"PONG\r\n"
    r.send(op)
    assert r.read_to_eof() == b"-ERR 'Maximum Payload Violation'\r\n"
    other = raw(tern.nats_shard_addr[0])
    assert other.read_until(b"\r\n").startswith(b"INFO ")
    other.send(b"CONNECT {\"verbose\":false}\r\nPING\r\n")
    assert other.read_until(b"PONG\r\n") == b"PONG\r\n"


# ---------------------------------------------------------------- reconnect


@pytest.mark.timeout_s(60)
async def test_reconnect_after_restart(start_tern, restartable_port):
    """Stop tern while a nats-py client is connected, start a new tern on the
    same NATS port: the client reconnects by itself (reconnected_cb), re-sends
    its subscriptions, and a subscription made before the restart receives
    what another client publishes on the new tern."""
    port = restartable_port
    first = start_tern(nats_port=port)
    disconnected, reconnected = asyncio.Event(), asyncio.Event()

    async def on_disconnected():
        disconnected.set()

    async def on_reconnected():
        reconnected.set()

    async with clients() as c:
        nc = await c.connect(
            first.nats_url,
            allow_reconnect=True,
            reconnect_time_wait=0.1,
            max_reconnect_attempts=-1,
            disconnected_cb=on_disconnected,
            reconnected_cb=on_reconnected,
        )
        sub = await nc.subscribe("rc.x")
        await barrier(nc)
        await nc.publish("rc.x", b"before")
        assert (await sub.next_msg(timeout=WAIT_S)).data == b"before"

        first.stop()
        await asyncio.wait_for(disconnected.wait(), 10)
        second = start_tern(nats_port=port)
        assert second.nats_port == port
        await asyncio.wait_for(reconnected.wait(), 20)
        assert nc.is_connected

        pub_nc = await c.connect(second.nats_url)
        for i in range(3):
            await pub_nc.publish("rc.x", f"after{i}".encode())
        assert [m.data for m in await next_msgs(sub, 3)] == [b"after0", b"after1", b"after2"]


# ----------------------------------------------------------- cross-protocol


def line_client(raw, addr, subscribe=()):
    """A line-protocol client with its subscriptions in force (PING fence)."""
    r = raw(addr)
    for s in subscribe:
        r.send(f"SUB {s}\n".encode())
    r.send(b"PING\n")
    assert r.read_until(b"\n") == b"PONG\n"
    return r


async def test_line_subscriber_gets_nats_publishes(tern, raw):
    """A line client subscribed with `SUB` on shard 0 gets `MSG subj
    payload` for what nats-py publishes on shard 1, in order, with headers
    and reply subject dropped."""
    line = line_client(raw, tern.line_shard_addr[0], ["xp.*"])
    async with clients() as c:
        nc = await c.connect(tern.nats_shard_url(1))
        await nc.publish("xp.a", b"hello world")
        await nc.publish("xp.b", b"with headers", headers={"K": "V"})
        await nc.publish("xp.c", b"with reply", reply="xp.inbox")
        await barrier(nc)
    assert line.read_until(b"\n") == b"MSG xp.a hello world\n"
    assert line.read_until(b"\n") == b"MSG xp.b with headers\n"
    assert line.read_until(b"\n") == b"MSG xp.c with reply\n"


async def test_nats_subscriber_gets_line_publishes(tern, raw):
    """nats-py subscribed on shard 0 gets, in order, what a line client
    publishes with `PUB subj payload` on shard 1 (payload with spaces kept,
    empty payload as empty data)."""
    async with clients() as c:
        nc = await c.connect(tern.nats_shard_url(0))
        sub = await nc.subscribe("xl.>")
        await barrier(nc)
        line = line_client(raw, tern.line_shard_addr[1])
        line.send(b"PUB xl.a from the line\nPUB xl.b.c \nPUB xl.d last\n")
        got = await next_msgs(sub, 3)
        assert [(m.subject, m.data) for m in got] == [
            ("xl.a", b"from the line"),
            ("xl.b.c", b""),
            ("xl.d", b"last"),
        ]


async def test_payload_with_newline_not_delivered_to_line(tern, raw):
    """A NATS payload containing the line terminator cannot be framed for a
    line receiver: the line client does not get it (and no corrupted frame),
    while a NATS subscriber does; the next message reaches both."""
    line = line_client(raw, tern.line_shard_addr[0], ["nl.x"])
    async with clients() as c:
        sub_nc = await c.connect(tern.nats_shard_url(0))
        sub = await sub_nc.subscribe("nl.x")
        await barrier(sub_nc)
        pub_nc = await c.connect(tern.nats_shard_url(1))
        await pub_nc.publish("nl.x", b"two\nlines")
        await pub_nc.publish("nl.x", b"after")
        assert [m.data for m in await next_msgs(sub, 2)] == [b"two\nlines", b"after"]
    assert line.read_until(b"\n") == b"MSG nl.x after\n"


async def test_mixed_queue_group(tern, raw):
    """A line `SUB s g` and nats-py `subscribe(s, queue=g)` are members of one
    queue group: each of 60 messages goes to exactly one of them, and every
    member gets some."""
    n = 60
    lines = [line_client(raw, tern.line_shard_addr[i], ["mq.x grp", "mq.done"]) for i in (0, 1)]
    async with clients() as c:
        members = []
        for i in (0, 1):
            nc = await c.connect(tern.nats_shard_url(i))
            q = await nc.subscribe("mq.x", queue="grp")
            done = await nc.subscribe("mq.done")
            await barrier(nc)
            members.append((q, done))
        pub_nc = await c.connect(tern.nats_url)
        for i in range(n):
            await pub_nc.publish("mq.x", str(i).encode())
        await pub_nc.publish("mq.done", b"fence")
        got = []
        for q, done in members:
            assert (await done.next_msg(timeout=WAIT_S)).data == b"fence"
            mine = [(await q.next_msg(timeout=WAIT_S)).data for _ in range(q.pending_msgs)]
            assert mine, "a NATS member got none of the messages"
            got.extend(mine)
        for line in lines:
            mine = []
            while (frame := line.read_until(b"\n")) != b"MSG mq.done fence\n":
                assert frame.startswith(b"MSG mq.x "), frame
                mine.append(frame[len(b"MSG mq.x ") : -1])
            assert mine, "a line member got none of the messages"
            got.extend(mine)
        assert sorted(got, key=int) == [str(i).encode() for i in range(n)]
