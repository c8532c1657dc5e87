"""The Dask paths against the pandas paths on a real LocalCluster (2 worker processes):
`iadm features --dask` writes the records the serial path writes, row for row, and
`iadm train --dask` (lightgbm.dask; Random Forest through joblib's Dask backend) scores as the
pandas-trained model does on the same held-out captures."""
import os

import pandas as pd
import pytest
from test_parquet_dataset import T0, _ordered, expected, synthetic_capture

from iadm.cli import main
from iadm.flows.output import DatasetWriter
from iadm.flows.pipeline import records_from_pcap
from iadm.ml import registry
from iadm.ml.dask_train import train_on_cluster
from iadm.ml.datasets import read_records
from iadm.ml.split import holdout_captures
from iadm.ml.train import train
from iadm.scale.cluster import connect
from iadm.scale.features import extract_many
from iadm.synth import label_records

FLOW = {"status_interval": 5.0, "idle_timeout": 30.0, "max_flows": 1 << 18, "kind": "flow"}   # as `iadm features`


@pytest.fixture(scope="module")
def client():
    with connect("local", workers=2, memory_limit="1GB") as c:
        yield c


@pytest.fixture(scope="module")
def captures(tmp_path_factory):
    root = tmp_path_factory.mktemp("caps")
    windows = {f"c{i}.pcap": synthetic_capture(root / f"c{i}.pcap", i, T0 + 4000 * i) for i in range(6)}
    return root, windows


@pytest.fixture(scope="module")
def labelled(captures, tmp_path_factory):
    """The captures' records labelled by injection window, as a dataset."""
    root, windows = captures
    out = tmp_path_factory.mktemp("labelled") / "records.parquet"
    for name, w in windows.items():
        records, _ = records_from_pcap(str(root / name), kind="flow")
        with DatasetWriter(str(out), name) as writer:
            writer.write(label_records(records, w))
    return str(out)


def test_dask_features_are_the_serial_records_row_for_row(client, captures, tmp_path):
    root, windows = captures
    serial = extract_many(str(root), str(tmp_path / "serial.parquet"), FLOW)
    spread = extract_many(f"{root}/*.pcap", str(tmp_path / "dask.parquet"), FLOW, client=client)
    assert spread["captures"] == serial["captures"] == 6 and not spread["failed"]
    assert spread["records_written"] == serial["records_written"] and spread["packets"] == serial["packets"]
    a, b = read_records(str(tmp_path / "serial.parquet")), read_records(str(tmp_path / "dask.parquet"))
    pd.testing.assert_frame_equal(a, b)
    for name in windows:                          # and both are what the pipeline makes of each capture
        records, _ = records_from_pcap(str(root / name), kind="flow")
        mine = b[b["capture"] == name].drop(columns="capture")
        pd.testing.assert_frame_equal(_ordered(mine), _ordered(expected(records)))


def test_a_damaged_capture_fails_alone(client, captures, tmp_path):
    root, _ = captures
    bad = tmp_path / "caps"
    os.makedirs(bad)
    for name in ("c0.pcap", "c1.pcap"):
        os.link(root / name, bad / name)
    data = (root / "c2.pcap").read_bytes()
    (bad / "cut.pcap").write_bytes(data[: len(data) // 2 + 7])   # cut inside a packet
    stats = extract_many(str(bad), str(tmp_path / "out.parquet"), FLOW, client=client)
    assert len(stats["failed"]) == 1 and stats["failed"][0].startswith("cut.pcap: ")
    got = read_records(str(tmp_path / "out.parquet"))
    assert set(got["capture"]) == {"c0.pcap", "c1.pcap", "cut.pcap"}   # what came before the damage is kept
    assert 0 < (got["capture"] == "cut.pcap").sum() < (got["capture"] == "c0.pcap").sum()


@pytest.mark.parametrize("kind,target", [("lightgbm", "category"), ("rf", "attack")])
def test_dask_model_scores_as_the_pandas_model_on_the_same_captures(client, labelled, tmp_path, kind, target):
    pandas_model = train(labelled, kind, str(tmp_path / "pandas"), target=target)
    dask_model = train_on_cluster(labelled, kind, str(tmp_path / "dask"), client, target=target)
    p, d = pandas_model.card, dask_model.card
    assert p["split"] == d["split"] and d["split"]["by"] == "capture"
    assert p["metrics"]["holdout_rows"] == d["metrics"]["holdout_rows"]
    assert p["data"]["train_rows"] == d["data"]["train_rows"] and d["data"]["captures"] == 6
    assert p["classes"] == d["classes"]
    assert d["metrics"]["f1_macro"] > 0.9
    assert abs(p["metrics"]["f1_macro"] - d["metrics"]["f1_macro"]) <= 0.005
    assert d["cluster"]["workers"] == 2 and d["time"]["fit_seconds"] > 0
    if kind == "lightgbm":
        assert d["cluster"]["workers_trained"] == 2
    again = registry.load(str(tmp_path / "dask"))                      # a registered model like any other
    records = read_records(labelled)
    held = records[records["capture"].isin(d["split"]["holdout_captures"])]
    assert (again.predict(held)["label"].to_numpy() == pandas_model.predict(held)["label"].to_numpy()).mean() > 0.99


def test_a_worker_without_a_class_is_refused(client, captures, tmp_path):
    root, windows = captures
    out = tmp_path / "skewed.parquet"
    for i, (name, w) in enumerate(windows.items()):
        records, _ = records_from_pcap(str(root / name), kind="flow")
        labelled = label_records(records, w)
        if i:   # only the first capture has Theft
            labelled.loc[labelled["category"] == "Theft", ["category", "subcategory"]] = ["DoS", "UDP"]
        with DatasetWriter(str(out), name) as writer:
            writer.write(labelled)
    seed = next(s for s in range(10) if "c0.pcap" not in holdout_captures(windows, seed=s))   # Theft trains
    with pytest.raises(ValueError, match="no training rows of class.*Theft"):
        train_on_cluster(str(out), "lightgbm", str(tmp_path / "m"), client, target="category", seed=seed)


def test_the_cli_runs_on_a_scheduler_given_its_address(client, captures, tmp_path, capsys):
    root, _ = captures
    address = client.scheduler.address
    assert main(["features", str(root / "c0.pcap"), "-o", str(tmp_path / "one.parquet"), "--dask", address]) == 0
    assert "1 captures" in capsys.readouterr().err
    assert len(read_records(str(tmp_path / "one.parquet"))) > 1000
    with pytest.raises(ValueError, match="no Dask scheduler answered at tcp://127.0.0.1:9"), \
            connect("127.0.0.1:9", timeout=1):
        pass
