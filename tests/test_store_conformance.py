"""The Store contract (output/store.py), one suite run against every backend: the in-memory store
(the reference), S3Bucket on moto's server and S3Bucket on SeaweedFS (a real S3-compatible
server). A backend is a class with what `Backend` says, and one line in BACKENDS.

A local directory (output/local.py) is held to it too.

The contract: create a window under a name only if the name is free, and say what the object under
a taken name is; with those, `publish` puts a window in the store once, whatever crashed before."""

from __future__ import annotations

import contextlib
import hashlib
import io
import random
import threading
from collections.abc import Callable
from functools import partial
from typing import Protocol

import pytest

from batched_event_api.config import BucketUrl
from batched_event_api.output.local import LocalDirectory
from batched_event_api.output.memory import MemoryStore
from batched_event_api.output.s3 import S3Bucket
from batched_event_api.output.store import Finished, Identity, Store, StoreError, publish
from s3store import Relay, fresh_bucket

STEM, SUFFIX = "user-events-20240701-020000", ".csv"
NAME = STEM + SUFFIX
MULTIPART_FROM = 1 << 20  # S3Bucket's threshold here: a "multipart" window goes up in parts
PART_SIZE = 5 << 20  # S3's smallest part but the last
SIZES = {"small": 2_000, "multipart": PART_SIZE + 300_000}  # one PUT; two parts


def rows(label: str, size: int) -> bytes:
    """`size` bytes of CSV-like rows, different for each label."""
    rng = random.Random(label)
    out = bytearray()
    while len(out) < size:
        out += f"2024-07-01T02:00:00Z,{label},{rng.randrange(10**9)},false,,,,0\n".encode()
    return bytes(out[:size])


def window(data: bytes, window_id: str | None, content_encoding: str | None = None) -> Finished:
    """A finished window as the uploader hands it over: a small one read already, a large one
    to be streamed from its file."""
    return Finished(
        io.BytesIO(data),
        len(data),
        hashlib.sha256(data).hexdigest(),
        window_id,
        data=data if len(data) < MULTIPART_FROM else None,
        content_encoding=content_encoding,
    )


def identity_of(data: bytes, window_id: str | None) -> Identity:
    return Identity(len(data), hashlib.sha256(data).hexdigest(), window_id)


class Backend(Protocol):
    """What the suite asks of a backend besides its store: to read objects back another way than
    through the store, and to fail on request (an outage)."""

    kind: str

    @property
    def store(self) -> Store: ...

    def read(self, name: str) -> bytes: ...

    def headers(self, name: str) -> tuple[str | None, str | None]:
        """The object's content type and encoding."""
        ...

    def names(self) -> list[str]:
        """Every object's name, sorted."""
        ...

    def cut(self) -> None:
        """From now on every request of the store fails."""
        ...

    def restore(self) -> None: ...


class MemoryBackend:
    """MemoryStore, read back from its objects."""

    kind = "memory"

    def __init__(self) -> None:
        self.store = MemoryStore()

    def read(self, name: str) -> bytes:
        return self.store.read(name)

    def headers(self, name: str) -> tuple[str | None, str | None]:
        headers = self.store.objects[name][2]
        return headers["content-type"], headers["content-encoding"]

    def names(self) -> list[str]:
        return sorted(self.store.objects)

    def cut(self) -> None:
        self.store.failing = True

    def restore(self) -> None:
        self.store.failing = False


