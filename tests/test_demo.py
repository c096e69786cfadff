"""The README's main command runs to completion: `giftledger demo --no-wait`."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

DEMO_TIMEOUT_S = 300


def test_demo_runs_the_sample_stream_to_a_sound_ledger(
    database_url: str, kafka_bootstrap: str
) -> None:
    prefix = f"d{uuid.uuid4().hex[:8]}."
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_TOPIC_PREFIX": prefix,
        "KAFKA_CONSUMER_GROUP": f"g-{prefix}",
        "KAFKA_PARTITION_COUNT": "2",
    }
    completed = subprocess.run(
        [sys.executable, "-m", "services.cli", "demo", "--no-wait"],
        env=env,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    out = completed.stdout
    assert "verify: every invariant holds" in out
    assert "still parked 0" in out
    assert "1 x malformed_json" in out
    assert "1 x schema_violation" in out
    assert "total DIAMOND" in out
    for line in ("paid", "rejected (country)", "rejected (daily_limit)", "rejected (minimum)"):
        assert f"  {line} " in out
