"""A loopback TCP proxy that a test can cut and restore, to stage a database outage."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from sqlalchemy.engine import make_url

COPY_CHUNK_BYTES = 65_536


class CuttableProxy:
    """Listens on 127.0.0.1:<port> and forwards to the server of a PostgreSQL URL. With
    `cut_on`, a connection whose client sends those bytes is dropped, both ways, before they
    reach the server (a connection lost in the middle of one chosen statement)."""

    def __init__(self, target_url: str, *, cut_on: bytes | None = None) -> None:
        url = make_url(target_url)
        socket_dir = url.query.get("host")
        self._unix_path = (
            str(Path(str(socket_dir)) / f".s.PGSQL.{url.port or 5432}") if socket_dir else None
        )
        self._target = (url.host or "127.0.0.1", url.port or 5432)
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._cut_on = cut_on
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
        await asyncio.gather(
            self._copy(reader, upstream_writer, cut_also=writer),
            self._copy(upstream_reader, writer),
        )

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
