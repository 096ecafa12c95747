"""Configuration: one typed object, read once from the command line and environment, and the one
table of defaults. A default is stated here only: the CLI's options (and their help) take theirs
from `DEFAULTS` and `SEND_DEFAULTS`, and so do the keyword defaults of the classes they configure."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

OUTPUT = "./data"  # -o: the output directory, as given (a Path would say "data")
STATE_DIR = "./state"  # --state-dir of a bucket output, or of a local one with a finishing step


class Align(StrEnum):
    FIRST_EVENT = "first-event"  # a window starts at its first event (the reference)
    INTERVAL = "interval"  # on multiples of the interval


class SyncMany(StrEnum):
    FILESYSTEM = "filesystem"  # a round with many files: one syncfs()
    PER_FILE = "per-file"  # one fdatasync each


class Compress(StrEnum):
    NONE = "none"
    GZIP = "gzip"  # committed files as .csv.gz
    ZSTD = "zstd"  # committed files as .csv.zst
    SNAPPY = "snappy"  # Parquet files only


class Format(StrEnum):
    CSV = "csv"  # the reference's files
    PARQUET = "parquet"  # each committed window converted into one Parquet file


# The compressions each format takes, its default first.
COMPRESSIONS = {
    Format.CSV: (Compress.NONE, Compress.GZIP, Compress.ZSTD),
    Format.PARQUET: (Compress.ZSTD, Compress.SNAPPY, Compress.GZIP, Compress.NONE),
}


@dataclass(frozen=True, slots=True)
class BucketUrl:
    bucket: str
    prefix: str  # "" or ending in "/"

    @classmethod
    def parse(cls, url: str) -> BucketUrl:
        """`s3://BUCKET/PREFIX/` (the prefix may be empty)."""
        if not url.startswith("s3://"):
            raise ValueError(f"not an s3:// URL: {url!r}")
        bucket, _, prefix = url[len("s3://") :].partition("/")
        if not bucket:
            raise ValueError(f"no bucket in {url!r}: use s3://BUCKET/PREFIX/")
        prefix = prefix.strip("/")
        return cls(bucket, prefix + "/" if prefix else "")

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


@dataclass(frozen=True, slots=True)
class Settings:
    output: Path = Path(OUTPUT)  # the directory written: the output, or the state directory of a store
    bucket: BucketUrl | None = None  # committed windows go here when set (uploaded from `output`)
    # A local output directory with a finishing step (Parquet, a partition): windows go here from
    # `output`, then the state directory, as they go into a bucket.
    output_directory: Path | None = None
    format: Format = Format.CSV
    partition: str | None = None  # strftime template of a window's start in UTC: its sub-directory or key prefix
    max_backlog: int = 1 * GiB  # bytes of committed windows waiting for their store (503 beyond)
    drain_timeout: float = 30.0  # seconds a shutdown waits for the finish stage
    multipart_threshold: int = 16 * MiB  # windows this large go up in parts (smaller ones: one PUT from memory)
    multipart_chunksize: int = 16 * MiB  # bytes per part
    upload_concurrency: int = 4  # windows uploaded side by side
    upload_nice: int = 10  # the upload process's CPU priority below the server's
    host: str = "127.0.0.1"
    port: int = 8080
    interval: float = 300.0  # seconds of event time per window
    idle_close: float = 60.0  # wall-clock seconds without events before the open window is committed
    align: Align = Align.FIRST_EVENT
    max_open_windows: int = 16  # --align interval: windows open at once (one more commits the oldest)
    allowed_lateness: float = 0.0  # --align interval: seconds past a window's end before event time commits it
    max_file_bytes: int | None = None  # a window's file that reaches this is committed and goes on in a new one
    fsync: bool = True
    sync_many: SyncMany = SyncMany.FILESYSTEM  # how a round writing to many files syncs them
    max_body: int = 64 * MiB
    max_line: int = 8 * MiB
    max_windows_per_request: int = 1000  # windows one request may open (413 beyond)
    key_retention: float = 3600.0  # seconds an applied Idempotency-Key is recognised
    key_memory: int = 256 * MiB  # bytes of keys kept at most (a new key beyond: 503)
    group_readable: bool = False  # files 0640 instead of 0600
    auth_token: str | None = None
    header: bool = False
    compress: Compress | None = None  # None: the format's default (COMPRESSIONS)
    log_format: str = "text"
    log_level: str = "info"
    access_log: bool = True  # one line per request at info level
    body_timeout: float = 30.0  # seconds from the end of the headers to the end of the body
    min_body_rate: int = 240  # bytes/s a body must average after its first 5 seconds (Kestrel's default); 0: off
    header_timeout: float = 10.0  # seconds from a connection's first byte (or its opening) to the end of the headers
    max_header_size: int = 64 * KiB  # bytes of request line and headers (431 beyond; a URL beyond 8 KiB: 414)
    send_timeout: float = 30.0  # seconds a client may leave its answers unread (the transport's writing paused)
    keep_alive: float = 5.0  # seconds an idle keep-alive connection is kept open
    max_connections: int = 1024  # connections beyond this are answered 503 and closed
    max_pending: int = 256 * MiB  # body bytes received and not yet written (503 beyond)

    @property
    def interval_ns(self) -> int:
        return round(self.interval * 1_000_000_000)

    @property
    def allowed_lateness_ns(self) -> int:
        return round(self.allowed_lateness * 1_000_000_000)

    @property
    def compression(self) -> Compress:
        """Of the files committed: --compress, or the format's default."""
        return self.compress or COMPRESSIONS[self.format][0]

    @property
    def csv_compression(self) -> Compress:
        """Of the CSV the writer writes (plain when it is converted into Parquet afterwards)."""
        return self.compression if self.format is Format.CSV else Compress.NONE

    @property
    def store_url(self) -> str | None:
        """Where a finish stage puts committed windows (s3://… or a local directory), or None
        when the writer publishes them where they stay (a plain CSV output directory)."""
        if self.bucket is not None:
            return str(self.bucket)
        return str(self.output_directory) if self.output_directory is not None else None


@dataclass(frozen=True, slots=True)
class SendSettings:
    """The `send` client's options that have a default (its `Sender` takes them one by one)."""

    urls: tuple[str, ...] = ("http://127.0.0.1:8080",)  # chunks go round-robin over these
    batch_lines: int = 10_000  # lines per request at most
    batch_bytes: int = 8 * MiB  # bytes per request at most (a longer line goes alone)
    gzip: bool = False  # request bodies compressed
    retries: int = 8  # of one chunk
    timeout: float = 60.0  # seconds allowed for one request


DEFAULTS = Settings()  # every setting's default, read as DEFAULTS.max_body
SEND_DEFAULTS = SendSettings()
