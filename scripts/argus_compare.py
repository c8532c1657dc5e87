#!/usr/bin/env python3
"""Compare iadm's flow records with Argus 3.0.8 on capture files.

For each capture, Argus is run twice over the same argus file:
  * ``ra``        -> status records (one per flow per status interval)
  * ``racluster`` -> flow records (status records merged per flow key)
iadm's records come from a loader function given by dotted name
(default ``iadm.flows.pipeline.records_from_pcap``); it is called with
``kind="status"`` / ``kind="flow"`` when its signature accepts ``kind``.

Rows are matched on (proto, saddr, sport, daddr, dport, stime in µs).

Usage:
  scripts/argus_compare.py CAPTURE [CAPTURE ...]
  scripts/argus_compare.py --all            # every capture under the data dir
  scripts/argus_compare.py --detail CAPTURE FIELD [--kind status|flow]
  scripts/argus_compare.py --all --json
  scripts/argus_compare.py --all --fields   # adds a per-field table
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "pcaps"
DEFAULT_LOADER = "iadm.flows.pipeline.records_from_pcap"
KINDS = ("status", "flow")

KEY_FIELDS = ["proto", "saddr", "sport", "daddr", "dport"]
COMPARED_FIELDS = ["stime", "ltime", "pkts", "bytes", "state", "spkts", "dpkts",
                   "sbytes", "dbytes", "dur", "mean", "stddev", "sum", "min",
                   "max", "rate", "srate", "drate"]
TIME_FIELDS = {"stime", "ltime"}
TEXT_FIELDS = {"state"}
RA_FIELDS = ["stime", "ltime", "flgs", "proto", "saddr", "sport", "dir", "daddr",
             "dport", "pkts", "bytes", "state", "spkts", "dpkts", "sbytes",
             "dbytes", "dur", "mean", "stddev", "sum", "min", "max", "rate",
             "srate", "drate"]
# Column titles ra prints for RA_FIELDS (ra -c , prints titles, not names).
RA_TITLES = ["StartTime", "LastTime", "Flgs", "Proto", "SrcAddr", "Sport", "Dir",
             "DstAddr", "Dport", "TotPkts", "TotBytes", "State", "SrcPkts",
             "DstPkts", "SrcBytes", "DstBytes", "Dur", "Mean", "StdDev", "Sum",
             "Min", "Max", "Rate", "SrcRate", "DstRate"]
REL_TOL = 1e-6
ABS_TOL = 1e-6
TIME_TOL = 1e-6


# ---------------------------------------------------------------- Argus side

def run_timed(command: list[str]) -> tuple[str, float]:
    """Run a command, return (stdout, seconds it took)."""
    started = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return done.stdout, time.perf_counter() - started


def argus_records(capture: Path) -> tuple[dict[str, pd.DataFrame], dict[str, float]]:
    """Status (ra) and flow (racluster) records of a capture, and tool seconds."""
    seconds = {}
    with tempfile.TemporaryDirectory(prefix="argus_compare_") as tmp:
        argus_file = str(Path(tmp) / "out.argus")
        # -S 5: the status interval of Debian's /etc/argus.conf, named so that no local config changes it.
        _, seconds["argus"] = run_timed(["argus", "-S", "5", "-r", str(capture), "-w", argus_file])
        records = {}
        for kind, tool in (("status", "ra"), ("flow", "racluster")):
            csv_text, seconds[tool] = run_timed(
                [tool, "-r", argus_file, "-n", "-u", "-c", ",", "-s", *RA_FIELDS,
                 "-", "not", "man"])
            records[kind] = parse_ra_csv(csv_text)
    return records, seconds


def parse_ra_csv(csv_text: str) -> pd.DataFrame:
    """ra CSV text -> DataFrame with Bot-IoT column names and integer ports."""
    frame = pd.read_csv(io.StringIO(csv_text), dtype=str, skipinitialspace=True)
    frame = frame.rename(columns=dict(zip(RA_TITLES, RA_FIELDS)))
    frame = frame.apply(lambda column: column.str.strip())
    for port in ("sport", "dport"):
        frame[port] = frame[port].map(port_number)
    numeric = [f for f in COMPARED_FIELDS if f not in TEXT_FIELDS]
    frame[numeric] = frame[numeric].apply(pd.to_numeric)
    return frame


def port_number(text) -> int:
    """Argus port text ('80', '0x0008', empty) -> int as iadm prints it."""
    if not isinstance(text, str) or not text:
        return 0
    return int(text, 16) if text.lower().startswith("0x") else int(text)


# ----------------------------------------------------------------- iadm side

def load_function(dotted_name: str):
    module_name, _, function_name = dotted_name.rpartition(".")
    return getattr(importlib.import_module(module_name), function_name)


def accepts_kind(function) -> bool:
    return "kind" in inspect.signature(function).parameters


def iadm_records(capture: Path, kind: str, loader: str = DEFAULT_LOADER) -> pd.DataFrame:
    """iadm's records of a capture, of the given kind when the loader knows kinds."""
    function = load_function(loader)
    options = {"kind": kind} if accepts_kind(function) else {}
    records, _stats = function(str(capture), **options)
    return records


