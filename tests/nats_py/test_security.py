"""tern's authentication, permissions and TLS driven by an unmodified NATS
client, nats-py, and by raw sockets where a client library would not
misbehave on purpose.

Each test starts its own tern (two shards) with a config file written to
the test's temporary directory (`start_secure_tern` in conftest.py) and
`--metrics` on, so that every refusal is also checked in
`tern_auth_failures_total{reason}` / `tern_permission_denials_total`.
Certificates are made by the test itself with trustme (`pki`); no key is in
the repository. After each refusal another, authenticated client still
round-trips a request across the shards: a refused client harms nobody.

Nothing here measures time: waits are bounded (a relay that stops answering
fails the test), absence is checked behind a fence (see test_nats_py.py),
and the only durations set are tern's own timeouts (300 ms) for the cases
that are about those timeouts.
"""

import bcrypt
import nats
import nats.errors
import pytest

from test_nats_py import WAIT_S, barrier, clients, fence, next_msgs

AUTH_FAILURES = "tern_auth_failures_total"
DENIALS = "tern_permission_denials_total"

TOKEN = "s3cret-token"
ALICE_PASSWORD = "correct horse battery staple"
BOB_PASSWORD = "pw-bob"


def hashed(password: str) -> str:
    """A bcrypt hash of `password` at cost 10 (nats-server's `$2a$`-style
    format; Python's bcrypt writes `$2b$`, which tern reads as well)."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(10)).decode()


def token_config(timeout: str = "") -> str:
    lines = ["[authorization]", f'token = "{TOKEN}"']
    if timeout:
        lines.append(f'timeout = "{timeout}"')
    return "\n".join(lines) + "\n"


def users_config(timeout: str = "") -> str:
    """Users for every test here:

    - alice: bcrypt password, every right;
    - bob: plain-text password; may publish under orders.> except
      orders.secret (deny wins), may subscribe to inboxes, prices.<one
      token> and fence;
    - carol: plain text; may subscribe to prices.> except prices.secret;
    - qa, qb: members of one queue group; qa may subscribe to work, qb may
      not (both may subscribe to fence);
    - dave: no password, only a client certificate naming him can log in
      (--tls-map-users); may publish to dave.> only.
    """
    head = "[authorization]\n" + (f'timeout = "{timeout}"\n' if timeout else "")
    return head + f"""
[[authorization.users]]
user = "alice"
password = "{hashed(ALICE_PASSWORD)}"

[[authorization.users]]
user = "bob"
password = "{BOB_PASSWORD}"
[authorization.users.permissions]
publish = {{ allow = ["orders.>"], deny = ["orders.secret"] }}
subscribe = ["_INBOX.>", "prices.*", "fence"]

[[authorization.users]]
user = "carol"
password = "pw-carol"
[authorization.users.permissions]
subscribe = {{ allow = ["prices.>", "fence"], deny = ["prices.secret"] }}

[[authorization.users]]
user = "qa"
password = "pw-qa"
[authorization.users.permissions]
subscribe = ["work", "fence"]

[[authorization.users]]
user = "qb"
password = "pw-qb"
[authorization.users.permissions]
subscribe = {{ allow = [">"], deny = ["work"] }}

[[authorization.users]]
user = "dave"
[authorization.users.permissions]
publish = ["dave.>"]
"""


ALICE = {"user": "alice", "password": ALICE_PASSWORD}
BOB = {"user": "bob", "password": BOB_PASSWORD}


def is_auth_violation(exc: BaseException) -> bool:
    """nats-py's answer to `-ERR 'Authorization Violation'`: during connect
    2.16.0 raises nats.errors.Error with the server's text; later ones may
    raise AuthorizationError."""
    return isinstance(exc, nats.errors.AuthorizationError) or (
        isinstance(exc, nats.errors.Error) and "Authorization Violation" in str(exc)
    )


async def assert_refused(url: str, **kw) -> BaseException:
    """nats-py's connect to `url` with `kw` fails; returns the exception."""

    async def on_error(e):
        pass  # the exception raised is what is checked

    with pytest.raises((nats.errors.Error, OSError)) as info:
        nc = await nats.connect(url, error_cb=on_error, allow_reconnect=False, connect_timeout=WAIT_S, **kw)
        # Not reached when refused; a client that got in is closed.
        await nc.close()
    return info.value