class BucketBackend:
    """S3Bucket on a fresh bucket of one of the session's S3 servers, reached through a relay
    that cut() breaks (an outage) and restore() mends; read back with boto3, not through it."""

    def __init__(self, kind: str, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        server = request.getfixturevalue("s3_servers").get(kind)
        tmp_path = request.getfixturevalue("tmp_path")  # first: its teardown must come after the bucket's
        stack = contextlib.ExitStack()
        request.addfinalizer(stack.close)
        self.bucket = stack.enter_context(fresh_bucket(server, tmp_path))
        self.relay = Relay(server.port)
        bucket = S3Bucket(
            BucketUrl.parse(self.bucket.url),
            multipart_from=MULTIPART_FROM,
            part_size=PART_SIZE,
            environ=self.bucket.env(self.relay.endpoint),
        )
        self.store: Store = bucket

    def read(self, name: str) -> bytes:
        return self.bucket.read(name)

    def headers(self, name: str) -> tuple[str | None, str | None]:
        head = self.bucket.head(name)
        return head.get("ContentType"), head.get("ContentEncoding")

    def names(self) -> list[str]:
        return self.bucket.names()

    def cut(self) -> None:
        self.relay.cut()

    def restore(self) -> None:
        self.relay.restore()


class DirectoryBackend:
    """LocalDirectory on a directory of the test's own, read back from its files; an outage is
    the directory gone (renamed away: root ignores permissions) until restore()."""

    kind = "directory"

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.path = request.getfixturevalue("tmp_path") / "store"
        self.path.mkdir()
        self.store = LocalDirectory(self.path)

    def read(self, name: str) -> bytes:
        return (self.path / name).read_bytes()

    def headers(self, name: str) -> tuple[str | None, str | None]:
        # A directory has no headers: a window's name says what an object's headers say.
        return (
            ("text/csv", "gzip" if name.endswith(".csv.gz") else None) if (self.path / name).is_file() else (None, None)
        )

    def names(self) -> list[str]:
        """Every visible file, by its path under the directory (a partition's sub-directories too)."""
        return sorted(
            str(p.relative_to(self.path))
            for p in self.path.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(self.path).parts)
        )

    def cut(self) -> None:
        self.path.rename(self.path.with_name("store-away"))

    def restore(self) -> None:
        self.path.with_name("store-away").rename(self.path)


