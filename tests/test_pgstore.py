"""
The queue of commands for offline devices in PostgreSQL (issue 15.4), against a real
server that this test session starts itself: C{initdb} into a temporary directory and
C{postgres} on a free loopback port, stopped and removed at the end of the session.
The store tests of tests/test_queue.py run against it too (their C{queueAt} fixture).
"""

import glob
import os
import pwd
import random
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict
import pytest
import pytest_twisted
from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred, DeferredList, gatherResults
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.logger import Logger

from devicehub import CommandStoreFailed, Demand
from devicehub.broker.service import BrokerService
from devicehub.broker.store.pgconnection import conninfo, migrate
from devicehub.broker.store.postgres import _DEVICE_LOCKS, PostgresCommandStore
from devicehub.broker.store.schema import MIGRATIONS
from devicehub.broker.store import MAX_ATTEMPTS, CommandStore, NotClaimed, StoreFailed, isPostgres, openStore
from devicehub.broker.settings import BrokerSettings
from devicehub.common.metrics import Metrics

from .support import LOCAL, Hub, connect, eventually, free_ports, pause

NOW = 1000.0


def _binaries() -> str:
    """The directory of PostgreSQL's server programs: Debian's newest, else the PATH's."""

    def version(path: str) -> tuple:
        return tuple(int(part) for part in re.findall(r"\d+", path))

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    if shutil.which("initdb"):
        candidates.append(os.path.dirname(os.path.realpath(shutil.which("initdb"))))
    for directory in candidates:
        if all(os.access(os.path.join(directory, name), os.X_OK) for name in ("initdb", "postgres")):
            return directory
    pytest.fail("PostgreSQL's initdb and postgres are not installed (Debian: apt-get install -y postgresql)")