async def assert_serving(tern, c, tls=None, **creds):
    """Another client with good credentials still gets in, and a request
    crosses the shards: a responder on shard 0, a requester on shard 1."""
    kw = dict(creds)
    if tls is not None:
        kw["tls"] = tls
    responder = await c.connect(tern.nats_shard_url(0), **kw)
    requester = await c.connect(tern.nats_shard_url(1), **kw)

    async def answer(msg):
        await responder.publish(msg.reply, b"re: " + msg.data)

    sub = await responder.subscribe("svc.echo", cb=answer)
    await barrier(responder)
    reply = await requester.request("svc.echo", b"ping", timeout=WAIT_S)
    assert reply.data == b"re: ping"
    await sub.unsubscribe()


def errors_seen(c) -> list:
    """The errors nats-py's error callback got, as text. nats-py lowercases
    the server's -ERR text before it makes its error of it (the exact bytes
    are checked over a raw socket in test_permission_errors_on_the_wire)."""
    return [str(e) for e in c.errors]


def violation(text: str) -> str:
    """The text of nats-py's error for tern's `-ERR '<text>'`."""
    return "nats: " + text.lower()


def read_info(r) -> bytes:
    info = r.read_until(b"\r\n")
    assert info.startswith(b"INFO {"), info
    return info


# ------------------------------------------------------------- authentication


async def test_token(start_secure_tern):
    """A client with the token gets in on every NATS listener; INFO says
    auth_required; messages cross the shards."""
    tern = start_secure_tern(token_config())
    async with clients() as c:
        nc = await c.connect(tern.nats_url, token=TOKEN)
        assert nc._server_info["auth_required"] is True
        await nc.flush(timeout=WAIT_S)
        await assert_serving(tern, c, token=TOKEN)
        assert c.errors == []
    assert tern.counter(AUTH_FAILURES) == 0


async def test_user_password_bcrypt_and_plain(start_secure_tern):
    """alice (bcrypt-hashed password) and bob (plain text) log in with
    user and password; alice's request is answered across the shards, and
    bob, who may publish to orders.>, reaches alice's subscription."""
    tern = start_secure_tern(users_config())
    async with clients() as c:
        await assert_serving(tern, c, **ALICE)
        alice = await c.connect(tern.nats_shard_url(0), **ALICE)
        bob = await c.connect(tern.nats_shard_url(1), **BOB)
        sub = await alice.subscribe("orders.new")
        await barrier(alice)
        await bob.publish("orders.new", b"o1")
        assert (await sub.next_msg(timeout=WAIT_S)).data == b"o1"
        assert c.errors == []
    assert tern.counter(AUTH_FAILURES) == 0


async def test_wrong_password_and_unknown_user(start_secure_tern):
    """A wrong password (bcrypt and plain) and a user nobody configured are
    each answered -ERR 'Authorization Violation' and closed; nats-py raises
    its authorization error; tern counts bad_password twice and
    unknown_user once; alice still gets in afterwards."""
    tern = start_secure_tern(users_config())
    e = await assert_refused(tern.nats_url, user="alice", password="wrong")
    assert is_auth_violation(e), repr(e)
    e = await assert_refused(tern.nats_shard_url(1), user="bob", password="pw-alice")
    assert is_auth_violation(e), repr(e)
    e = await assert_refused(tern.nats_shard_url(0), user="mallory", password=ALICE_PASSWORD)
    assert is_auth_violation(e), repr(e)
    tern.wait_counter(AUTH_FAILURES, 2, reason="bad_password")
    tern.wait_counter(AUTH_FAILURES, 1, reason="unknown_user")
    async with clients() as c:
        await assert_serving(tern, c, **ALICE)


async def test_wrong_token(start_secure_tern):
    """A wrong token, and user/password where a token is configured, are
    refused and counted bad_token; the right token still works."""
    tern = start_secure_tern(token_config())
    e = await assert_refused(tern.nats_url, token="not-it")
    assert is_auth_violation(e), repr(e)
    e = await assert_refused(tern.nats_url, user="alice", password=TOKEN)
    assert is_auth_violation(e), repr(e)
    tern.wait_counter(AUTH_FAILURES, 2, reason="bad_token")
    async with clients() as c:
        await assert_serving(tern, c, token=TOKEN)


