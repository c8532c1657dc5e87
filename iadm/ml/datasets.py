"""Labelled flow records from every published Bot-IoT shape, and from our own records.

Shapes read:
- the full dataset (35 columns), with a header, or without one (then the
  names come from the dataset's feature-names file, or are the full
  dataset's 35 in their published order);
- the 5% extract (`Full5pc`) and the 10-best training/testing files, with
  `,` or `;` between fields and quoted headers;
- the monitor's records (CSV or Parquet, same column names), and a records dataset (the directory
  `iadm features` writes, partitioned by capture and hour; its rows carry a `capture` column);
- any of these with `category` but no `attack` column (a common published
  shape): `attack` follows from `category` (Normal = 0, anything else = 1).

Cleaning, as the reference report describes, and counted: exact duplicate
rows (pkSeqID aside) are dropped; ports become integers (`80.0` -> 80, ARP's
and ICMP's hex `0x0303` -> 771, empty -> -1); rows whose label or any
selected feature is missing are dropped. `CleanReport` says what went.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from iadm.flows.records import PROTO_NUMBERS, STATE_NUMBERS

FULL_COLUMNS = [
    "pkSeqID", "stime", "flgs", "proto", "saddr", "sport", "daddr", "dport", "pkts", "bytes", "state", "ltime",
    "seq", "dur", "mean", "stddev", "smac", "dmac", "sum", "min", "max", "soui", "doui", "sco", "dco", "spkts",
    "dpkts", "sbytes", "dbytes", "rate", "srate", "drate", "attack", "category", "subcategory",
]
_KNOWN = set(FULL_COLUMNS) | {"proto_number", "state_number", "flgs_number", "N_IN_Conn_P_DstIP",
                              "N_IN_Conn_P_SrcIP", "TnBPSrcIP", "TnBPDstIP"}


class DatasetError(ValueError):
    pass


@dataclass
class CleanReport:
    source: str
    rows_read: int = 0
    duplicates: int = 0
    missing: dict = field(default_factory=dict)   # column -> rows dropped for it
    rows_kept: int = 0

    def summary(self) -> str:
        missing = ", ".join(f"{c}: {n}" for c, n in self.missing.items() if n) or "none"
        return (f"{self.source}: {self.rows_read:,} rows read, {self.duplicates:,} duplicates dropped, "
                f"rows with missing values dropped ({missing}), {self.rows_kept:,} kept")


def _port(value) -> int:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return -1
    text = str(value).strip()
    if not text or text.lower() == "nan":
        return -1
    try:
        return int(text, 16) if text.lower().startswith("0x") else int(float(text))
    except ValueError:
        return -1


def read_records(path: str, names_file: str | None = None) -> pd.DataFrame:
    """The raw table of a file, with Bot-IoT column names; no cleaning."""
    if not os.path.exists(path):
        raise DatasetError(f"{path}: no such file")
    if os.path.isdir(path):
        from iadm.scale.dataset import DatasetError as PartsError
        from iadm.scale.dataset import read_frame
        try:
            return read_frame(path)
        except PartsError as exc:
            raise DatasetError(str(exc)) from None
    if path.endswith(".parquet"):
        return pd.read_parquet(path)
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        first = fh.readline()
    if not first.strip():
        raise DatasetError(f"{path}: empty file")
    delimiter = ";" if first.count(";") > first.count(",") else ","
    fields = [f.strip().strip('"') for f in next(csv.reader([first], delimiter=delimiter))]
    has_header = sum(f in _KNOWN for f in fields) >= 3
    if has_header:
        frame = pd.read_csv(path, sep=delimiter, low_memory=False, quotechar='"')
        frame.columns = [str(c).strip().strip('"') for c in frame.columns]
        return frame
    if names_file:
        with open(names_file, encoding="utf-8") as fh:
            names = [n.strip().strip('"') for n in fh.read().replace("\n", ",").split(",") if n.strip()]
    elif len(fields) == len(FULL_COLUMNS):
        names = FULL_COLUMNS
    else:
        raise DatasetError(f"{path}: no header and {len(fields)} fields per row; give the feature-names file "
                           f"(the full dataset has {len(FULL_COLUMNS)})")
    if len(names) != len(fields):
        raise DatasetError(f"{path}: {len(fields)} fields per row but {len(names)} names in {names_file}")
    return pd.read_csv(path, sep=delimiter, header=None, names=names, low_memory=False)


def derive(frame: pd.DataFrame) -> pd.DataFrame:
    """Numeric encodings the models read: proto_number and state_number from the text columns, and
    `attack` from `category` when a file has only the category (Normal -> 0, any other -> 1; a
    missing category stays missing, so cleaning drops the row)."""
    out = frame
    if "attack" not in out and "category" in out:
        text = out["category"].astype("string").str.strip()
        missing = (text.isna() | (text == "")).to_numpy(dtype=bool)
        attack = (text.str.lower() != "normal").fillna(False).to_numpy(dtype=np.int64)
        # as read_csv would give an attack column: integers, or floats with NaN where a value is missing
        out = out.assign(attack=np.where(missing, np.nan, attack) if missing.any() else attack)
    if "proto_number" not in out and "proto" in out:
        out = out.assign(proto_number=out["proto"].map(lambda p: PROTO_NUMBERS.get(str(p), 99)))
    if "state_number" not in out and "state" in out:
        out = out.assign(state_number=out["state"].map(lambda s: STATE_NUMBERS.get(str(s), 0)))
    return out


def numeric_ports(frame: pd.DataFrame) -> pd.DataFrame:
    """Ports as integers: `80.0` -> 80, ARP's and ICMP's hex `0x0303` -> 771, empty -> -1.
    Integer columns (our records) are already that: no per-value parse."""
    ports = {col: frame[col].astype(np.int64) if pd.api.types.is_integer_dtype(frame[col].dtype)
             else frame[col].map(_port).astype(np.int64) for col in ("sport", "dport") if col in frame}
    return frame.assign(**ports)


def clean(frame: pd.DataFrame, source: str, required: list[str]) -> tuple[pd.DataFrame, CleanReport]:
    report = CleanReport(source, rows_read=len(frame))
    out = numeric_ports(frame)
    identity = [c for c in out.columns if c != "pkSeqID"]
    before = len(out)
    out = out.drop_duplicates(subset=identity)
    report.duplicates = before - len(out)
    for col in required:
        if col not in out:
            raise DatasetError(f"{source}: column {col!r} is missing (has: {', '.join(map(str, out.columns[:12]))}...)")
        if col not in ("category", "subcategory", "proto", "state", "saddr", "daddr"):
            out[col] = pd.to_numeric(out[col], errors="coerce")
        bad = out[col].isna()
        report.missing[col] = int(bad.sum())
        out = out[~bad]
    report.rows_kept = len(out)
    return out.reset_index(drop=True), report


def load(path: str, required: list[str], names_file: str | None = None) -> tuple[pd.DataFrame, CleanReport]:
    """Read, derive the numeric encodings, and clean: the table a model trains or predicts on."""
    return clean(derive(read_records(path, names_file)), path, required)