class PostgresServer:
    """
    A PostgreSQL server of the session's own, trusting local connections. As root (which
    initdb refuses) it runs as the user C{postgres} (Debian's package makes it), else
    C{nobody}, in a directory under /dev/shm that user can reach.
    """

    _shared: "PostgresServer | None" = None
    _users = 0

    @classmethod
    def acquire(cls) -> "PostgresServer":
        """The session's server, started on first use (one per session, whichever modules ask)."""
        if cls._shared is None:
            cls._shared = cls()
        cls._users += 1
        return cls._shared

    @classmethod
    def release(cls) -> None:
        cls._users -= 1
        if cls._users == 0 and cls._shared is not None:
            cls._shared.stop()
            cls._shared = None

    def __init__(self) -> None:
        bin = _binaries()
        account = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                try:
                    account = pwd.getpwnam(name)
                    break
                except KeyError:
                    continue
            base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else "/tmp"
            self.directory = tempfile.mkdtemp(prefix="devicehub-pg-", dir=base)
            os.chown(self.directory, account.pw_uid, account.pw_gid)
        else:
            self.directory = tempfile.mkdtemp(prefix="devicehub-pg-")
        user = {} if account is None else {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
        data = os.path.join(self.directory, "data")
        self.process = None
        try:
            subprocess.run(
                [os.path.join(bin, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
                 "--locale=C", "--no-sync", "--no-instructions"],
                check=True, capture_output=True, cwd=self.directory, env=environ, **user,
            )
            self.port = free_ports(1)[0]
            self.log = os.path.join(self.directory, "postgres.log")
            with open(self.log, "wb") as log:
                if account is not None:
                    os.chown(self.log, account.pw_uid, account.pw_gid)
                self.process = subprocess.Popen(
                    [os.path.join(bin, "postgres"), "-D", data, "-p", str(self.port), "-k", self.directory,
                     "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
                     "-c", "full_page_writes=off", "-c", "max_connections=200"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.directory, env=environ, **user,
                )
            self.admin = self._connect("postgres")
        except BaseException as e:
            output = getattr(e, "stderr", b"") or b""
            self.stop()
            raise RuntimeError(f"cannot start PostgreSQL: {e} {output.decode(errors='replace')}") from None
        self._databases = 0

    def _connect(self, database: str, timeout: float = 30.0) -> psycopg.Connection:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return psycopg.connect(self.url(database), autocommit=True, connect_timeout=2)
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start: {Path(self.log).read_text()[-2000:]}") from None
                time.sleep(0.05)

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        """A new, empty database; its URL."""
        self._databases += 1
        name = f"t{self._databases}"
        self.admin.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def execute(self, statement: str, params=None) -> list:
        cursor = self.admin.execute(statement, params)
        return cursor.fetchall() if cursor.description else []

    def refuse(self, url: str) -> None:
        """The database at C{url} goes away: its connections are cut, new ones refused."""
        name = url.rsplit("/", 1)[1]
        self.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        self.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))

    def accept(self, url: str) -> None:
        self.execute(f"ALTER DATABASE {url.rsplit('/', 1)[1]} ALLOW_CONNECTIONS true")

    def stop(self) -> None:
        if getattr(self, "admin", None) is not None:
            self.admin.close()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres():
    server = PostgresServer.acquire()
    yield server
    PostgresServer.release()


@pytest.fixture
def pgdatabase(postgres) -> str:
    """The URL of a new database on the session's server."""
    return postgres.database()


@pytest.fixture(params=["sqlite", "postgresql"])
def queueAt(request, tmp_path) -> str:
    """C{--store} for each backend: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "queue.sqlite3")
    return request.getfixturevalue("pgdatabase")


def makeStore(location: str, **options):
    """A store of C{location}'s kind, not opened yet."""
    if isPostgres(location):
        return PostgresCommandStore(location, reactor, **options)
    return CommandStore(location, reactor)


@pytest_twisted.async_yield_fixture
async def stores(pgdatabase):
    """Open stores on one database, as two brokers would have: C{await stores()} makes one."""
    made = []

    async def make(**options):
        store = PostgresCommandStore(pgdatabase, reactor, **options)
        made.append(store)
        await store.open(NOW)
        return store

    yield make
    for store in made:
        store.close()


def schema(postgres, url: str) -> list[int]:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(postgres.url(name)) as connection:
        return [version for (version,) in connection.execute("SELECT version FROM devicehub_schema ORDER BY version")]


# -- claims: one broker at a time per device


@pytest_twisted.ensureDeferred
async def test_two_brokers_at_one_login_one_gets_the_queue(stores):
    one, two = await stores(), await stores()
    ids = [await one.add("dev", f"0x1{n}", n, 100, False, NOW) for n in range(3)]
    assert one.mayHaveWaiting("dev") and two.mayHaveWaiting("other")  # a login always asks: any broker may add
    # Both brokers hear of the login at once; one gets the queue, in order, the other nothing.
    results = await gatherResults([one.due("dev", NOW), two.due("dev", NOW)])
    assert sorted(results, key=len) == [[], [await one.get(id) for id in ids]]
    winner, loser = (one, two) if results[0] else (two, one)
    with pytest.raises(NotClaimed, match="is delivering to dev"):
        await loser.sending(ids[0], NOW)
    assert loser.healthy  # the store works: only that broker must not send it
    assert await winner.sending(ids[0], NOW) is True
    assert await loser.due("dev", NOW + 1) == []  # still being delivered
    await winner.delivered(ids[0], True, NOW + 1)
    assert await winner.sending(ids[1], NOW + 2) is True
    await winner.delivered(ids[1], False, NOW + 3)  # not acked: the broker stops, its claims go
    commands = await loser.due("dev", NOW + 4)  # the next login, on the other broker
    assert [(c["id"], c["attempts"]) for c in commands] == [(ids[1], 1), (ids[2], 0)]
    with pytest.raises(NotClaimed):
        await winner.sending(ids[1], NOW + 4)
    assert (await loser.get(ids[0]))["state"] == "acked" and loser.depth == winner.depth == 2


@pytest_twisted.ensureDeferred
async def test_two_brokers_never_deliver_one_command_at_the_same_time(stores):
    """Both brokers deliver at every login, as a broker does (Broker._deliverDue), many times over."""
    brokers = [await stores(), await stores()]
    randomly = random.Random(15)
    devices = [f"dev{n}" for n in range(4)]
    queued = {imei: [] for imei in devices}
    for n in range(24):
        imei = randomly.choice(devices)
        queued[imei].append(await randomly.choice(brokers).add(imei, f"0x{n}", n, 1000, False, NOW))
    inFlight: dict[str, str] = {}  # imei -> the command being delivered to it
    sent: list[str] = []
    acked: dict[str, list[str]] = {imei: [] for imei in devices}

    async def deliver(broker, imei):
        for command in await broker.due(imei, NOW):
            try:
                await broker.sending(command["id"], NOW)
            except NotClaimed:
                return
            assert imei not in inFlight, f"{command['id']} sent while {inFlight.get(imei)} is in flight"
            inFlight[imei] = command["id"]
            sent.append(command["id"])
            await deferLater(reactor, randomly.random() / 1000, lambda: None)
            ok = randomly.random() < 0.7
            del inFlight[imei]
            await broker.delivered(command["id"], ok, NOW)
            if not ok:
                return
            acked[imei].append(command["id"])

    for login in range(12):
        await DeferredList([Deferred.fromCoroutine(deliver(broker, imei)) for imei in devices for broker in brokers],
                           fireOnOneErrback=True, consumeErrors=True)
    records = {id: await brokers[0].get(id) for ids in queued.values() for id in ids}
    assert {id: records[id]["state"] for id in records} == {id: "acked" for id in records}
    for imei, ids in queued.items():
        assert acked[imei] == ids  # each acked once, oldest first
    assert sorted(sent) == sorted(id for id, record in records.items() for _ in range(record["attempts"]))
    await brokers[0].expire(NOW)  # its depth is as of its last change or sweep
    assert brokers[0].depth == 0


@pytest_twisted.ensureDeferred
async def test_a_dead_brokers_claim_is_taken_over_after_it_expires(stores):
    dead = await stores(claimTtl=30)
    alive = await stores(claimTtl=30)
    first = await alive.add("dev", "0x10", None, 1000, False, NOW)
    second = await alive.add("dev", "0x11", None, 1000, False, NOW)
    assert len(await dead.due("dev", NOW)) == 2
    await dead.sending(first, NOW)
    dead.close()  # killed while the device had the command: no outcome recorded, claims held
    assert await alive.due("dev", NOW + 29) == []  # its claim still holds
    assert (await alive.get(first))["state"] == "sent"
    commands = await alive.due("dev", NOW + 31)  # expired: the next login delivers it again
    assert [(c["id"], c["state"], c["attempts"]) for c in commands] == [(first, "queued", 1), (second, "queued", 0)]
    await alive.sending(first, NOW + 32)
    # The dead broker was only stalled, and comes back: its late outcome changes nothing.
    late = await stores(owner=dead.owner, claimTtl=30)
    await late.delivered(first, False, NOW + 33)
    with pytest.raises(NotClaimed, match="is delivering to dev"):
        await late.sending(second, NOW + 33)
    assert (await alive.get(first))["state"] == "sent"
    await alive.delivered(first, True, NOW + 34)
    assert (await alive.get(first))["state"] == "acked" and (await alive.get(first))["attempts"] == 2


@pytest_twisted.ensureDeferred
async def test_the_sweep_queues_again_what_a_dead_broker_had_sent(stores):
    dead, alive = await stores(claimTtl=30), await stores(claimTtl=30)
    id = await dead.add("dev", "0x10", None, 1000, False, NOW)
    expiring = await dead.add("other", "0x10", None, 10, False, NOW)
    await dead.due("dev", NOW)
    await dead.sending(id, NOW)
    await dead.due("other", NOW)  # claimed: a live broker delivers it even as its ttl passes
    dead.close()
    assert await alive.expire(NOW + 20) == 0 and (await alive.get(id))["state"] == "sent"
    assert await alive.expire(NOW + 31) == 1  # the claims expired: queued again, and expired
    assert (await alive.get(id))["state"] == "queued" and (await alive.get(expiring))["state"] == "expired"
    assert alive.depth == 1
    reopened = await stores()  # a broker's start does the same, and no more
    assert reopened.depth == 1


@pytest_twisted.ensureDeferred
async def test_a_cancelled_claimed_command_is_not_sent(stores):
    broker = await stores()
    first = await broker.add("dev", "0x10", None, 1000, False, NOW)
    second = await broker.add("dev", "0x11", None, 1000, False, NOW)
    await broker.due("dev", NOW)
    assert (await broker.cancel(first, NOW))["state"] == "cancelled"  # between due and sending
    with pytest.raises(NotClaimed, match="it is cancelled"):
        await broker.sending(first, NOW)
    other = await stores()
    assert [c["id"] for c in await other.due("dev", NOW)] == [second]  # released for the next login


# -- the schema


@pytest_twisted.ensureDeferred
async def test_migrations_are_versioned_idempotent_and_safe_when_brokers_start_together(postgres, pgdatabase):
    made = [PostgresCommandStore(pgdatabase, reactor) for _ in range(6)]
    try:
        # At once, on threads and connections of their own: each migration applied once, no error.
        opened = await DeferredList([threads.deferToThread(store.openNow, NOW) for store in made[:3]]
                                    + [store.open(NOW) for store in made[3:]], consumeErrors=True)
        assert [failure for ok, failure in opened if not ok] == []
        assert schema(postgres, pgdatabase) == list(range(1, len(MIGRATIONS) + 1))
        made[0].openNow(NOW)  # again: nothing to do
        with psycopg.connect(pgdatabase) as connection:
            assert migrate(connection.cursor()) == 0
        assert schema(postgres, pgdatabase) == list(range(1, len(MIGRATIONS) + 1))
        id = await made[1].add("dev", "0x10", {"a": [1]}, 100, False, NOW)
        assert (await made[5].get(id))["data"] == {"a": [1]}
        # A database migrated by a newer devicehub: refused, not misread.
        with psycopg.connect(pgdatabase, autocommit=True) as connection:
            connection.execute("INSERT INTO devicehub_schema (version) VALUES (%s)", (len(MIGRATIONS) + 1,))
        newer = PostgresCommandStore(pgdatabase, reactor)
        made.append(newer)
        with pytest.raises(StoreFailed, match=rf"is version {len(MIGRATIONS) + 1}, newer than this devicehub's"):
            newer.openNow(NOW)
    finally:
        for store in made:
            store.close()


# -- failures: never a hang


@pytest_twisted.ensureDeferred
async def test_a_database_that_goes_away_fails_calls_and_comes_back(postgres, stores, pgdatabase):
    store = await stores()
    id = await store.add("dev", "0x10", None, 100, False, NOW)
    postgres.refuse(pgdatabase)
    started = reactor.seconds()
    with pytest.raises(StoreFailed, match=r"^the command store failed: .*not currently accepting connections"):
        await store.add("dev", "0x11", None, 100, False, NOW)
    with pytest.raises(StoreFailed):
        await store.get(id)
    assert not store.healthy and reactor.seconds() - started < 2
    postgres.accept(pgdatabase)
    assert (await store.get(id))["state"] == "queued" and not store.healthy  # a read does not say the disk works
    await store.add("dev", "0x12", None, 100, False, NOW)
    assert store.healthy and store.depth == 2
    # A restarted server (connections cut) costs no call: one that had sent nothing is run again.
    postgres.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                     (pgdatabase.rsplit("/", 1)[1],))
    assert (await store.get(id))["id"] == id and store.healthy