# ---------------------------------------------------------------- comparison

def with_match_key(frame: pd.DataFrame) -> pd.DataFrame:
    """Add a 'match_key' column: flow key plus stime rounded to the microsecond, plus the
    row's rank among rows with that key (a capture that holds the same packets twice gives Argus
    two records with one key and start: the first pairs with the first)."""
    frame = frame.copy()
    stime_us = (frame["stime"].astype(float) * 1e6).round().astype("int64")
    key = list(zip(frame["proto"].astype(str), frame["saddr"].astype(str),
                   frame["sport"].astype(int), frame["daddr"].astype(str),
                   frame["dport"].astype(int), stime_us))
    keys = pd.Series(key, index=frame.index)
    rank = keys.groupby(keys, sort=False).cumcount()
    frame["match_key"] = [k + (r,) for k, r in zip(key, rank)]
    return frame


def matched_rows(argus: pd.DataFrame, iadm: pd.DataFrame) -> pd.DataFrame:
    """Inner join of the two record sets; columns get suffixes _argus / _iadm."""
    return with_match_key(argus).merge(with_match_key(iadm), on="match_key",
                                       suffixes=("_argus", "_iadm"))


def equal_values(field: str, argus_values: pd.Series, iadm_values: pd.Series) -> pd.Series:
    """Per-row equality of one field, with the tolerance that suits it."""
    if field in TEXT_FIELDS:
        return argus_values.astype(str).str.strip() == iadm_values.astype(str).str.strip()
    a = argus_values.astype(float)
    b = iadm_values.astype(float)
    difference = (a - b).abs()
    if field in TIME_FIELDS:
        return difference <= TIME_TOL + 1e-9
    return (difference <= ABS_TOL) | (difference <= REL_TOL * b.abs().combine(a.abs(), max))


def field_agreement(matched: pd.DataFrame) -> dict[str, float]:
    """% of matched rows equal, per compared field."""
    result = {}
    for field in COMPARED_FIELDS:
        a, b = f"{field}_argus", f"{field}_iadm"
        if len(matched) == 0 or b not in matched:
            result[field] = None
            continue
        result[field] = round(100.0 * float(equal_values(field, matched[a], matched[b]).mean()), 2)
    return result


def summarise(argus: pd.DataFrame, iadm: pd.DataFrame) -> dict:
    matched = matched_rows(argus, iadm)
    return {
        "rows_argus": len(argus),
        "rows_iadm": len(iadm),
        "matched_pct": round(100.0 * len(matched) / len(argus), 2) if len(argus) else None,
        "fields": field_agreement(matched),
    }


def agreement(path, kind: str, loader: str = DEFAULT_LOADER) -> dict:
    """Agreement numbers of one capture and one kind ('status' or 'flow')."""
    argus, _seconds = argus_records(Path(path))
    return summarise(argus[kind], iadm_records(Path(path), kind, loader))