@pytest.mark.parametrize("config", ["token", "users"])
async def test_no_credentials(start_secure_tern, config):
    """A client that gives no credentials at all is refused and counted
    no_credentials, with a token or with users configured."""
    tern = start_secure_tern(token_config() if config == "token" else users_config())
    e = await assert_refused(tern.nats_url)
    assert is_auth_violation(e), repr(e)
    tern.wait_counter(AUTH_FAILURES, 1, reason="no_credentials")
    async with clients() as c:
        if config == "token":
            await assert_serving(tern, c, token=TOKEN)
        else:
            await assert_serving(tern, c, **ALICE)


async def test_operation_before_connect(start_secure_tern, raw):
    """Over a raw socket: SUB, PUB or PING before CONNECT is an
    Authorization Violation and the connection is closed (nats-server does
    the same); it is counted no_credentials, and a client with the token
    still gets in."""
    tern = start_secure_tern(token_config())
    for op in (b"SUB x 1\r\n", b"PUB x 1\r\na\r\n", b"PING\r\n"):
        r = raw(tern.nats_addr)
        info = read_info(r)
        assert b'"auth_required":true' in info
        r.send(op)
        assert r.read_to_eof() == b"-ERR 'Authorization Violation'\r\n", op
    tern.wait_counter(AUTH_FAILURES, 3, reason="no_credentials")
    async with clients() as c:
        await assert_serving(tern, c, token=TOKEN)


def test_connect_with_bad_token_over_raw_socket(start_secure_tern, raw):
    """The exact bytes: CONNECT with a wrong auth_token gets
    -ERR 'Authorization Violation' and the connection closes; the right
    token gets PONG for its PING."""
    tern = start_secure_tern(token_config())
    r = raw(tern.nats_addr)
    read_info(r)
    r.send(b'CONNECT {"auth_token":"nope","verbose":false}\r\nPING\r\n')
    assert r.read_to_eof() == b"-ERR 'Authorization Violation'\r\n"
    r = raw(tern.nats_addr)
    read_info(r)
    r.send(b'CONNECT {"auth_token":"' + TOKEN.encode() + b'","verbose":false}\r\nPING\r\n')
    assert r.read_until(b"\r\n") == b"PONG\r\n"
    tern.wait_counter(AUTH_FAILURES, 1, reason="bad_token")


async def test_authentication_timeout(start_secure_tern, raw):
    """A client that never sends CONNECT is sent
    -ERR 'Authentication Timeout' and closed once the configured timeout
    (300 ms) has passed; counted timeout. A client that does send CONNECT
    in time is not affected."""
    tern = start_secure_tern(users_config(timeout="300ms"))
    silent = [raw(addr) for addr in (tern.nats_shard_addr[0], tern.nats_shard_addr[1])]
    for r in silent:
        read_info(r)
    for r in silent:
        assert r.read_to_eof() == b"-ERR 'Authentication Timeout'\r\n"
    tern.wait_counter(AUTH_FAILURES, 2, reason="timeout")
    async with clients() as c:
        await assert_serving(tern, c, **ALICE)
    assert tern.counter(AUTH_FAILURES) == 2


# ------------------------------------------------------------------------ TLS


async def test_tls_with_user_password(start_secure_tern, pki):
    """With --tls-cert/--tls-key, INFO (in clear text) says tls_required,
    nats-py upgrades with its ssl context (verifying the relay's certificate
    against the test CA, for 127.0.0.1 and, with tls_hostname, for
    localhost), logs in, and messages cross the shards."""
    tern = start_secure_tern(users_config(), *pki.flags())
    ctx = pki.client_context()
    async with clients() as c:
        nc = await c.connect(tern.nats_url, tls=ctx, tls_hostname="localhost", **ALICE)
        assert nc._server_info["tls_required"] is True
        assert nc._server_info["auth_required"] is True
        await nc.flush(timeout=WAIT_S)
        await assert_serving(tern, c, tls=ctx, **ALICE)
        assert c.errors == []
    assert tern.counter(AUTH_FAILURES) == 0


async def test_tls_handshake_first(start_secure_tern, pki):
    """--nats-tls-first: the handshake comes before INFO (nats-server's
    handshake_first); nats-py's tls_handshake_first connects and works."""
    tern = start_secure_tern(token_config(), *pki.flags("--nats-tls-first"))
    ctx = pki.client_context()
    async with clients() as c:
        nc = await c.connect(tern.nats_url, tls=ctx, tls_handshake_first=True, token=TOKEN)
        assert nc._server_info["tls_required"] is True
        await assert_serving(tern, c, tls=ctx, tls_handshake_first=True, token=TOKEN)
    assert tern.counter(AUTH_FAILURES) == 0