@pytest_twisted.ensureDeferred
async def test_a_database_that_does_not_answer_fails_calls_at_their_deadline():
    """A server that accepts the connection and then says nothing: the call fails, it does not hang."""
    connections = []

    class Silent(Protocol):
        def connectionMade(self):
            connections.append(self.transport)

    port = reactor.listenTCP(0, Factory.forProtocol(Silent), interface="127.0.0.1")
    clock = Clock()
    url = f"postgresql://postgres:secret@127.0.0.1:{port.getHost().port}/db"
    store = PostgresCommandStore(url, reactor, timeout=5, clock=clock)
    try:
        call = store.get("x")
        await eventually(lambda: connections)
        clock.advance(store.deadline)
        with pytest.raises(StoreFailed) as raised:
            await call
        assert str(raised.value) == (
            f"the command store failed: no answer from 'postgresql://postgres:***@127.0.0.1:{port.getHost().port}/db'"
            f" within {store.deadline:g} s")
        assert not store.healthy
    finally:
        for transport in connections:
            transport.abortConnection()  # let the database thread go
        await port.stopListening()
        await eventually(lambda: not store._pool.threadpool.working)
        store.close()


@pytest_twisted.ensureDeferred
async def test_a_statement_that_waits_too_long_fails(stores, pgdatabase):
    store = await stores(timeout=0.3)
    await store.add("dev", "0x10", None, 100, False, NOW)
    with psycopg.connect(pgdatabase) as other:  # another session holds the device (a stuck broker, a lock)
        other.execute("SELECT pg_advisory_xact_lock(%s, hashtext('dev'))", (_DEVICE_LOCKS,))
        with pytest.raises(StoreFailed, match="canceling statement due to statement timeout"):
            await store.due("dev", NOW)
    assert [c["instruct"] for c in await store.due("dev", NOW)] == ["0x10"]