BACKENDS: dict[str, Callable[[pytest.FixtureRequest], Backend]] = {
    "directory": DirectoryBackend,
    "memory": lambda request: MemoryBackend(),
    "moto": partial(BucketBackend, "moto"),
    "seaweedfs": partial(BucketBackend, "seaweedfs"),
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Backend:
    return BACKENDS[request.param](request)


@pytest.mark.parametrize("size", sorted(SIZES))
def test_create_on_a_free_name_stores_the_window_with_its_identity(backend, size):
    data = rows("a", SIZES[size])
    assert backend.store.create(NAME, window(data, "00000000000000aa")) is True
    assert backend.read(NAME) == data
    assert backend.headers(NAME) == ("text/csv", None)
    assert backend.store.identity(NAME) == identity_of(data, "00000000000000aa")


@pytest.mark.parametrize("size", sorted(SIZES))
def test_a_gzip_window_carries_its_encoding(backend, size):
    data = rows("gz", SIZES[size])  # the store does not look inside: any bytes
    assert backend.store.create(NAME + ".gz", window(data, "00000000000000aa", content_encoding="gzip"))
    assert backend.headers(NAME + ".gz") == ("text/csv", "gzip")
    assert backend.read(NAME + ".gz") == data


@pytest.mark.parametrize("size", sorted(SIZES))
def test_a_second_create_on_a_taken_name_is_refused_and_the_first_object_stays(backend, size):
    first, second = rows("first", SIZES[size]), rows("second", SIZES[size])
    assert backend.store.create(NAME, window(first, "00000000000000aa")) is True
    assert backend.store.create(NAME, window(second, "00000000000000bb")) is False
    assert backend.store.create(NAME, window(first, "00000000000000aa")) is False  # even the same window
    assert backend.names() == [NAME]
    assert backend.read(NAME) == first
    assert backend.store.identity(NAME) == identity_of(first, "00000000000000aa")


def test_the_identity_of_a_missing_name_is_none(backend):
    assert backend.store.identity(NAME) is None
    assert backend.store.create(NAME, window(rows("a", 100), None))
    assert backend.store.identity(STEM + "-1" + SUFFIX) is None


def test_a_window_from_before_ids_has_an_identity_without_one(backend):
    data = rows("old", 500)
    assert backend.store.create(NAME, window(data, None))
    assert backend.store.identity(NAME) == identity_of(data, None)


def test_publish_on_a_free_name_creates_it(backend):
    data = rows("a", 300)
    assert publish(backend.store, STEM, SUFFIX, window(data, "00000000000000aa")) == (NAME, "created")
    assert backend.names() == [NAME] and backend.read(NAME) == data


@pytest.mark.parametrize("size", sorted(SIZES))
def test_publish_takes_the_next_free_name_past_other_windows(backend, size):
    others = [rows(f"other{n}", SIZES[size]) for n in range(2)]
    for name, data, n in zip([NAME, f"{STEM}-1{SUFFIX}"], others, "ab", strict=True):
        assert backend.store.create(name, window(data, f"00000000000000{n}{n}"))
    mine = rows("mine", SIZES[size])
    assert publish(backend.store, STEM, SUFFIX, window(mine, "00000000000000cc")) == (f"{STEM}-2{SUFFIX}", "next_name")
    assert backend.names() == sorted([NAME, f"{STEM}-1{SUFFIX}", f"{STEM}-2{SUFFIX}"])
    assert [backend.read(name) for name in (NAME, f"{STEM}-1{SUFFIX}", f"{STEM}-2{SUFFIX}")] == [*others, mine]


@pytest.mark.parametrize("size", sorted(SIZES))
def test_publish_finds_its_own_earlier_create_and_creates_nothing(backend, size):
    """A crash after the create, before the window was released: published again (the file
    opened anew), it is already there, under its name or the -N name it had taken."""
    foreign, mine = rows("foreign", SIZES[size]), rows("mine", SIZES[size])
    assert backend.store.create(NAME, window(mine, "00000000000000aa"))
    assert publish(backend.store, STEM, SUFFIX, window(mine, "00000000000000aa")) == (NAME, "already_there")
    assert backend.names() == [NAME]

    other_stem = "user-events-20240701-030000"
    assert backend.store.create(other_stem + SUFFIX, window(foreign, "00000000000000bb"))
    assert publish(backend.store, other_stem, SUFFIX, window(mine, "00000000000000cc")) == (
        f"{other_stem}-1{SUFFIX}",
        "next_name",
    )
    assert publish(backend.store, other_stem, SUFFIX, window(mine, "00000000000000cc")) == (
        f"{other_stem}-1{SUFFIX}",
        "already_there",
    )
    assert backend.names() == sorted([NAME, other_stem + SUFFIX, f"{other_stem}-1{SUFFIX}"])
    assert backend.read(other_stem + SUFFIX) == foreign


@pytest.mark.parametrize(
    ("there_id", "there_bytes", "window_id", "outcome"),
    [
        (None, "same", None, "already_there"),  # a file from before ids, its own earlier create
        ("00000000000000aa", "same", None, "next_name"),  # the same bytes, but another window's object
        (None, "other", None, "next_name"),  # from before ids too, other bytes
        (None, "same", "00000000000000bb", "next_name"),  # a window with an id is known by it alone
        ("00000000000000aa", "other", "00000000000000aa", "already_there"),  # its id, whatever the bytes
    ],
    ids=["no-ids-same-bytes", "id-there-same-bytes", "no-ids-other-bytes", "id-here-same-bytes", "same-id"],
)
def test_a_taken_name_is_the_windows_own_by_its_id_or_without_ids_by_size_and_sha256(
    backend, there_id, there_bytes, window_id, outcome
):
    data = rows("window", 700)
    there = data if there_bytes == "same" else rows("there", 700)
    assert backend.store.create(NAME, window(there, there_id))
    expected = NAME if outcome == "already_there" else f"{STEM}-1{SUFFIX}"
    assert publish(backend.store, STEM, SUFFIX, window(data, window_id)) == (expected, outcome)
    assert backend.read(NAME) == there
    assert len(backend.names()) == (1 if outcome == "already_there" else 2)


# Not moto with multipart windows: moto checks If-None-Match on CompleteMultipartUpload, but not
# atomically (several racers win); SeaweedFS, a real S3-compatible server, is held to it instead.
@pytest.mark.parametrize(
    ("kind", "size"), [(k, s) for k in sorted(BACKENDS) for s in sorted(SIZES) if (k, s) != ("moto", "multipart")]
)
def test_concurrent_creates_of_one_name_leave_exactly_one_object(request, kind, size):
    backend = BACKENDS[kind](request)
    contenders = 6 if size == "small" else 3
    windows = [rows(f"contender{n}", SIZES[size]) for n in range(contenders)]
    start = threading.Barrier(contenders)
    results: dict[int, bool | BaseException] = {}

    def create(n: int) -> None:
        start.wait()
        try:
            results[n] = backend.store.create(NAME, window(windows[n], f"{n:016x}"))
        except BaseException as exc:  # reported below, not lost in the thread
            results[n] = exc

    threads = [threading.Thread(target=create, args=(n,)) for n in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(results) == list(range(contenders)) and all(isinstance(r, bool) for r in results.values()), results
    [winner] = [n for n, created in results.items() if created]
    assert backend.names() == [NAME]
    assert backend.read(NAME) == windows[winner]
    assert backend.store.identity(NAME) == identity_of(windows[winner], f"{winner:016x}")


@pytest.mark.parametrize("size", sorted(SIZES))
def test_a_failing_store_raises_store_error_and_nothing_becomes_visible(backend, size):
    data = rows("a", SIZES[size])
    backend.cut()
    with pytest.raises(StoreError):
        backend.store.create(NAME, window(data, "00000000000000aa"))
    with pytest.raises(StoreError):
        backend.store.identity(NAME)
    with pytest.raises(StoreError):
        publish(backend.store, STEM, SUFFIX, window(data, "00000000000000aa"))
    backend.restore()
    assert backend.store.identity(NAME) is None
    assert backend.names() == []
    assert publish(backend.store, STEM, SUFFIX, window(data, "00000000000000aa")) == (NAME, "created")


PARTITION = "dt=2024-07-01/hour=02/"  # a --partition prefix: sub-directories, or a key prefix


@pytest.mark.parametrize("size", sorted(SIZES))
def test_a_name_under_a_partition_prefix_is_created_there_and_known_there(backend, size):
    data, other = rows("partitioned", SIZES[size]), rows("other", SIZES[size])
    assert backend.store.identity(PARTITION + NAME) is None  # nothing there yet, not even its directory
    assert backend.store.create(PARTITION + NAME, window(data, "00000000000000aa"))
    assert backend.read(PARTITION + NAME) == data
    assert backend.store.identity(PARTITION + NAME) == identity_of(data, "00000000000000aa")
    assert backend.store.identity(NAME) is None  # the same name outside the partition is another
    # The -N rule applies within the partition: its own earlier create, or the next name there.
    assert publish(backend.store, PARTITION + STEM, SUFFIX, window(data, "00000000000000aa")) == (
        PARTITION + NAME,
        "already_there",
    )
    assert publish(backend.store, PARTITION + STEM, SUFFIX, window(other, "00000000000000bb")) == (
        f"{PARTITION}{STEM}-1{SUFFIX}",
        "next_name",
    )
    assert publish(backend.store, STEM, SUFFIX, window(other, "00000000000000cc")) == (NAME, "created")
    assert backend.names() == sorted([PARTITION + NAME, f"{PARTITION}{STEM}-1{SUFFIX}", NAME])
