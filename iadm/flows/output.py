"""Writing record frames: CSV (Bot-IoT column order) and Parquet, streamed batch by batch.

A Parquet *dataset* (`DatasetWriter`, what `iadm features` writes) is a directory partitioned by
capture and hour, `OUT.parquet/capture=NAME/hour=YYYY-MM-DDTHH/part-0.parquet` (the hour of the
record's stime, UTC), every file with one declared schema (`PARQUET_SCHEMA`) whatever a capture's
frames carried, so that many captures written by many workers read back as one table.

Both formats go through pyarrow: the CSV with one `pyarrow.csv.CSVWriter` (header once, every
batch appended as it comes), the Parquet with one `pyarrow.parquet.ParquetWriter` (schema fixed by
the first batch, later batches cast to it), so memory does not grow with the capture.

Text as pandas' `to_csv` wrote it: floats in their shortest round-trip form with whole values as
`1.0` (so `pandas.read_csv` reads a whole-valued column back as float, not int), NaN and missing
label columns as empty fields, `smac` (a MAC kept as an integer, 0 = unknown) as `aa:bb:..` or empty.
"""
from __future__ import annotations

import datetime as dt
import os
import shutil
import urllib.parse
import uuid

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from iadm.flows.records import CSV_COLUMNS

# The 256 bytes as two lowercase hex digits, one row each (uint8 codes).
_HEX = np.frombuffer("".join(f"{b:02x}" for b in range(256)).encode(), dtype=np.uint8).reshape(256, 2)
_MAC_LEN = 17                                   # "aa:bb:cc:dd:ee:ff"
_SHIFTS = np.array([40, 32, 24, 16, 8, 0], dtype=np.uint64)
_HI = np.array([0, 3, 6, 9, 12, 15])            # where each byte's first hex digit goes
_CSV_SPECIAL = np.zeros(256, dtype=bool)         # a value with one of these bytes must be quoted
_CSV_SPECIAL[[ord(c) for c in ',"\r\n']] = True


def mac_array(values) -> pa.StringArray:
    """MACs held as integers (uint64; 0 = unknown) as text, vectorised: "" for 0, else "aa:bb:cc:dd:ee:ff"."""
    v = np.asarray(values).astype(np.uint64, copy=False)
    known = v != 0
    octets = ((v[known, None] >> _SHIFTS) & np.uint64(255)).astype(np.intp)      # (k, 6)
    text = np.full((len(octets), _MAC_LEN), ord(":"), dtype=np.uint8)
    hexed = _HEX[octets]                                                           # (k, 6, 2)
    text[:, _HI] = hexed[:, :, 0]
    text[:, _HI + 1] = hexed[:, :, 1]
    offsets = np.zeros(len(v) + 1, dtype=np.int64)
    np.cumsum(np.where(known, _MAC_LEN, 0), out=offsets[1:])
    return pa.LargeStringArray.from_buffers(len(v), pa.py_buffer(offsets), pa.py_buffer(text.ravel())) \
        .cast(pa.string())


def _is_mac_int(series: pd.Series) -> bool:
    return pd.api.types.is_integer_dtype(series.dtype) and not isinstance(series.dtype, pd.CategoricalDtype)


def _float_text(series: pd.Series) -> pa.Array:
    """Floats as pandas wrote them: whole values below 1e16 as Python's repr does ("3.0"), the
    rest in Arrow's shortest round-trip form (reads back to the same double); NaN -> null (empty)."""
    x = series.to_numpy()
    with np.errstate(invalid="ignore"):
        whole = np.isfinite(x) & (x == np.trunc(x)) & (np.abs(x) < 1e16)
    if whole.all():                                             # counts and zeros: the common case
        return pc.binary_join_element_wise(pa.array(x.astype(np.int64)).cast(pa.string()), ".0", "")
    nan = np.isnan(x)
    text = pa.array(x, mask=nan if nan.any() else None).cast(pa.string())   # NaN -> null (empty)
    if whole.any():
        ints = pa.array(np.where(whole, x, 0).astype(np.int64)).cast(pa.string())
        text = pc.if_else(pa.array(whole), pc.binary_join_element_wise(ints, ".0", ""), text)
    return text


def _csv_column(frame: pd.DataFrame, col: str) -> pa.Array:
    """One output column as Arrow text (the CSV writer turns every column into text anyway; doing
    it here keeps one schema for every batch whatever dtypes the frames carry)."""
    n = len(frame)
    if col not in frame:
        return pa.nulls(n, pa.string())
    s = frame[col]
    if col == "smac" and _is_mac_int(s):
        return mac_array(s.to_numpy())
    if pd.api.types.is_float_dtype(s.dtype):
        return _float_text(s)
    return pa.array(s, from_pandas=True).cast(pa.string())