async def test_wrong_password_over_tls(start_secure_tern, pki):
    """Authentication after the handshake refuses a wrong password just as
    in clear text (-ERR 'Authorization Violation' inside TLS)."""
    tern = start_secure_tern(users_config(), *pki.flags())
    ctx = pki.client_context()
    e = await assert_refused(tern.nats_url, tls=ctx, user="alice", password="wrong")
    assert is_auth_violation(e), repr(e)
    tern.wait_counter(AUTH_FAILURES, 1, reason="bad_password")
    async with clients() as c:
        await assert_serving(tern, c, tls=ctx, **ALICE)


async def test_plain_text_to_tls_ports(start_secure_tern, pki, raw):
    """Clear text where TLS is due: on the NATS listener a CONNECT after the
    clear-text INFO, on the line listener a frame from the first byte;
    both connections are closed without a protocol answer, and counted
    tls_handshake. TLS clients are not affected."""
    tern = start_secure_tern(users_config(), *pki.flags())
    r = raw(tern.nats_addr)
    info = read_info(r)
    assert b'"tls_required":true' in info
    r.send(b'CONNECT {"user":"alice","pass":"x"}\r\nPING\r\n')
    rest = r.read_to_eof()
    assert b"PONG" not in rest and b"-ERR" not in rest, rest
    line = raw(tern.line_addr)
    line.send(b"PING\n")
    rest = line.read_to_eof()
    assert b"PONG" not in rest, rest
    tern.wait_counter(AUTH_FAILURES, 2, reason="tls_handshake")
    async with clients() as c:
        await assert_serving(tern, c, tls=pki.client_context(), **ALICE)


async def test_client_certificate_required(start_secure_tern, pki):
    """--tls-client-ca: a client certificate from another CA, and no
    certificate at all, fail the handshake (counted tls_handshake); a
    certificate from the configured CA gets in (and still logs in with its
    password)."""
    tern = start_secure_tern(users_config(), *pki.flags("--tls-client-ca", str(pki.ca_pem)))
    await assert_refused(tern.nats_url, tls=pki.client_context("alice", wrong_ca=True), **ALICE)
    await assert_refused(tern.nats_url, tls=pki.client_context(), **ALICE)
    tern.wait_counter(AUTH_FAILURES, 2, reason="tls_handshake")
    async with clients() as c:
        await assert_serving(tern, c, tls=pki.client_context("client.test"), **ALICE)
    assert tern.counter(AUTH_FAILURES) == 2


async def test_handshake_that_never_finishes(start_secure_tern, pki, raw):
    """--tls-timeout 300ms: a NATS client that reads INFO and never starts
    its handshake, and a line client that sends half a TLS record header,
    are closed and counted tls_timeout; a TLS client still gets in."""
    tern = start_secure_tern(users_config(), *pki.flags("--tls-timeout", "300ms"))
    nats_silent = raw(tern.nats_shard_addr[0])
    read_info(nats_silent)
    line_slow = raw(tern.line_shard_addr[1])
    line_slow.send(b"\x16\x03")  # the start of a handshake record, no more
    assert nats_silent.read_to_eof() == b""
    assert line_slow.read_to_eof() == b""
    tern.wait_counter(AUTH_FAILURES, 2, reason="tls_timeout")
    async with clients() as c:
        await assert_serving(tern, c, tls=pki.client_context(), **ALICE)


async def test_certificate_maps_to_user(start_secure_tern, pki):
    """--tls-map-users: a client certificate named dave (a user with no
    password) logs in as dave without credentials, and dave's permissions
    apply: publishing to dave.x passes, to other.x is a Permissions
    Violation."""
    tern = start_secure_tern(
        users_config(), *pki.flags("--tls-client-ca", str(pki.ca_pem), "--tls-map-users")
    )
    async with clients() as c:
        watcher = await c.connect(tern.nats_shard_url(1), tls=pki.client_context("watcher"), **ALICE)
        subs = [await watcher.subscribe(s) for s in ("dave.x", "other.x", "dave.done")]
        await barrier(watcher)
        dave = await c.connect(tern.nats_shard_url(0), tls=pki.client_context("dave"))
        await dave.publish("dave.x", b"1")
        await dave.publish("other.x", b"2")
        await barrier(dave)
        await fence(dave, subs[2], "dave.done")
        assert [m.data for m in await next_msgs(subs[0], 1)] == [b"1"]
        assert subs[1].pending_msgs == 0
        assert errors_seen(c) == [violation('Permissions Violation for Publish to "other.x"')]
    assert tern.counter(AUTH_FAILURES) == 0


