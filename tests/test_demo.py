"""The README's main command: `giftledger demo` runs the sample stream to a sound ledger, serves
the finance API until Ctrl-C, then stops cleanly; `--no-wait` exits after the summary."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

DEMO_TIMEOUT_S = 300
STOP_TIMEOUT_S = 60


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _demo_env(database_url: str, kafka_bootstrap: str) -> dict[str, str]:
    prefix = f"d{uuid.uuid4().hex[:8]}."
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_TOPIC_PREFIX": prefix,
        "KAFKA_CONSUMER_GROUP": f"g-{prefix}",
        "KAFKA_PARTITION_COUNT": "2",
        "API_PORT": str(_free_port()),
        "PYTHONUNBUFFERED": "1",
    }


def _assert_summary(out: str) -> None:
    assert "verify: every invariant holds" in out
    assert "still parked 0" in out
    assert "1 x malformed_json" in out
    assert "1 x schema_violation" in out
    assert "total DIAMOND" in out
    for line in ("paid", "rejected (country)", "rejected (daily_limit)", "rejected (minimum)"):
        assert f"  {line} " in out


def test_demo_serves_the_api_until_ctrl_c_and_stops_cleanly(
    database_url: str, kafka_bootstrap: str
) -> None:
    env = _demo_env(database_url, kafka_bootstrap)
    demo = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "demo"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert demo.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + DEMO_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            line = demo.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C stops" in line:
                break
        out = "".join(lines)
        _assert_summary(out)
        token = re.search(r"token for this run \(role finance\): (\S+)", out)
        assert token is not None, out
        request = urllib.request.Request(
            f"http://127.0.0.1:{env['API_PORT']}/v1/creators/creator-00/balances",
            headers={"Authorization": f"Bearer {token.group(1)}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            balances = json.loads(response.read())
        assert {line["asset"] for line in balances["balances"]} >= {"DIAMOND", "USD"}
        demo.send_signal(signal.SIGINT)
        assert demo.wait(STOP_TIMEOUT_S) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()


def test_demo_no_wait_exits_after_the_summary(database_url: str, kafka_bootstrap: str) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "services.cli", "demo", "--no-wait"],
        env=_demo_env(database_url, kafka_bootstrap),
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    _assert_summary(completed.stdout)
