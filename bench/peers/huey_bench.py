"""The SQLite peer of bench/jobs.sh: huey's SqliteHuey on the same workloads.

    python huey_bench.py burndown|enqueue|latency --db PATH [--jobs N] [--concurrency C]

Prints one JSON line per measurement. Workers are threads; the consumer polls
with huey's backoff, starting at 10 ms and capped at 100 ms (faster than its
defaults, which favour an idle machine).
"""

import argparse
import json
import threading
import time

from huey import SqliteHuey

parser = argparse.ArgumentParser()
parser.add_argument("workload")
parser.add_argument("--db", required=True)
parser.add_argument("--jobs", type=int, default=0)
parser.add_argument("--concurrency", type=int, default=16)
args = parser.parse_args()

huey = SqliteHuey(filename=args.db)
lock = threading.Lock()
done = [0]
stamps = []
stamp_ready = threading.Event()


@huey.task()
def noop(i):
    with lock:
        done[0] += 1


@huey.task()
def stamp(t):
    stamps.append(time.perf_counter() - t)
    stamp_ready.set()


SETTINGS = {"workers": args.concurrency, "worker_type": "thread", "initial_delay": 0.01, "max_delay": 0.1}


def consumer():
    c = huey.create_consumer(
        workers=args.concurrency,
        worker_type="thread",
        periodic=False,
        initial_delay=0.01,
        backoff=1.15,
        max_delay=0.1,
    )
    c.start()
    return c


def emit(**kw):
    print(json.dumps({"bench": "jobs", "impl": "huey", "engine": "sqlite", "workload": args.workload, **kw}), flush=True)


if args.workload == "burndown":
    n = args.jobs or 100000
    t = time.perf_counter()
    for i in range(n):
        noop(i)
    insert_s = time.perf_counter() - t
    t = time.perf_counter()
    c = consumer()
    while done[0] < n:
        time.sleep(0.002)
    run_s = time.perf_counter() - t
    c.stop(graceful=True)
    emit(jobs=n, concurrency=args.concurrency, insert_s=insert_s, run_s=run_s, jobs_per_s=n / run_s, settings=SETTINGS)
elif args.workload == "enqueue":
    n = args.jobs or 100000
    single = max(1, n // 20)
    t = time.perf_counter()
    for i in range(single):
        noop(i)
    s = time.perf_counter() - t
    emit(workload="enqueue_single", jobs=single, seconds=s, jobs_per_s=single / s)
elif args.workload == "latency":
    n = args.jobs or 1000
    c = consumer()
    time.sleep(1)
    for i in range(n):
        stamp_ready.clear()
        stamp(time.perf_counter())
        stamp_ready.wait(10)
    c.stop(graceful=True)
    w = sorted(stamps)
    pick = lambda q: w[min(len(w) - 1, int(len(w) * q))] * 1000
    emit(jobs=n, p50_ms=pick(0.5), p99_ms=pick(0.99), max_ms=w[-1] * 1000, settings=SETTINGS)
else:
    raise SystemExit(f"unknown workload {args.workload}")
