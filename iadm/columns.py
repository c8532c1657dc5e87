"""Frames of object columns, built without pandas 3's string inference.

pandas 3 turns every numpy array of Python strings handed to DataFrame() into an
Arrow-backed str column: a copy of each string on the way in and another on each
to_numpy() on the way out, about 1.5 ms per 25,000-row column. The detection path
builds and reads a dozen such columns per batch (labels, sources, messages), so it
keeps them as object columns end to end; records written to files are the flow
pipeline's, not these.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa


def object_frame(columns: dict, index=None) -> pd.DataFrame:
    """DataFrame(columns) with every object-dtype numpy array kept as an object column."""
    return pd.DataFrame({name: pd.Series(values, dtype=object, copy=False, index=index)
                         if isinstance(values, np.ndarray) and values.dtype == object else values
                         for name, values in columns.items()}, index=index)


def objects(column: pd.Series) -> np.ndarray:
    """A column's values as a numpy object array: free for object columns, one pass over the
    few categories for categoricals, a conversion for the rest."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        codes = column.cat.codes.to_numpy()
        values = np.asarray(column.cat.categories.to_numpy(dtype=object))
        if (codes < 0).any():
            values = np.append(values, None)
        return values[codes]
    return column.to_numpy(dtype=object)


def text_spans(values) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(offsets int64, bytes uint8, valid bool) of a column or Index of text, zero-copy for Arrow
    strings: what compiled kernels read text from without a Python object per value."""
    array = values.array if hasattr(values, "array") else values
    array = pa.array(array) if hasattr(array, "__arrow_array__") else \
        pa.array(np.asarray(values, dtype=object), from_pandas=True, type=pa.large_string())
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if not pa.types.is_large_string(array.type):
        array = array.cast(pa.large_string())
    valid = np.ones(len(array), dtype=bool) if not array.null_count else \
        array.is_valid().to_numpy(zero_copy_only=False)
    _, offsets, data = array.buffers()
    off = np.frombuffer(offsets, dtype=np.int64, count=array.offset + len(array) + 1)[array.offset:]
    data = np.frombuffer(data, dtype=np.uint8) if data is not None and data.size else np.zeros(1, np.uint8)
    return off, data, valid
