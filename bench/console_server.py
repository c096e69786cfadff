"""The API process for `bench.console_bench`: `build_api_app` served by `serve_api` in a process
of its own (so that the client's work is not charged to the server's event loop), on a free
port of 127.0.0.1, until the parent ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import time
from collections.abc import Iterator
from typing import Any, Final

from services.runtime.ports import free_loopback_port, http_answers

SERVER_START_TIMEOUT_S: Final = 30.0
SERVER_STOP_TIMEOUT_S: Final = 30.0
POLL_INTERVAL_S: Final = 0.1


def _serve(database_url: str, settings_values: dict[str, Any], port: int) -> None:
    """The child process: the API app on its own engine until SIGTERM."""
    import signal

    from ledger.database import create_engine
    from services.api.server import serve_api
    from services.app.bootstrap import build_api_app
    from services.runtime.settings import Settings

    async def serve() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        engine = create_engine(database_url)
        try:
            await serve_api(
                build_api_app(engine, Settings(**settings_values)), "127.0.0.1", port, stop
            )
        finally:
            await engine.dispose()

    asyncio.run(serve())


@contextlib.contextmanager
def running_api(database_url: str, settings_values: dict[str, Any]) -> Iterator[str]:
    """The API (and its console) served from a child process: its base URL."""
    port = free_loopback_port()
    context = multiprocessing.get_context("spawn")
    process = context.Process(
        target=_serve, args=(database_url, settings_values, port), name="console-bench-api"
    )
    process.start()
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not http_answers(f"{base_url}/healthz"):
            if not process.is_alive():
                raise RuntimeError(f"the API process ended with {process.exitcode}")
            if time.monotonic() > deadline:
                raise TimeoutError("the API process did not answer in time")
            time.sleep(POLL_INTERVAL_S)
        yield base_url
    finally:
        process.terminate()
        process.join(SERVER_STOP_TIMEOUT_S)
        if process.is_alive():
            process.kill()
            process.join(SERVER_STOP_TIMEOUT_S)
