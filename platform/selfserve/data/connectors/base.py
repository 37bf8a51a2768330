"""The connector interface: every source kind reads into Arrow record batches, read-only."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa

from selfserve.settings import Settings


@dataclass(frozen=True)
class ReadRequest:
    """What to read from a source.

    Attributes:
        table: A table, key pattern, subject, object key or path, as the kind understands it.
        query: A read-only query (SQL kinds only); exclusive with ``table``.
        cursor_column: For incremental loads: only rows whose cursor is greater than ``watermark``.
        watermark: The largest cursor value loaded last time (None: load everything).
        batch_rows: Rows per batch; sources are read in chunks of at most this many rows.
        options: Kind-specific read options (e.g. a redis key type, a REST records path).
    """

    table: str | None = None
    query: str | None = None
    cursor_column: str | None = None
    watermark: Any = None
    batch_rows: int = 50_000
    options: dict[str, Any] | None = None


class Connector(ABC):
    """Reads one source. Never writes to it: SQL kinds open read-only sessions.

    Args:
        config: The source's non-secret settings (host, database, paths, pagination...).
        secrets: The decrypted secrets (passwords, tokens); never logged or returned.
        settings: The platform settings (allowed file roots, URL policy).
    """

    kind: ClassVar[str]

    def __init__(self, config: dict[str, Any], secrets: dict[str, Any], settings: Settings) -> None:
        self.config = config
        self.secrets = secrets
        self.settings = settings

    @abstractmethod
    def test(self) -> None:
        """Check the source is reachable with these credentials.

        Raises:
            SourceError: unreachable, refused credentials, missing object; the message names the
                problem with every secret masked.
        """

    @abstractmethod
    def read(self, request: ReadRequest) -> Iterator[pa.RecordBatch]:
        """Yield the rows as record batches of at most ``request.batch_rows`` rows.

        Raises:
            SourceError: as for :meth:`test`, or a bad table/query.
        """

    def commit(self) -> None:  # noqa: B027 - most sources keep no delivery state
        """The rows of the last :meth:`read` are committed: settle what the source holds for them
        (a queue acknowledges its messages). Default: nothing to do."""

    def rollback(self) -> None:  # noqa: B027
        """The rows of the last :meth:`read` were not committed: hand them back (a queue redelivers).
        Default: nothing to do."""