# ---------------------------------------------------------------- permissions


async def test_publish_allowed_denied_and_deny_wins(start_secure_tern):
    """bob may publish under orders.> but not orders.secret: orders.new
    passes; orders.secret (deny wins over the allow) and stock.x (outside
    the allow list) are each answered -ERR 'Permissions Violation for
    Publish to "<subject>"' (nats-py's error callback gets it), reach
    nobody, and leave the connection open; tern counts two denials."""
    tern = start_secure_tern(users_config())
    async with clients() as c:
        alice = await c.connect(tern.nats_shard_url(0), **ALICE)
        subs = {s: await alice.subscribe(s) for s in ("orders.new", "orders.secret", "stock.x", "orders.done")}
        await barrier(alice)
        bob = await c.connect(tern.nats_shard_url(1), **BOB)
        for s in ("orders.new", "orders.secret", "stock.x"):
            await bob.publish(s, s.encode())
        await barrier(bob)
        assert errors_seen(c) == [
            violation('Permissions Violation for Publish to "orders.secret"'),
            violation('Permissions Violation for Publish to "stock.x"'),
        ]
        assert bob.is_connected
        await fence(bob, subs["orders.done"], "orders.done")
        assert (await subs["orders.new"].next_msg(timeout=WAIT_S)).data == b"orders.new"
        assert subs["orders.secret"].pending_msgs == 0
        assert subs["stock.x"].pending_msgs == 0
        # Still open and still allowed what it was allowed.
        await bob.publish("orders.new", b"again")
        assert (await subs["orders.new"].next_msg(timeout=WAIT_S)).data == b"again"
    assert tern.counter(DENIALS) == 2


async def test_subscribe_permissions_and_wildcards(start_secure_tern):
    """bob may subscribe to prices.* (one token), fence and _INBOX.>:
    prices.eu and the wildcard prices.* itself are allowed; prices.eu.x
    (two tokens), prices.> (more than `*` covers), `>` and stock.x are
    each answered -ERR 'Permissions Violation for Subscription to
    "<subject>"' and never receive.

    nats-server 2.10 matches a subscription's own wildcards as plain
    tokens and so lets prices.> through (it then receives prices.eu.x);
    tern requires an allow pattern that covers the whole subscription
    (docs/deploy.md, "Permissions"). bob's requests (replies on an
    _INBOX.> subscription) work."""
    tern = start_secure_tern(users_config())
    async with clients() as c:
        bob = await c.connect(tern.nats_shard_url(0), **BOB)
        refused = ("prices.eu.x", "prices.>", ">", "stock.x")
        ok = [await bob.subscribe(s) for s in ("prices.eu", "prices.*")]
        bad = [await bob.subscribe(s) for s in refused]
        done = await bob.subscribe("fence")
        await barrier(bob)
        assert errors_seen(c) == [violation(f'Permissions Violation for Subscription to "{s}"') for s in refused]
        alice = await c.connect(tern.nats_shard_url(1), **ALICE)
        for s in ("prices.eu", "prices.eu.x", "stock.x"):
            await alice.publish(s, s.encode())
        await fence(alice, done, "fence")
        assert [m.subject for m in await next_msgs(ok[0], 1)] == ["prices.eu"]
        assert [m.subject for m in await next_msgs(ok[1], 1)] == ["prices.eu"]
        assert [s.pending_msgs for s in ok + bad] == [0] * 6
        assert bob.stats["in_msgs"] == 1 + 1 + 1  # and the fence

        # Request/reply: bob's inbox subscription is within _INBOX.>.
        async def answer(msg):
            await alice.publish(msg.reply, b"filled")

        await alice.subscribe("orders.place", cb=answer)
        await barrier(alice)
        assert (await bob.request("orders.place", b"buy", timeout=WAIT_S)).data == b"filled"
        assert len(c.errors) == 4
    assert tern.counter(DENIALS) == 4


