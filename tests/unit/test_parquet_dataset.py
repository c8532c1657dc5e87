"""Records datasets: Parquet partitioned by capture and hour, written by DatasetWriter and by
`iadm features`, read back wherever records are read (read_records: train, evaluate, rules,
anomaly), with the same rows and values as the records the pipeline made."""
import os
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from iadm.cli import main
from iadm.flows.output import PARQUET_SCHEMA, DatasetWriter, record_table
from iadm.flows.pipeline import records_from_pcap
from iadm.flows.records import CSV_COLUMNS
from iadm.ml.datasets import DatasetError, load, read_records
from iadm.ml.split import holdout_captures, split
from iadm.synth import attacks, benign, label_records

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts"))
from make_training_data import write_pcap

T0 = 1_700_000_000.0   # 22:13:20 UTC; the second capture starts at 23:58 and crosses an hour


def synthetic_capture(path, seed: int, t0: float):
    packets = benign(t0, 300.0, devices=2, seed=seed)
    attack_packets, windows = attacks(t0 + 60.0, seed=seed)
    write_pcap(str(path), packets + attack_packets)
    return windows


def expected(records: pd.DataFrame) -> pd.DataFrame:
    """The pipeline's records as a dataset holds them (PARQUET_SCHEMA), for comparing."""
    return record_table(records).to_pandas()


def _ordered(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("pkSeqID", kind="stable").reset_index(drop=True)


@pytest.fixture(scope="module")
def captures(tmp_path_factory):
    root = tmp_path_factory.mktemp("caps")
    os.makedirs(root / "site" / "b")
    out = {}
    for i, rel in enumerate(["a.pcap", "site/b/c.pcap"]):
        out[rel] = (root / rel, synthetic_capture(root / rel, i, T0 + 6280 * i))
    return root, out


def test_features_writes_a_dataset_the_pipeline_records_row_for_row(captures, tmp_path):
    root, caps = captures
    out = tmp_path / "flows.parquet"
    assert main(["features", str(root), "-o", str(out), "--gateway", "gw-7"]) == 0
    names = sorted(d for d in os.listdir(out))
    assert names == ["capture=a.pcap", "capture=site%2Fb%2Fc.pcap"]     # a relative path is a name
    hours = sorted(os.listdir(out / "capture=site%2Fb%2Fc.pcap"))
    assert hours == ["hour=2023-11-14T23", "hour=2023-11-15T00"]       # its 300 s cross an hour
    got = read_records(str(out))
    assert list(got.columns) == CSV_COLUMNS + ["capture"]
    assert sorted(got["capture"].unique()) == ["a.pcap", "site/b/c.pcap"]
    for rel, (path, _) in caps.items():
        records, _ = records_from_pcap(str(path), kind="flow", gateway="gw-7")
        mine = got[got["capture"] == rel].drop(columns="capture")
        pd.testing.assert_frame_equal(_ordered(mine), _ordered(expected(records)), check_dtype=True)
    for part in out.rglob("*.parquet"):
        assert pq.read_schema(part).remove_metadata().equals(PARQUET_SCHEMA)


def test_rewriting_a_capture_replaces_it_and_a_failed_write_keeps_it(captures, tmp_path):
    (path, windows) = captures[1]["a.pcap"]
    records, _ = records_from_pcap(str(path), kind="flow")
    with DatasetWriter(str(tmp_path / "d"), "x") as w:
        w.write(records)
    with DatasetWriter(str(tmp_path / "d"), "x") as w:                 # again, labelled this time
        w.write(label_records(records, windows))
    got = read_records(str(tmp_path / "d"))
    assert len(got) == len(records) and got["category"].notna().all()
    with pytest.raises(RuntimeError), DatasetWriter(str(tmp_path / "d"), "x") as w:
        w.write(records.iloc[:10])
        raise RuntimeError("disk full, say")
    assert os.listdir(tmp_path / "d") == ["capture=x"]                 # no staging left behind
    assert len(read_records(str(tmp_path / "d"))) == len(records)


def test_labelled_and_unlabelled_captures_share_one_schema(captures, tmp_path):
    (path, windows) = captures[1]["a.pcap"]
    records, _ = records_from_pcap(str(path), kind="flow")
    with DatasetWriter(str(tmp_path / "d"), "plain") as w:
        w.write(records)
    with DatasetWriter(str(tmp_path / "d"), "labelled") as w:
        w.write(label_records(records, windows))
    got = read_records(str(tmp_path / "d"))
    plain = got[got["capture"] == "plain"]
    assert plain["attack"].isna().all() and got.loc[got["capture"] == "labelled", "attack"].notna().all()
    assert got["smac"].str.match(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$|^$").all()


def test_a_value_of_the_wrong_type_is_refused_naming_the_column(tmp_path):
    frame = pd.DataFrame({"stime": [T0], "sport": ["http"]})
    with pytest.raises(ValueError, match="'sport'"):
        DatasetWriter(str(tmp_path / "d"), "x").write(frame)


def test_a_split_by_capture_holds_out_whole_captures(captures, tmp_path):
    _, caps = captures
    for i in range(5):
        (path, windows) = caps["a.pcap"]
        records, _ = records_from_pcap(str(path), kind="flow")
        with DatasetWriter(str(tmp_path / "d"), f"cap{i}") as w:
            w.write(label_records(records, windows))
    frame, report = load(str(tmp_path / "d"), ["attack", "dur"])
    assert report.rows_kept == len(frame) == 5 * len(records)      # records of distinct captures are no duplicates
    train_idx, test_idx, how = split(frame, frame["attack"])
    assert how == {"by": "capture", "holdout_captures": holdout_captures([f"cap{i}" for i in range(5)])}
    assert len(how["holdout_captures"]) == 1
    assert set(frame.loc[test_idx, "capture"]) == set(how["holdout_captures"])
    assert not set(frame.loc[train_idx, "capture"]) & set(how["holdout_captures"])
    with pytest.raises(ValueError, match="at least two captures"):
        holdout_captures(["only"])


def test_readers_refuse_what_is_not_a_dataset(tmp_path):
    os.makedirs(tmp_path / "empty")
    with pytest.raises(DatasetError, match="no Parquet files"):
        read_records(str(tmp_path / "empty"))
    (tmp_path / "bad.parquet").mkdir()
    (tmp_path / "bad.parquet" / "x.parquet").write_text("not parquet")
    with pytest.raises(DatasetError, match="x.parquet"):
        read_records(str(tmp_path / "bad.parquet"))


def test_many_captures_need_a_parquet_dataset(captures, tmp_path, capsys):
    root, _ = captures
    assert main(["features", str(root), "-o", str(tmp_path / "x.csv")]) == 1
    assert "give an OUT.parquet" in capsys.readouterr().err
    assert main(["features", str(tmp_path / "nothing-*.pcap"), "-o", str(tmp_path / "x.parquet")]) == 1
    assert "no capture files" in capsys.readouterr().err


def test_rules_generate_reads_a_dataset(captures, tmp_path, capsys):
    (path, windows) = captures[1]["a.pcap"]
    records, _ = records_from_pcap(str(path), kind="flow")
    for name in ("one", "two"):
        with DatasetWriter(str(tmp_path / "d"), name) as w:
            w.write(label_records(records, windows))
    assert main(["rules", "generate", str(tmp_path / "d"), "-o", str(tmp_path / "gen.rules")]) == 0
    held = int(np.ceil(2 * len(records) / 3))      # the held-out third of both captures' rows
    assert f"held-out third ({held} rows)" in capsys.readouterr().out
    assert f"from {tmp_path / 'd'}" in (tmp_path / "gen.rules").read_text()
