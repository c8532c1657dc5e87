#!/usr/bin/env python3
"""The verdict and operator APIs under stalled clients, measured on loopback.

    .venv/bin/python scripts/bench_api.py

A valid verdict beside 40 connections held open sending nothing (median and worst of 20), and
1,000 sequential verdicts on one kept-alive connection (p50, p99), against the controller core
on a fake switch; the operator API's GET /metrics the same way; each beside the same run with
no stalled connection (the baseline, in the same process) and the ratio. Targets (issue: gateway
deployment): a verdict within 100 ms beside 40 stalled connections, p99 under 10 ms. The
measuring code is shared with tests/unit/test_deployment_api.py, which asserts the bounds.
"""
import os
import sys
import tempfile
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests"), os.path.join(ROOT, "tests", "unit")]

from test_deployment_api import measure, measure_operator  # noqa: E402


def main() -> int:
    """Each API measured beside 40 stalled connections and, as the baseline in the same process,
    beside none; the ratio is what the stalled clients cost a valid request."""
    runs = (("verdict API, POST /v1/verdicts", lambda n: measure(Path(tempfile.mkdtemp()), stallers=n)),
            ("operator API, GET /metrics", lambda n: measure_operator(stallers=n)))
    for api, run in runs:
        quiet, loaded = run(0), run(40)
        print(api)
        for name in loaded:
            if name == "stalled":
                continue
            ratio = loaded[name] / quiet[name] if quiet[name] else float("nan")
            print(f"  {name:18} {loaded[name]:8.2f} beside 40 stalled, {quiet[name]:8.2f} beside none: x{ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