async def test_subscribe_deny_filters_wildcard_deliveries(start_secure_tern):
    """carol may subscribe to prices.> except prices.secret: SUB
    prices.secret is refused, while SUB prices.* is allowed (its `*` is a
    token, which the deny pattern does not name, as in nats-server) but
    is never delivered prices.secret."""
    tern = start_secure_tern(users_config())
    async with clients() as c:
        carol = await c.connect(tern.nats_shard_url(0), user="carol", password="pw-carol")
        star = await carol.subscribe("prices.*")
        secret = await carol.subscribe("prices.secret")
        done = await carol.subscribe("fence")
        await barrier(carol)
        assert errors_seen(c) == [violation('Permissions Violation for Subscription to "prices.secret"')]
        alice = await c.connect(tern.nats_shard_url(1), **ALICE)
        for s in ("prices.secret", "prices.eu", "prices.secret", "prices.us"):
            await alice.publish(s, s.encode())
        await fence(alice, done, "fence")
        assert [m.subject for m in await next_msgs(star, 2)] == ["prices.eu", "prices.us"]
        assert (star.pending_msgs, secret.pending_msgs) == (0, 0)


async def test_queue_group_members_with_different_rights(start_secure_tern):
    """qa and qb join queue group "workers" on subject work, on different
    shards; qb may not subscribe to work: its SUB is answered -ERR
    'Permissions Violation for Subscription to "work" using queue
    "workers"', it never receives a message, and qa gets every one of 50."""
    n = 50
    tern = start_secure_tern(users_config())
    async with clients() as c:
        qa = await c.connect(tern.nats_shard_url(0), user="qa", password="pw-qa")
        qb = await c.connect(tern.nats_shard_url(1), user="qb", password="pw-qb")
        members = []
        for nc in (qa, qb):
            q = await nc.subscribe("work", queue="workers")
            done = await nc.subscribe("fence")
            await barrier(nc)
            members.append((q, done))
        assert errors_seen(c) == [
            violation('Permissions Violation for Subscription to "work" using queue "workers"')
        ]
        pub = await c.connect(tern.nats_url, **ALICE)
        for i in range(n):
            await pub.publish("work", str(i).encode())
        await pub.publish("fence", b"fence")
        (qa_work, qa_done), (qb_work, qb_done) = members
        assert (await qa_done.next_msg(timeout=WAIT_S)).data == b"fence"
        assert (await qb_done.next_msg(timeout=WAIT_S)).data == b"fence"
        assert [m.data for m in await next_msgs(qa_work, n)] == [str(i).encode() for i in range(n)]
        assert qb_work.pending_msgs == 0
        assert qb.stats["in_msgs"] == 1  # the fence only
    assert tern.counter(DENIALS) == 1


def test_permission_errors_on_the_wire(start_secure_tern, raw):
    """The exact bytes of the permission errors, over a raw socket logged
    in as bob: a denied PUB, SUB and queue SUB are each answered
    -ERR 'Permissions Violation for ...' and the connection stays open
    (its PING is answered); an allowed SUB and PUB are answered nothing."""
    tern = start_secure_tern(users_config())
    r = raw(tern.nats_addr)
    read_info(r)
    r.send(b'CONNECT {"user":"bob","pass":"pw-bob","verbose":false}\r\nPING\r\n')
    assert r.read_until(b"\r\n") == b"PONG\r\n"
    r.send(b"PUB orders.secret 1\r\nx\r\nPING\r\n")
    assert r.read_until(b"PONG\r\n") == b"-ERR 'Permissions Violation for Publish to \"orders.secret\"'\r\nPONG\r\n"
    r.send(b"SUB stock.x 1\r\nPING\r\n")
    assert r.read_until(b"PONG\r\n") == b"-ERR 'Permissions Violation for Subscription to \"stock.x\"'\r\nPONG\r\n"
    r.send(b"SUB stock.x workers 2\r\nPING\r\n")
    assert (
        r.read_until(b"PONG\r\n")
        == b"-ERR 'Permissions Violation for Subscription to \"stock.x\" using queue \"workers\"'\r\nPONG\r\n"
    )
    r.send(b"SUB prices.eu 3\r\nPUB orders.new 1\r\nx\r\nPING\r\n")
    assert r.read_until(b"PONG\r\n") == b"PONG\r\n"
    tern.wait_counter(DENIALS, 3)
