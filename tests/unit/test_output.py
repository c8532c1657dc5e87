"""RecordWriter: streamed CSV / Parquet output that reads back as it was written."""
import numpy as np
import pandas as pd
import pytest

from iadm.flows.output import RecordWriter, for_output, mac_array
from iadm.flows.records import CSV_COLUMNS, LABEL_COLUMNS, RECORD_COLUMNS, mac_text

MACS = [0, 0xFFFFFFFFFFFF, 0x0123456789AB, 1, 0x44F4770FEA49]


def _frame(n: int, start: int = 0, labels: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(start)
    out = {}
    for col in RECORD_COLUMNS:
        out[col] = rng.integers(0, 70000, n)
    i = np.arange(start, start + n)
    out.update(
        pkSeqID=i + 1,
        stime=1619605821.09951 + i * 0.1,
        ltime=1619605821.09951 + i * 0.1 + 0.30000000000000004,
        dur=np.resize([0.0, 1.0, 1e-05, 0.1 + 0.2, 1e16, 123456789012345.0, 5e-324, -2.5, 1e300], n),
        mean=rng.random(n) * 1e6,
        stddev=np.resize([0.0, np.nan, 3.0], n),
        rate=np.resize([np.inf, 0.0, 7.25], n),
        flgs=pd.array(np.resize(["e", "e s", "e d"], n), dtype="str"),
        proto=pd.Categorical(np.resize(["tcp", "udp", "arp"], n)),
        state=pd.Categorical(np.resize(["REQ", "CON", "INT", "RST"], n)),
        saddr=pd.array([f"10.0.{k // 256 % 256}.{k % 256}" for k in i], dtype=pd.ArrowDtype(__import__("pyarrow").string())),
        daddr=pd.array(np.resize(["192.168.1.1", "fe80::1", "10.10.10.10"], n), dtype="str"),
        smac=np.resize(np.array(MACS, dtype=np.uint64), n),
        sflags=rng.integers(0, 256, n),
        dflags=rng.integers(0, 256, n),
    )
    for col in ("TnBPSrcIP", "TnP_PSrcIP", "AR_P_Proto_P_SrcIP"):
        out[col] = rng.random(n) * 100
    frame = pd.DataFrame(out)
    if labels:
        frame["attack"] = np.resize([0, 1], n)
        frame["category"] = np.resize(["Normal", "DDoS"], n)
        frame["subcategory"] = pd.Series(np.resize(["Normal", "TCP", None], n), dtype=object)
    return frame


def _expected(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    out["smac"] = [mac_text(int(v)) for v in frame["smac"]]
    for col in CSV_COLUMNS:
        if col not in out:
            out[col] = np.nan
    return out[CSV_COLUMNS]


def _write(path, frames):
    w = RecordWriter(str(path))
    for f in frames:
        w.write(f)
    w.close()
    return w


def test_mac_array_matches_mac_text():
    values = np.array(MACS + [0x0000000000FF, 0xFF0000000000], dtype=np.uint64)
    assert mac_array(values).to_pylist() == [mac_text(int(v)) for v in values]
    assert mac_array(np.array([], dtype=np.uint64)).to_pylist() == []
    assert mac_array(np.zeros(3, dtype=np.uint64)).to_pylist() == ["", "", ""]


@pytest.mark.parametrize("labels", [False, True])
def test_csv_round_trip(tmp_path, labels):
    frames = [_frame(50, 0, labels), _frame(0, 50, labels), _frame(37, 50, labels)]
    path = tmp_path / "out.csv"
    w = _write(path, frames)
    assert w.rows == 87
    got = pd.read_csv(path)
    assert list(got.columns) == CSV_COLUMNS
    want = _expected(pd.concat(frames, ignore_index=True))
    for col in CSV_COLUMNS:
        g, e = got[col], want[col]
        if col == "smac":
            assert g.fillna("").tolist() == e.tolist()
        elif pd.api.types.is_float_dtype(e.dtype):
            assert pd.api.types.is_float_dtype(g.dtype), col    # whole values written as "1.0", not "1"
            np.testing.assert_array_equal(g.to_numpy(), e.to_numpy(), err_msg=col)
        elif pd.api.types.is_integer_dtype(e.dtype):
            np.testing.assert_array_equal(g.to_numpy(), e.to_numpy(), err_msg=col)
        else:
            assert g.astype(object).where(g.notna(), None).tolist() == \
                e.astype(object).where(e.notna(), None).tolist(), col
    text = path.read_text().splitlines()
    assert text[0] == ",".join(CSV_COLUMNS)               # header once, unquoted
    assert sum(line.startswith("pkSeqID") for line in text) == 1
    assert ",ff:ff:ff:ff:ff:ff," in text[2]
    row = text[1].split(",")
    assert row[CSV_COLUMNS.index("dur")] == "0.0"          # as pandas wrote it
    assert row[CSV_COLUMNS.index("stddev")] == "0.0"
    assert text[2].split(",")[CSV_COLUMNS.index("stddev")] == ""   # NaN -> empty


def test_csv_same_text_as_pandas(tmp_path):
    """Byte for byte what pandas' to_csv wrote, except |x| < 1e-4 (Arrow "0.00001", Python "1e-05":
    the same double either way; test_csv_round_trip reads them back)."""
    frame = _frame(40, labels=True)
    frame["dur"] = frame["dur"].replace(1e-05, 0.25)
    path = tmp_path / "out.csv"
    _write(path, [frame])
    old = for_output(frame).to_csv(index=False)
    assert path.read_text() == old


def test_csv_value_needing_quotes(tmp_path):
    frames = [_frame(5, 0, labels=True), _frame(5, 5, labels=True)]
    frames[1]["category"] = ['DoS, "odd"', "a\nb", "Normal", "x", "y"]
    path = tmp_path / "out.csv"
    _write(path, frames)
    got = pd.read_csv(path)
    assert len(got) == 10
    assert got["category"].tolist()[5:7] == ['DoS, "odd"', "a\nb"]
    assert got["pkSeqID"].tolist() == list(range(1, 11))


def test_empty_csv_has_header(tmp_path):
    path = tmp_path / "empty.csv"
    w = _write(path, [])
    assert w.rows == 0
    assert path.read_text().strip() == ",".join(CSV_COLUMNS)
    assert list(pd.read_csv(path).columns) == CSV_COLUMNS


@pytest.mark.parametrize("labels", [False, True])
def test_parquet_round_trip(tmp_path, labels):
    frames = [_frame(50, 0, labels), _frame(30, 50, labels)]
    frames[1]["proto"] = pd.Categorical(np.resize(["icmp", "tcp"], 30))    # other categories later
    path = tmp_path / "out.parquet"
    w = _write(path, frames)
    assert w.rows == 80
    got = pd.read_parquet(path)
    assert list(got.columns) == CSV_COLUMNS
    want = _expected(pd.concat(frames, ignore_index=True))
    assert got["smac"].tolist() == want["smac"].tolist()
    for col in CSV_COLUMNS:
        g, e = got[col], want[col]
        if pd.api.types.is_float_dtype(e.dtype) or pd.api.types.is_integer_dtype(e.dtype):
            np.testing.assert_array_equal(g.to_numpy(dtype=float, na_value=np.nan), e.to_numpy(dtype=float),
                                          err_msg=col)
        else:
            assert g.astype(object).where(g.notna(), None).tolist() == \
                e.astype(object).where(e.notna(), None).tolist(), col


def test_empty_parquet(tmp_path):
    path = tmp_path / "empty.parquet"
    _write(path, [])
    got = pd.read_parquet(path)
    assert len(got) == 0 and list(got.columns) == CSV_COLUMNS


def test_unknown_suffix():
    with pytest.raises(ValueError):
        RecordWriter("x.json")
