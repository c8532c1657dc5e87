#!/usr/bin/env python3
"""The verdict and operator APIs under stalled clients, measured on loopback.

    .venv/bin/python scripts/bench_api.py

A valid verdict beside 40 connections held open sending nothing (median and worst of 20), and
1,000 sequential verdicts on one kept-alive connection (p50, p99), against the controller core
on a fake switch; the operator API's GET /metrics the same way. Targets (issue: gateway
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
    for api, figures in (("verdict API, POST /v1/verdicts", measure(Path(tempfile.mkdtemp()))),
                         ("operator API, GET /metrics", measure_operator())):
        print(api)
        for name, value in figures.items():
            print(f"  {name:18} {value:.2f}" if isinstance(value, float) else f"  {name:18} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
