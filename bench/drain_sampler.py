"""Where an ingestion drain waits: samples taken beside a running `bench.ingest_bench`.

Run beside the benchmark, naming its process: `python -m bench.drain_sampler BENCH_PID OUT.jsonl`.
While exactly `--workers` consumer worker processes of the benchmark are alive, it writes:

- every second, per process, CPU seconds used and seconds spent runnable but waiting for a core
  (`/proc/PID/task/*/schedstat`): the consumer workers, the broker (Tansu), and the PostgreSQL
  backends of the benchmark's database (together);
- every `--interval-ms` (default 50), each consumer's backends' state and wait event from
  `pg_stat_activity` (a backend is matched to its consumer by the client port of its socket).

Run the benchmark with `BATCH_TIMES_DIR=DIR` (`bench/consumer_workers.py`) to have each worker
write when each batch of gifts was handed over, applied and acknowledged. Then
`python -m bench.drain_sampler --summary OUT.jsonl --batches DIR --events N` prints, over the drain
of N gifts (from the first batch to the one that completes N): each worker's batch sizes and the
time spent waiting for the next fetch, applying (`Ingestor.process`: parse and database) and
committing the offsets; CPU per process; and how often each consumer's backends were in each
state. `--from T0 --to T1` (Unix times) sets the window instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg

from bench.process_cpu import children_of

POSTGRES_PORT = 5432


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return ""


def _sched(pid: int) -> tuple[float, float]:
    """(CPU seconds, seconds runnable but waiting for a core) of all the process's threads."""
    run = wait = 0
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError):
                fields = Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()
                run += int(fields[0])
                wait += int(fields[1])
    return run / 1e9, wait / 1e9


def _alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def _load() -> str:
    with contextlib.suppress(OSError):
        return Path("/proc/loadavg").read_text().split()[0]
    return "0"


def _socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


def _database_ports(pid: int) -> set[int]:
    """Local ports of the process's TCP connections to PostgreSQL."""
    inodes = _socket_inodes(pid)
    ports: set[int] = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                local, remote, inode = fields[1], fields[2], int(fields[9])
                if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == POSTGRES_PORT:
                    ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


