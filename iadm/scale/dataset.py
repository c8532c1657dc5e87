"""Reading a partitioned records dataset (`iadm features ... -o OUT.parquet`, see iadm/flows/output.py).

Two ways in: the whole table as one pandas frame (what the pandas paths of train, evaluate, rules
and anomaly read; the `capture` partition comes back as a categorical column, the hour is dropped:
it is stime's), or a list of the dataset's files with their capture, hour and row count, so that a
cluster's workers can each read their share of the files and only the columns they need
(`load_matrix`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from iadm.flows.output import PARTITIONING


class DatasetError(ValueError):
    pass


@dataclass(frozen=True)
class Part:
    """One file of a dataset: its path, the capture and hour it holds, its rows."""
    path: str
    capture: str
    hour: str
    rows: int


def parts(root: str) -> list[Part]:
    """Every file of the dataset under root, sorted by capture then hour (hidden staging skipped)."""
    if not os.path.isdir(root):
        raise DatasetError(f"{root}: not a directory (a records dataset is one)")
    try:
        dataset = ds.dataset(root, format="parquet", partitioning=ds.partitioning(PARTITIONING, flavor="hive"))
    except (pa.ArrowInvalid, OSError) as exc:
        raise DatasetError(f"{root}: not a readable Parquet dataset: {exc}") from None
    out = []
    for fragment in dataset.get_fragments():
        keys = ds.get_partition_keys(fragment.partition_expression)
        try:
            rows = fragment.metadata.num_rows
        except (pa.ArrowInvalid, OSError) as exc:
            raise DatasetError(f"{fragment.path}: not a readable Parquet file: {exc}") from None
        capture = keys.get("capture") or os.path.relpath(fragment.path, root)   # a flat directory of files
        out.append(Part(fragment.path, str(capture), str(keys.get("hour", "")), rows))
    if not out:
        raise DatasetError(f"{root}: holds no Parquet files")
    return sorted(out, key=lambda p: (p.capture, p.hour, p.path))


def read_frame(root: str, columns: list[str] | None = None) -> pd.DataFrame:
    """The dataset as one frame, in capture and hour order, with a categorical `capture` column."""
    found = parts(root)
    dataset = ds.dataset([p.path for p in found], format="parquet", partition_base_dir=root,
                         partitioning=ds.partitioning(PARTITIONING, flavor="hive"))
    names = [n for n in dataset.schema.names if n != "hour"]
    wanted = names if columns is None else [c for c in columns if c in names]
    table = dataset.to_table(columns=wanted)
    if "capture" in table.column_names:
        captures = table.column("capture")
        if captures.null_count:   # files straight under root: each file is its own capture
            by_file = pa.chunked_array([pa.array([p.capture] * p.rows, pa.string()) for p in found if p.rows],
                                       type=pa.string())
            captures = pc.coalesce(captures, by_file) if len(by_file) == len(captures) else captures
        table = table.set_column(table.column_names.index("capture"), "capture", pc.dictionary_encode(captures))
    return table.to_pandas()


BATCH_ROWS = 65_536


def load_matrix(files: list[str], features: list[str], target: str, also: tuple = ()) -> dict:
    """Only these columns of these files, as the training matrix of one worker: the features as
    float32 in one block (the layout LightGBM reads without a copy), the target, and `also`.
    Rows with a missing feature or target are dropped and counted per column."""
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    block = np.empty((len(features), rows), dtype=np.float32)
    keep = np.ones(rows, dtype=bool)
    labels: dict[str, list] = {c: [] for c in (target, *also)}
    missing = dict.fromkeys([*features, target], 0)
    at = 0
    for path in files:
        # in batches: a whole file's columns at once would leave the allocator holding their size
        for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS, columns=[*features, *labels]):
            n = batch.num_rows
            for i, col in enumerate(features):
                block[i, at:at + n] = batch.column(col).to_numpy(zero_copy_only=False)
                bad = np.isnan(block[i, at:at + n])
                missing[col] += int((bad & keep[at:at + n]).sum())
                keep[at:at + n] &= ~bad
            for col, chunks in labels.items():
                column = batch.column(col)
                if col == target:
                    bad = column.is_null().to_numpy(zero_copy_only=False)
                    missing[col] += int((bad & keep[at:at + n]).sum())
                    keep[at:at + n] &= ~bad
                chunks.append(column)
            at += n
    if not keep.all():
        block = np.ascontiguousarray(block[:, keep])
    x = pd.DataFrame(block.T, columns=features, copy=False)
    out = {"x": x, "rows_read": rows, "missing": missing}
    for col, chunks in labels.items():
        values = pa.chunked_array(chunks, type=chunks[0].type if chunks else pa.int64()).to_pandas()
        values = values[keep].reset_index(drop=True) if not keep.all() else values
        out[col] = values.astype(np.int64) if col == "attack" and not values.isna().any() else values
    return out