def test_the_connection_parameters_bound_every_wait():
    assert conninfo_to_dict(conninfo("postgresql://u@h/db", 5)) == {
        "user": "u", "host": "h", "dbname": "db", "connect_timeout": "5", "tcp_user_timeout": "5000",
        "application_name": "devicehub", "options": "-c statement_timeout=5000"}
    mine = conninfo_to_dict(conninfo("postgresql://u@h/db?connect_timeout=9&options=-c%20statement_timeout%3D1s", 0.5))
    assert (mine["connect_timeout"], mine["options"], mine["tcp_user_timeout"]) == ("9", "-c statement_timeout=1s", "500")


@pytest.mark.parametrize("make, reason", [
    (lambda port: f"postgresql://postgres:secret@127.0.0.1:{port}/db", "Connection refused"),
    (lambda port: f"postgresql://postgres@127.0.0.1:{port}/db?nonsense=1", 'invalid URI query parameter: "nonsense"'),
])
@pytest_twisted.ensureDeferred
async def test_a_database_that_cannot_be_opened_stops_the_broker_start(make, reason):
    url = make(free_ports(1)[0])
    service = BrokerService(reactor, BrokerSettings(frontend=LOCAL, backend=LOCAL, events=None, store=url), Metrics())
    try:
        with pytest.raises(RuntimeError) as raised:
            service.privilegedStartService()
    finally:
        if service.broker is not None:
            await service.stopService()
    message = str(raised.value)
    assert message.startswith(f"cannot open the command store {url.replace(':secret@', ':***@')!r}: ")
    assert reason in message and "\n" not in message and "secret" not in message
    assert service.frontendSocket is None and service.store is None