async def sample(bench_pid: int, out: Path, workers: int, interval_s: float) -> None:
    conn = await asyncpg.connect(
        os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    last: dict[str, tuple[float, float]] = {}
    port_owner: dict[int, int] = {}
    consumers: list[int] = []
    broker: int | None = None
    database: str | None = None
    next_second = 0.0
    with out.open("a") as sink:
        while not stop.is_set() and _alive(bench_pid):
            now = time.time()
            if now >= next_second:
                next_second = now + 1.0
                children = children_of(bench_pid)
                consumers = sorted(c for c in children if "spawn_main" in _cmdline(c))
                brokers = [c for c in children if "tansu" in _cmdline(c)]
                broker = brokers[0] if brokers else None
                port_owner = {p: c for c in consumers for p in _database_ports(c)}
                if database is None and port_owner:
                    database = await conn.fetchval(
                        "SELECT datname FROM pg_stat_activity WHERE client_port = ANY($1::int[])"
                        " LIMIT 1",
                        list(port_owner),
                    )
                if len(consumers) == workers and database is not None:
                    backends = [
                        r["pid"]
                        for r in await conn.fetch(
                            "SELECT pid FROM pg_stat_activity WHERE datname = $1", database
                        )
                    ]
                    procs: dict[str, list[int]] = {f"consumer{c}": [c] for c in consumers}
                    if broker is not None:
                        procs["broker"] = [broker]
                    procs["postgres"] = backends
                    row: dict[str, Any] = {"t": now, "kind": "cpu"}
                    for name, pids in procs.items():
                        run = wait = 0.0
                        for pid in pids:
                            r, w = _sched(pid)
                            key = f"{name}/{pid}"
                            before = last.get(key)
                            last[key] = (r, w)
                            if before is not None:
                                run += r - before[0]
                                wait += w - before[1]
                        row[name] = [round(run, 4), round(wait, 4)]
                    row["load"] = _load()
                    sink.write(json.dumps(row) + "\n")
            if len(consumers) == workers and port_owner:
                rows = await conn.fetch(
                    "SELECT client_port, state, wait_event_type, wait_event,"
                    " left(query, 40) AS query FROM pg_stat_activity"
                    " WHERE client_port = ANY($1::int[])",
                    list(port_owner),
                )
                states: dict[int, list[str]] = {}
                for r in rows:
                    owner = port_owner[r["client_port"]]
                    what = r["state"] or "?"
                    if r["wait_event_type"]:
                        what += f":{r['wait_event_type']}/{r['wait_event']}"
                    if r["state"] == "active":
                        what += f" [{(r['query'] or '').split()[0:2]}]"
                    states.setdefault(owner, []).append(what)
                sink.write(json.dumps({"t": time.time(), "kind": "pg", "states": states}) + "\n")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
    await conn.close()


def batch_steps(directory: Path, events: int, count: int) -> tuple[float, float]:
    """Print each worker's batch steps over the drain of `events` gifts by the `count` workers
    that started last (the benchmark's last drain); returns the drain's window."""
    found = [json.loads(path.read_text()) for path in directory.glob("batches-*.json")]
    found = sorted((batches for batches in found if batches), key=lambda b: b[0][0])[-count:]
    workers = {f"worker {index}": batches for index, batches in enumerate(found)}
    done = sorted((batch[3], batch[4]) for batches in workers.values() for batch in batches)
    applied, end = 0, done[-1][0]
    for at, size in done:
        applied += size
        if applied >= events:
            end = at
            break
    start = min(batches[0][0] for batches in workers.values() if batches)
    print(f"drain window {end - start:.1f} s")
    for name, batches in workers.items():
        batches = [b for b in batches if start <= b[0] and b[3] <= end + 0.001]
        if len(batches) < 2:
            continue
        span = batches[-1][3] - batches[0][0]
        sizes = [b[4] for b in batches]
        print(
            f"{name}: {len(batches)} batches, {sum(sizes):,} gifts, busy {span:.1f} s,"
            f" size mean {sum(sizes) / len(sizes):.0f} (min {min(sizes)}, max {max(sizes)})"
        )
        steps = {
            "waiting for the next fetch": [
                batches[i][0] - batches[i - 1][3] for i in range(1, len(batches))
            ],
            "records handed to the ingestor": [b[1] - b[0] for b in batches],
            "applied (parse + database)": [b[2] - b[1] for b in batches],
            "offsets committed": [b[3] - b[2] for b in batches],
        }
        for step, times in steps.items():
            times.sort()
            print(
                f"  {step:32} {sum(times):6.2f} s ({100 * sum(times) / span:4.1f} %)"
                f"  p50 {1000 * times[len(times) // 2]:6.1f} ms"
                f"  p90 {1000 * times[int(len(times) * 0.9)]:6.1f} ms"
            )
    return start, end


def summary(out: Path, start: float | None, end: float | None) -> None:
    cpu: dict[str, list[float]] = {}
    seconds = 0
    loads: list[float] = []
    pg: dict[str, Counter[str]] = {}
    pg_samples: Counter[str] = Counter()
    for line in out.read_text().splitlines():
        row = json.loads(line)
        if (start is not None and row["t"] < start) or (end is not None and row["t"] > end):
            continue
        if row["kind"] == "cpu":
            seconds += 1
            loads.append(float(row.get("load", 0)))
            for name, value in row.items():
                if isinstance(value, list):
                    totals = cpu.setdefault(name, [0.0, 0.0])
                    totals[0] += value[0]
                    totals[1] += value[1]
        else:
            for owner, states in row["states"].items():
                pg_samples[owner] += 1
                tally = pg.setdefault(owner, Counter())
                # Every backend of the consumer that is in a transaction, at this moment.
                working = sorted(
                    "idle in transaction (waiting on Python)" if s.startswith("idle in") else s
                    for s in states
                    if not s.startswith("idle") or s.startswith("idle in")
                )
                if working:
                    tally[" + ".join(working)] += 1
                else:
                    tally["no transaction (Python, fetch or commit of offsets)"] += 1
    low, high = min(loads, default=0), max(loads, default=0)
    print(f"{seconds} one-second CPU samples; load average {low} – {high}")
    total = 0.0
    for name, (run, wait) in sorted(cpu.items()):
        total += run
        n = max(seconds, 1)
        print(f"  {name:20} CPU {run / n:5.2f} cores, runnable-waiting {wait / n:5.2f}")
    print(f"  all sampled CPU {total / max(seconds, 1):.2f} cores")
    for owner, tally in sorted(pg.items()):
        n = pg_samples[owner]
        print(f"{owner}: {n} pg_stat_activity samples")
        for what, count in tally.most_common(12):
            print(f"  {100 * count / n:5.1f} %  {what}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench_pid", nargs="?", type=int)
    parser.add_argument("out", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--interval-ms", type=float, default=50)
    parser.add_argument("--summary", action="store_true")
    parser.add_argument("--from", dest="start", type=float)
    parser.add_argument("--to", dest="end", type=float)
    parser.add_argument("--batches", type=Path, help="the workers' BATCH_TIMES_DIR")
    parser.add_argument("--events", type=int, default=0, help="gifts in the drain")
    options = parser.parse_args()
    if options.summary:
        start, end = options.start, options.end
        if options.batches is not None:
            start, end = batch_steps(options.batches, options.events, options.workers)
        summary(options.out, start, end)
    else:
        asyncio.run(
            sample(options.bench_pid, options.out, options.workers, options.interval_ms / 1000)
        )


if __name__ == "__main__":
    main()