def compare_capture(capture: Path, loader: str = DEFAULT_LOADER) -> dict:
    """Both kinds for one capture, plus the seconds argus/ra/racluster took."""
    argus, seconds = argus_records(capture)
    result = {"capture": str(capture), "seconds": {k: round(v, 3) for k, v in seconds.items()}}
    for kind in KINDS:
        result[kind] = summarise(argus[kind], iadm_records(capture, kind, loader))
    return result


def first_mismatches(capture: Path, field: str, kind: str, limit: int = 20,
                     loader: str = DEFAULT_LOADER) -> pd.DataFrame:
    argus, _ = argus_records(capture)
    matched = matched_rows(argus[kind], iadm_records(capture, kind, loader))
    unequal = ~equal_values(field, matched[f"{field}_argus"], matched[f"{field}_iadm"])
    columns = [f"{k}_argus" for k in KEY_FIELDS] + ["stime_argus", f"{field}_argus", f"{field}_iadm"]
    return matched.loc[unequal, columns].head(limit)


# ------------------------------------------------------------------- output

def all_captures(root: Path = DATA_DIR) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix in (".pcap", ".pcapng"))


def mean_field_pct(summary: dict) -> str:
    values = [v for v in summary["fields"].values() if v is not None]
    return f"{sum(values) / len(values):.1f}" if values else "-"


def markdown_table(results: list[dict]) -> str:
    header = ("| capture | argus s | ra s | racluster s "
              "| status rows argus/iadm | status matched % | status fields % (mean) | status worst field "
              "| flow rows argus/iadm | flow matched % | flow fields % (mean) | flow worst field |")
    lines = [header, "|" + "---|" * 12]
    for r in results:
        cells = [Path(r["capture"]).relative_to(DATA_DIR).as_posix()
                 if Path(r["capture"]).is_relative_to(DATA_DIR) else r["capture"]]
        cells += [f'{r["seconds"][t]:.2f}' for t in ("argus", "ra", "racluster")]
        for kind in KINDS:
            s = r[kind]
            cells += [f'{s["rows_argus"]}/{s["rows_iadm"]}',
                      "-" if s["matched_pct"] is None else f'{s["matched_pct"]:.1f}',
                      mean_field_pct(s), worst_field(s)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def worst_field(summary: dict) -> str:
    known = {k: v for k, v in summary["fields"].items() if v is not None}
    if not known or min(known.values()) == 100.0:
        return "-"
    field = min(known, key=known.get)
    return f"{field} {known[field]:.1f}"


def field_table(results: list[dict]) -> str:
    """One row per capture and kind, one column per compared field (% equal)."""
    lines = ["| capture | kind | " + " | ".join(COMPARED_FIELDS) + " |",
             "|" + "---|" * (len(COMPARED_FIELDS) + 2)]
    for r in results:
        for kind in KINDS:
            values = [("-" if v is None else f"{v:.1f}") for v in r[kind]["fields"].values()]
            lines.append(f"| {Path(r['capture']).name} | {kind} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("captures", nargs="*", type=Path)
    parser.add_argument("--all", action="store_true", help=f"every capture under {DATA_DIR}")
    parser.add_argument("--detail", nargs=2, metavar=("CAPTURE", "FIELD"))
    parser.add_argument("--kind", choices=KINDS, default="status", help="for --detail")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--fields", action="store_true", help="also print the per-field table")
    parser.add_argument("--loader", default=DEFAULT_LOADER)
    args = parser.parse_args(argv)

    if args.detail:
        capture, field = args.detail
        print(first_mismatches(Path(capture), field, args.kind, loader=args.loader).to_string())
        return 0
    captures = all_captures() if args.all else args.captures
    if not captures:
        parser.error("give captures or --all")
    results = []
    for capture in captures:
        try:
            results.append(compare_capture(capture, args.loader))
        except Exception as error:  # one broken capture must not stop the run
            print(f"{capture}: {type(error).__name__}: {error}", file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    print(markdown_table(results))
    if args.fields:
        print()
        print(field_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
