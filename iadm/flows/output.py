"""Writing record frames: CSV (Bot-IoT column order) and Parquet, appended batch by batch."""
from __future__ import annotations

import os

import pandas as pd

from iadm.flows.records import CSV_COLUMNS, mac_text


def for_output(records: pd.DataFrame) -> pd.DataFrame:
    """Bot-IoT column order; labels empty until a labeller fills them; MACs as text."""
    out = records.copy()
    for col in CSV_COLUMNS:
        if col not in out:
            out[col] = pd.NA
    if len(out) and "smac" in records:
        out["smac"] = [mac_text(v) for v in records["smac"].tolist()]
    return out[CSV_COLUMNS]


class RecordWriter:
    """Appends record frames to a .csv or .parquet file (Parquet is written on close)."""

    def __init__(self, path: str):
        self.path = path
        self.kind = os.path.splitext(path)[1].lower()
        if self.kind not in (".csv", ".parquet"):
            raise ValueError(f"{path}: records are written as .csv or .parquet")
        self.rows = 0
        self._parts = []
        self._header = True
        if self.kind == ".csv":
            open(path, "w").close()

    def write(self, records: pd.DataFrame) -> None:
        if not len(records):
            return
        frame = for_output(records)
        if self.kind == ".csv":
            frame.to_csv(self.path, mode="a", header=self._header, index=False)
            self._header = False
        else:
            self._parts.append(frame)
        self.rows += len(frame)

    def close(self) -> None:
        if self.kind == ".csv" and self._header:
            pd.DataFrame(columns=CSV_COLUMNS).to_csv(self.path, index=False)
        if self.kind == ".parquet":
            frame = pd.concat(self._parts, ignore_index=True) if self._parts else pd.DataFrame(columns=CSV_COLUMNS)
            frame.to_parquet(self.path, index=False)