def _needs_quotes(column) -> bool:
    """Whether any value of a text column holds a separator, quote or line end. Scans the
    columns' character buffers (a slice's unused bytes can only cause a needless quoting)."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    for chunk in chunks:
        data = chunk.buffers()[2] if len(chunk) else None
        if data is not None and _CSV_SPECIAL[np.frombuffer(data, dtype=np.uint8)].any():
            return True
    return False


def for_output(records: pd.DataFrame) -> pd.DataFrame:
    """Bot-IoT column order; labels empty until a labeller fills them; MACs as text."""
    out = {}
    for col in CSV_COLUMNS:
        if col not in records:
            out[col] = pd.Series(pd.NA, index=records.index, dtype=object)
        elif col == "smac" and _is_mac_int(records[col]):
            out[col] = mac_array(records[col].to_numpy()).to_pandas().set_axis(records.index)
        else:
            out[col] = records[col]
    return pd.DataFrame(out, index=records.index, columns=CSV_COLUMNS)


CSV_SCHEMA = pa.schema([(c, pa.string()) for c in CSV_COLUMNS])


class RecordWriter:
    """Streams record frames to a .csv or .parquet file, batch by batch."""

    def __init__(self, path: str):
        self.path = path
        self.kind = os.path.splitext(path)[1].lower()
        if self.kind not in (".csv", ".parquet"):
            raise ValueError(f"{path}: records are written as .csv or .parquet")
        self.rows = 0
        self._sink = None
        self._csv = None
        self._parquet = None
        if self.kind == ".csv":
            self._sink = pa.OSFile(path, "wb")
            self._csv = pacsv.CSVWriter(self._sink, CSV_SCHEMA,
                                        write_options=pacsv.WriteOptions(quoting_style="none", quoting_header="none"))

    def write(self, records: pd.DataFrame) -> None:
        if not len(records):
            return
        if self.kind == ".csv":
            self._write_csv(records)
        else:
            self._write_parquet(records)
        self.rows += len(records)

    def _write_csv(self, records: pd.DataFrame) -> None:
        columns = [_csv_column(records, c) for c in CSV_COLUMNS]
        batch = pa.Table.from_arrays(columns, schema=CSV_SCHEMA)
        text_columns = [c for c in CSV_COLUMNS
                        if c in records and not pd.api.types.is_numeric_dtype(records[c].dtype)]
        if any(_needs_quotes(batch.column(c)) for c in text_columns):
            # Rare (a label with a comma, say): this batch with every value quoted, as the same
            # stream; the unquoted writer above cannot carry a separator or quote in a value.
            pacsv.write_csv(batch, self._sink, write_options=pacsv.WriteOptions(
                include_header=False, quoting_style="needed"))
        else:
            self._csv.write_table(batch)

    def _write_parquet(self, records: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(for_output(records), preserve_index=False)
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self.path, table.schema)
        elif not table.schema.equals(self._parquet.schema, check_metadata=False):
            table = table.cast(self._parquet.schema)
        self._parquet.write_table(table)

    def close(self) -> None:
        if self._csv is not None:
            self._csv.close()
            self._sink.close()
            self._csv = self._sink = None
        if self.kind == ".parquet":
            if self._parquet is None:
                pd.DataFrame(columns=CSV_COLUMNS).to_parquet(self.path, index=False)
            else:
                self._parquet.close()
                self._parquet = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# The records' own dtypes (iadm.flows.records.make_records and the window aggregates), text as
# text (as a CSV holds them), labels nullable: a capture written without labels and one labelled
# by rules share one schema.
_TEXT = {"flgs", "proto", "saddr", "daddr", "state", "category", "subcategory", "smac", "gateway"}
_INT = {"pkSeqID", "proto_number", "sport", "dport", "pkts", "bytes", "state_number", "seq", "spkts", "dpkts",
        "sbytes", "dbytes", "attack", "sflags", "dflags", "rule_sid"}
# every other column (times, durations, rates, window aggregates, any measure added later) is float64
PARQUET_SCHEMA = pa.schema(
    [(c, pa.string() if c in _TEXT else pa.int64() if c in _INT else pa.float64()) for c in CSV_COLUMNS])
PARTITIONING = pa.schema([("capture", pa.string()), ("hour", pa.string())])


def record_table(records: pd.DataFrame) -> pa.Table:
    """A record frame as an Arrow table of PARQUET_SCHEMA (missing columns null, MACs as text).
    A value that does not fit its column's type is refused, naming the column."""
    n = len(records)
    columns = []
    for field in PARQUET_SCHEMA:
        col = field.name
        if col not in records:
            columns.append(pa.nulls(n, field.type))
            continue
        s = records[col]
        if col == "smac" and _is_mac_int(s):
            columns.append(mac_array(s.to_numpy()))
            continue
        try:
            array = pa.array(s.to_numpy() if isinstance(s.dtype, np.dtype) and s.dtype.kind in "iuf" else s,
                             from_pandas=True)
            columns.append(array if array.type == field.type else array.cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise ValueError(f"records column {col!r} ({s.dtype}) is not {field.type}: {exc}") from None
    return pa.Table.from_arrays(columns, schema=PARQUET_SCHEMA)


def _hour_names(hours: np.ndarray) -> np.ndarray:
    """Hours since the epoch as partition values: the UTC hour as YYYY-MM-DDTHH."""
    uniq, inverse = np.unique(hours, return_inverse=True)
    names = np.array([dt.datetime.fromtimestamp(int(h) * 3600, dt.UTC).strftime("%Y-%m-%dT%H")
                      for h in uniq], dtype=object)
    return names[inverse.ravel()]


def partition_dir(capture: str) -> str:
    """The directory name of a capture's partition (names are URI-escaped: a path may be a name)."""
    return "capture=" + urllib.parse.quote(capture, safe="")


class DatasetWriter:
    """Streams one capture's record frames into a partitioned Parquet dataset under `root`.

    Each hour of the capture gets one file, written a row group at a time (at most `row_group`
    rows buffered per hour), so memory does not grow with the capture. The capture's partition is
    built beside the dataset under a hidden name and swapped in by `close()`: a capture written
    again replaces its old records, and one that fails half-way (`abort()`) leaves them as they
    were. Readers skip the hidden directories.
    """

    def __init__(self, root: str, capture: str, row_group: int = 1 << 17):
        if not capture:
            raise ValueError(f"{root}: a capture needs a name to be written into a dataset")
        if os.path.exists(root) and not os.path.isdir(root):
            raise ValueError(f"{root}: exists and is not a directory (a Parquet dataset is one)")
        self.root, self.capture, self.row_group = root, capture, row_group
        self.final = os.path.join(root, partition_dir(capture))
        self.staging = os.path.join(root, f".{partition_dir(capture)}.{uuid.uuid4().hex[:12]}")
        os.makedirs(self.staging)
        self.rows = 0
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._pending: dict[str, list[pa.Table]] = {}
        self._pending_rows: dict[str, int] = {}

    def write(self, records: pd.DataFrame) -> None:
        if not len(records):
            return
        table = record_table(records)
        hours = _hour_names(np.floor(table.column("stime").to_numpy(zero_copy_only=False) / 3600.0)
                            .astype(np.int64))
        for hour in pd.unique(hours):
            part = table.filter(pa.array(hours == hour)) if len(set(hours)) > 1 else table
            self._pending.setdefault(hour, []).append(part)
            self._pending_rows[hour] = self._pending_rows.get(hour, 0) + len(part)
            if self._pending_rows[hour] >= self.row_group:
                self._flush(hour)
        self.rows += len(records)

    def _flush(self, hour: str) -> None:
        parts = self._pending.pop(hour, [])
        self._pending_rows.pop(hour, None)
        if not parts:
            return
        writer = self._writers.get(hour)
        if writer is None:
            directory = os.path.join(self.staging, f"hour={hour}")
            os.makedirs(directory, exist_ok=True)
            writer = self._writers[hour] = pq.ParquetWriter(os.path.join(directory, "part-0.parquet"),
                                                           PARQUET_SCHEMA)
        writer.write_table(pa.concat_tables(parts), row_group_size=max(self.row_group, 1))

    def close(self) -> None:
        """Write what is buffered and swap the capture's partition in (an empty capture leaves it empty)."""
        for hour in list(self._pending):
            self._flush(hour)
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
        old = None
        if os.path.exists(self.final):
            old = f"{self.staging}.old"
            os.rename(self.final, old)
        os.rename(self.staging, self.final)
        if old:
            shutil.rmtree(old)

    def abort(self) -> None:
        """Drop what this writer wrote; the capture's previous records stay."""
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
        self._pending.clear()
        shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        if kind is None:
            self.close()
        else:
            self.abort()
