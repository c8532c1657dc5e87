#!/usr/bin/env python3
"""The compiled trees against the estimator they came from: predict time per record and the memory
a process pays to load and use the model.

    .venv/bin/python scripts/bench_trees.py [--model models/default] [--rows 100000] [--repeat 5]

Records: the running records of shared captures (../shared/data/pcaps, as the monitor makes them),
repeated up to --rows; random records when the captures are absent. Times are the best of
--repeat calls of predict_proba on all rows (after one call that compiles or warms up); the
estimator is timed with its own thread count and with one thread. Memory: the peak RSS (VmHWM) of a
fresh process that loads the model one way or the other and predicts 1,000 records.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from iadm.ml import registry  # noqa: E402

CAPTURES = ("pkt.TCP.synflood.spoofed.pcap", "synscan.pcapng", "benign-iot/lockly-hub-01.pcap",
            "attacks-more/slowloris-http.pcapng", "attacks-more/mac-flood-macof.pcapng")


def records(features: list[str], rows: int) -> tuple[pd.DataFrame, str]:
    from iadm.flows.pipeline import records_from_pcap
    from iadm.ml.datasets import derive
    base = os.path.join(ROOT, "..", "shared", "data", "pcaps")
    frames = [derive(records_from_pcap(os.path.join(base, c), kind="running", status_interval=0.1,
                                       flow_timeout=30.0)[0])[features]
              for c in CAPTURES if os.path.exists(os.path.join(base, c))]
    if not frames:
        rng = np.random.default_rng(0)
        return pd.DataFrame(rng.exponential(100.0, (rows, len(features))), columns=features), "random"
    frame = pd.concat(frames, ignore_index=True)
    what = f"{len(frame):,} running records of {len(frames)} shared captures"
    return frame.iloc[np.arange(rows) % len(frame)].reset_index(drop=True), what


def best(call, repeat: int) -> float:
    call()
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    return min(times)


def peak_rss(model: str, compiled: bool) -> tuple[int, list]:
    # VmHWM, the process's own peak (ru_maxrss of a child forked from this process starts at ours)
    code = ("import sys, numpy as np, pandas as pd\n"
            "from iadm.ml import registry\n"
            f"m = registry.load({model!r}, compiled={compiled})\n"
            "m.predict(pd.DataFrame(np.ones((1000, len(m.features))), columns=m.features))\n"
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
            "print(hwm, "
            "sorted({k.split('.')[0] for k in sys.modules} & {'sklearn', 'lightgbm', 'scipy', 'joblib'}))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": ROOT})
    kb, mods = out.stdout.split(" ", 1)
    return int(kb), mods.strip()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="models/default")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    compiled = registry.load(args.model)
    if not compiled.compiled:
        print(f"{args.model}: no compiled trees ({compiled.card.get('compiled', {}).get('reason')})")
        return 1
    estimator = registry.load(args.model, compiled=False)
    frame, what = records(compiled.features, args.rows)
    a, b = compiled.predict_proba(frame), estimator.predict_proba(frame)
    print(f"{args.model}: {compiled.card['compiled']['what']}")
    print(f"records: {len(frame):,} ({what}); largest difference {np.abs(a - b).max():.3g}, "
          f"argmax identical: {bool((a.argmax(1) == b.argmax(1)).all())}")
    x = np.ascontiguousarray(frame.to_numpy(dtype=np.float64))
    rows = [("compiled trees (one thread), predict_proba on the array", best(lambda: compiled.predictor.predict_proba(x), args.repeat)),
            ("compiled trees, Model.predict on the frame", best(lambda: compiled.predict(frame), args.repeat)),
            (f"estimator as shipped (n_jobs={getattr(estimator.estimator, 'n_jobs', '?')}), Model.predict",
             best(lambda: estimator.predict(frame), args.repeat))]
    if hasattr(estimator.estimator, "n_jobs"):
        estimator.estimator.set_params(n_jobs=1)
        rows.append(("estimator, one thread, Model.predict", best(lambda: estimator.predict(frame), args.repeat)))
    baseline = rows[2][1]   # the estimator as shipped, timed in this same run
    print("\n| predictor | s per 100k records | µs per record | records/s | x the estimator as shipped |\n"
          "|---|---:|---:|---:|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds * 100_000 / len(frame):.3f} | {seconds * 1e6 / len(frame):.2f} | "
              f"{len(frame) / seconds:,.0f} | {baseline / seconds:.2f} |")
    print("\n| load and predict 1,000 records | peak RSS MiB | imported |\n|---|---:|---|")
    for flag, name in ((True, "compiled trees"), (False, "joblib estimator")):
        kb, mods = peak_rss(args.model, flag)
        print(f"| {name} | {kb / 1024:.0f} | {mods} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