def test_the_store_option_chooses_the_backend(tmp_path, pgdatabase):
    sqlite = openStore(str(tmp_path / "q.sqlite3"), reactor, NOW)
    postgresql = openStore(pgdatabase, reactor, NOW, deliveryTimeout=30)
    try:
        assert type(sqlite) is CommandStore and type(postgresql) is PostgresCommandStore
        assert postgresql.claimTtl == 90  # three deliveries
    finally:
        sqlite.close()
        postgresql.close()


# -- brokers on one database


@pytest_twisted.ensureDeferred
async def test_a_command_queued_through_one_broker_is_delivered_by_another(pgdatabase):
    options = {"store": pgdatabase, "deliveryTimeout": 1.0}
    first = await Hub(commandTimeout=1.0, brokerOptions=options).start()
    second = await Hub(commandTimeout=1.0, brokerOptions=options).start()
    demand = Demand(first.frontend, timeout=5)
    try:
        reply = await demand.request("sleeper", "0x10", {"n": 1}, queue=True)
        assert reply.result == "queued"
        device = await connect(second.devicePort, "sleeper", reply="done")  # logs in behind the other broker
        await eventually(lambda: device.commands)
        assert [(c["instruct"], c["data"]) for c in device.commands] == [("0x10", {"n": 1})]
        deadline = reactor.seconds() + 5  # the depth counts queued commands only: a sent one is not yet acked
        while (state := (await demand.status(reply.id))["state"]) == "sent" and reactor.seconds() < deadline:
            await pause(0.02)
        assert state == "acked"
        assert second.broker.store.depth == 0
        await device.close()
    finally:
        demand.close()
        await first.stop()
        await second.stop()


@pytest_twisted.ensureDeferred
async def test_health_says_the_store_is_failing_when_the_database_goes_away(postgres, pgdatabase, monkeypatch):
    import devicehub.broker.queue as brokerModule

    logged: list[dict] = []  # the broker logs the store's failure (an error fails the test when it reaches the log)
    monkeypatch.setattr(brokerModule, "log", Logger(namespace="devicehub.broker.queue", observer=logged.append))
    hub = await Hub(brokerOptions={"store": pgdatabase}).start()
    demand = Demand(hub.frontend, timeout=5)
    try:
        assert (await demand.health())["store"] == "ok"
        postgres.refuse(pgdatabase)
        with pytest.raises(CommandStoreFailed, match="not currently accepting connections"):
            await demand.send("away", "0x10", queue=True)
        assert (await demand.health())["store"] == "failing"
        postgres.accept(pgdatabase)
        assert await demand.send("away", "0x10", queue=True) == "queued"
        assert (await demand.health())["store"] == "ok"
        assert [event["log_failure"].check(StoreFailed) for event in logged if "log_failure" in event] == [StoreFailed]
    finally:
        demand.close()
        await hub.stop()
