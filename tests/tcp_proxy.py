"""A loopback TCP proxy that a test can cut and restore, to stage a database outage."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from sqlalchemy.engine import make_url

COPY_CHUNK_BYTES = 65_536
# The end of a connection's start, as the server sends it: `ReadyForQuery`, idle.
READY_FOR_QUERY_IDLE = b"Z\x00\x00\x00\x05I"


def _error_response(fields: dict[bytes, bytes]) -> bytes:
    """A PostgreSQL `ErrorResponse` message with `fields` (one-byte codes to values)."""
    body = b"".join(code + value + b"\x00" for code, value in fields.items()) + b"\x00"
    return b"E" + (len(body) + 4).to_bytes(4, "big") + body


# What the server sends a connection whose backend an administrator ends (pg_terminate_backend)
# while the connection is idle, before it closes the socket.
ENDED_BY_ADMINISTRATOR = _error_response(
    {
        b"S": b"FATAL",
        b"V": b"FATAL",
        b"C": b"57P01",
        b"M": b"terminating connection due to administrator command",
    }
)


class CuttableProxy:
    """Listens on 127.0.0.1:<port> and forwards to the server of a PostgreSQL URL. With
    `cut_on`, a connection whose client sends those bytes is dropped, both ways, before they
    reach the server (a connection lost in the middle of one chosen statement). While
    `end_after_start` is set, each new connection is ended as an administrator ends an idle one,
    right after its start: the server's `FATAL` message in the same packet as the start's last
    message, the server's side closed, the client's left open (until `cut`, or until the client
    ends it)."""

    def __init__(
        self, target_url: str, *, cut_on: bytes | None = None, end_after_start: bool = False
    ) -> None:
        url = make_url(target_url)
        socket_dir = url.query.get("host")
        self._unix_path = (
            str(Path(str(socket_dir)) / f".s.PGSQL.{url.port or 5432}") if socket_dir else None
        )
        self._target = (url.host or "127.0.0.1", url.port or 5432)
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._cut_on = cut_on
        self.end_after_start = end_after_start
        self.port = 0

    def url_through(self, target_url: str) -> str:
        url = make_url(target_url)
        query = {key: value for key, value in url.query.items() if key != "host"}
        through = url.set(host="127.0.0.1", port=self.port, query=query)
        return through.render_as_string(hide_password=False)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse new connections and drop every open one."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()

    async def restore(self) -> None:
        await self.start()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._unix_path is not None:
            upstream_reader, upstream_writer = await asyncio.open_unix_connection(self._unix_path)
        else:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        self._links |= {writer, upstream_writer}
        if self.end_after_start:
            await self._start_then_end(reader, writer, upstream_reader, upstream_writer)
            return
        await asyncio.gather(
            self._copy(reader, upstream_writer, cut_also=writer),
            self._copy(upstream_reader, writer),
        )

    async def _start_then_end(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream_reader: asyncio.StreamReader,
        upstream_writer: asyncio.StreamWriter,
    ) -> None:
        """Forward the connection's start, then end it (`end_after_start`); what the client
        sends after that goes nowhere."""
        to_server = asyncio.create_task(self._copy(reader, upstream_writer))
        started = False
        while not started and (chunk := await upstream_reader.read(COPY_CHUNK_BYTES)):
            started = chunk.endswith(READY_FOR_QUERY_IDLE)
            writer.write(chunk + ENDED_BY_ADMINISTRATOR if started else chunk)
            await writer.drain()
        to_server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await to_server
        upstream_writer.transport.abort()
        self._links.discard(upstream_writer)
        with contextlib.suppress(ConnectionError, OSError):
            while await reader.read(COPY_CHUNK_BYTES):
                pass
        self._links.discard(writer)
        writer.transport.abort()

    async def _copy(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        cut_also: asyncio.StreamWriter | None = None,
    ) -> None:
        """Forward until the end; on the client's side (`cut_also`: the client's writer), drop
        both ends instead of forwarding a chunk that holds `cut_on` (or that completes it)."""
        tail = b""
        try:
            while chunk := await reader.read(COPY_CHUNK_BYTES):
                if cut_also is not None and self._cut_on and self._cut_on in tail + chunk:
                    writer.transport.abort()
                    cut_also.transport.abort()
                    return
                tail = chunk[-len(self._cut_on or b"") :]
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._links.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()
