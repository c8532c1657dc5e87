"""Datasets in every shape, training, the registry's refusals, the report's metrics, the hybrid verdict."""
import json
import os

import numpy as np
import pandas as pd
import pytest

from iadm.ml import evaluate, registry
from iadm.ml.datasets import FULL_COLUMNS, DatasetError, load, read_records
from iadm.ml.train import evaluate_file, train
from iadm.detection.fusion import agreement, fuse

BOT_IOT = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "bot-iot", "BoT_IoT_1000.csv")


def full_rows(n=6):
    rows = []
    for i in range(n):
        row = dict.fromkeys(FULL_COLUMNS, 0)
        row.update(pkSeqID=i + 1, stime=1.5e9 + i, proto="tcp" if i % 2 else "arp", saddr="10.0.0.1",
                   daddr="10.0.0.2", sport=f"{1000 + i}.0" if i % 2 else "0x0303", dport="80.0" if i % 2 else "",
                   state="REQ", attack=i % 2, category="DoS" if i % 2 else "Normal",
                   subcategory="TCP" if i % 2 else "Normal", flgs="e", smac="", dmac="")
        rows.append(row)
    return pd.DataFrame(rows, columns=FULL_COLUMNS)


def test_full_dataset_with_header_cleans_ports_and_counts_duplicates(tmp_path):
    frame = full_rows()
    dup = frame.iloc[[1]].assign(pkSeqID=99)   # same record, another pkSeqID: a duplicate
    path = tmp_path / "full.csv"
    pd.concat([frame, dup]).to_csv(path, index=False)
    data, report = load(str(path), required=["attack", "dur"])
    assert report.rows_read == 7 and report.duplicates == 1 and report.rows_kept == 6
    assert data.sport.tolist() == [771, 1001, 771, 1003, 771, 1005]
    assert data.dport.tolist() == [-1, 80, -1, 80, -1, 80]
    assert data.proto_number.tolist()[:2] == [2, 1] and (data.state_number == 1).all()


def test_headerless_full_dataset_and_feature_names_file(tmp_path):
    path = tmp_path / "nohead.csv"
    full_rows().to_csv(path, index=False, header=False)
    assert list(read_records(str(path)).columns) == FULL_COLUMNS
    names = tmp_path / "names.csv"
    reordered = FULL_COLUMNS[::-1]
    names.write_text(",".join(reordered) + "\n")
    full_rows()[reordered].to_csv(tmp_path / "custom.csv", index=False, header=False)
    assert read_records(str(tmp_path / "custom.csv"), str(names))["proto"].tolist()[:2] == ["arp", "tcp"]
    (tmp_path / "odd.csv").write_text("1,2,3\n4,5,6\n")
    with pytest.raises(DatasetError, match="no header and 3 fields"):
        read_records(str(tmp_path / "odd.csv"))


def test_ten_best_semicolon_quoted_and_5pc_shapes(tmp_path):
    ten = ['"pkSeqID"', '"proto"', '"saddr"', '"sport"', '"daddr"', '"dport"', '"seq"', '"stddev"',
           '"N_IN_Conn_P_SrcIP"', '"min"', '"state_number"', '"mean"', '"N_IN_Conn_P_DstIP"', '"drate"', '"srate"',
           '"max"', '"attack"', '"category"', '"subcategory"']
    lines = [";".join(ten), '1;"tcp";"10.0.0.1";"80";"10.0.0.2";"0x0303";5;0.1;3;0;4;0.2;7;0;1.5;0.4;1;"DoS";"TCP"']
    (tmp_path / "ten.csv").write_text("\n".join(lines) + "\n")
    data, _ = load(str(tmp_path / "ten.csv"), required=["N_IN_Conn_P_DstIP", "attack"])
    assert data.N_IN_Conn_P_DstIP.tolist() == [7] and data.dport.tolist() == [771] and data.category.tolist() == ["DoS"]
    frame = full_rows().assign(proto_number=1, flgs_number=1, N_IN_Conn_P_DstIP=3)
    frame.to_csv(tmp_path / "5pc.csv", index=False, quoting=1)
    assert "N_IN_Conn_P_DstIP" in read_records(str(tmp_path / "5pc.csv"))


def test_our_records_as_csv_and_parquet_and_missing_values(tmp_path):
    frame = full_rows().assign(dur=[0.1, np.nan, 0.3, 0.4, 0.5, 0.6])
    frame.to_parquet(tmp_path / "r.parquet")
    data, report = load(str(tmp_path / "r.parquet"), required=["attack", "dur"])
    assert report.missing["dur"] == 1 and len(data) == 5
    assert "dur: 1" in report.summary()
    with pytest.raises(DatasetError, match="column 'N_IN_Conn_P_DstIP' is missing"):
        load(str(tmp_path / "r.parquet"), required=["N_IN_Conn_P_DstIP"])
    with pytest.raises(DatasetError, match="no such file"):
        load(str(tmp_path / "none.csv"), required=[])


def synthetic(path, n=1200, seed=0):
    rng = np.random.default_rng(seed)
    attack = rng.random(n) < 0.7
    frame = pd.DataFrame({
        "proto": np.where(attack, "tcp", "udp"), "state": np.where(attack, "REQ", "CON"),
        "saddr": "10.0.0.1", "daddr": "10.0.0.2", "sport": 1, "dport": np.where(attack, 80, 5683),
        "pkts": rng.integers(1, 10, n), "bytes": rng.integers(60, 900, n), "dur": rng.random(n),
        "mean": rng.random(n), "stddev": rng.random(n), "sum": rng.random(n), "min": rng.random(n),
        "max": rng.random(n), "spkts": rng.integers(1, 5, n), "dpkts": np.where(attack, 0, rng.integers(1, 5, n)),
        "sbytes": rng.integers(60, 900, n), "dbytes": rng.integers(0, 900, n),
        "rate": np.where(attack, rng.uniform(100, 900, n), rng.uniform(0, 5, n)), "srate": rng.random(n),
        "drate": rng.random(n), "stime": np.arange(n, dtype=float), "attack": attack.astype(int),
        "category": np.where(attack, "DoS", "Normal"), "subcategory": np.where(attack, "TCP", "Normal")})
    frame.to_csv(path, index=False)


@pytest.mark.parametrize("kind", ["rf", "adaboost", "lightgbm", "knn", "tree"])
def test_every_model_kind_trains_registers_and_predicts(tmp_path, kind):
    data = tmp_path / "d.csv"
    synthetic(data)
    model = train(str(data), kind, str(tmp_path / "models" / kind), stream=open(os.devnull, "w"))
    card = json.loads((tmp_path / "models" / f"{kind}.json").read_text())
    assert card["schema"] == "iadm-model/1" and card["kind"] == kind and card["features"][0] == "proto_number"
    assert card["data"]["fingerprint"].startswith("sha256:") and card["data"]["class_balance"]
    assert "scikit-learn" in card["versions"] and card["metrics"]["f1_macro"] >= 0.95
    pred = model.predict(pd.read_csv(data).assign(proto_number=1, state_number=1).head(20))
    assert set(pred.columns) == {"label", "attack", "score"} and pred.score.between(0, 1).all()


def test_category_target_and_evaluate_with_cross_validation(tmp_path):
    data = tmp_path / "d.csv"
    synthetic(data)
    train(str(data), "tree", str(tmp_path / "m"), target="category", stream=open(os.devnull, "w"))
    result = evaluate_file(str(data), str(tmp_path / "m"), cv=3)
    assert len(result["cv_f1_macro"]) == 3 and min(result["cv_f1_macro"]) > 0.95
    assert set(result["confusion"].index) == {"DoS", "Normal"}
    assert "3-fold stratified CV F1-macro" in evaluate.render(result)


def test_registry_refuses_what_does_not_fit(tmp_path):
    data = tmp_path / "d.csv"
    synthetic(data)
    train(str(data), "tree", str(tmp_path / "good"), stream=open(os.devnull, "w"))
    train(str(data), "tree", str(tmp_path / "cat"), target="category", stream=open(os.devnull, "w"))
    good = registry.load(str(tmp_path / "good"))
    with pytest.raises(registry.ModelError, match="lack feature.*srate"):
        good.predict(pd.DataFrame({"proto_number": [1], "dur": [0.1]}))
    (tmp_path / "lonely.joblib").write_bytes((tmp_path / "good.joblib").read_bytes())
    with pytest.raises(registry.ModelError, match="lonely.json: the model card is missing"):
        registry.load(str(tmp_path / "lonely"))
    card = json.loads((tmp_path / "good.json").read_text())
    # a compiled model does not depend on the libraries' versions; its estimator, loaded on demand, does
    (tmp_path / "v.joblib").write_bytes((tmp_path / "good.joblib").read_bytes())
    (tmp_path / "v.trees.npz").write_bytes((tmp_path / "good.trees.npz").read_bytes())
    (tmp_path / "v.json").write_text(json.dumps({**card, "versions": {**card["versions"], "scikit-learn": "0.19.1"}}))
    assert registry.load(str(tmp_path / "v")).compiled
    with pytest.raises(registry.ModelError, match="trained with scikit-learn 0.19.1"):
        registry.load(str(tmp_path / "v")).estimator
    card.pop("compiled")   # what follows is the joblib path: a card without compiled trees
    for change, words in (({"schema": "other/1"}, "not an iadm model card"),
                          ({"versions": {**card["versions"], "scikit-learn": "0.19.1"}}, "trained with scikit-learn 0.19.1")):
        (tmp_path / "x.joblib").write_bytes((tmp_path / "good.joblib").read_bytes())
        (tmp_path / "x.json").write_text(json.dumps({**card, **change}))
        with pytest.raises(registry.ModelError, match=words):
            registry.load(str(tmp_path / "x"))
    (tmp_path / "x.json").write_text(json.dumps(card))
    (tmp_path / "x.joblib").write_bytes((tmp_path / "cat.joblib").read_bytes())   # another model's file
    with pytest.raises(registry.ModelError, match="does not belong together"):
        registry.load(str(tmp_path / "x"))
    (tmp_path / "x.joblib").write_bytes(b"not a pickle at all")
    with pytest.raises(registry.ModelError, match="cannot load the model"):
        registry.load(str(tmp_path / "x"))


def test_random_forest_on_real_bot_iot_without_leaky_features(tmp_path):
    if not os.path.exists(BOT_IOT):
        pytest.skip("../shared/data/bot-iot is not beside the project")
    model = train(BOT_IOT, "rf", str(tmp_path / "rf"), stream=open(os.devnull, "w"))
    assert not set(model.features) & {"pkSeqID", "seq", "stime", "ltime", "saddr", "daddr", "sport"}
    assert model.card["metrics"]["f1_macro"] >= 0.97


def test_metric_definitions_on_a_hand_made_confusion_matrix():
    # tp 8, fp 2, fn 4, tn 6
    truth = [1] * 8 + [0] * 2 + [1] * 4 + [0] * 6
    pred = [1] * 8 + [1] * 2 + [0] * 4 + [0] * 6
    table = evaluate.per_class(truth, pred)
    p, r = 8 / 10, 8 / 12
    assert table.loc["1", "precision"] == pytest.approx(p) and table.loc["1", "recall"] == pytest.approx(r)
    assert table.loc["1", "f1"] == pytest.approx(2 * p * r / (p + r))   # not the report's p*r/(p+r)
    assert table.loc["1", "support"] == 12 and table.loc["accuracy", "f1"] == pytest.approx(14 / 20)
    b = evaluate.binary(truth, pred)
    assert (b["true_positives"], b["false_positives"], b["false_negatives"], b["true_negatives"]) == (8, 2, 4, 6)
    assert b["mcc"] == pytest.approx((8 * 6 - 2 * 4) / np.sqrt(10 * 12 * 8 * 10))
    assert b["false_positive_rate_on_normal"] == pytest.approx(2 / 8)
    matrix = evaluate.confusion(truth, pred)
    assert matrix.loc["1", "0"] == 4 and matrix.loc["0", "1"] == 2


def test_fusion_truth_table_and_agreement():
    rules = pd.DataFrame({"attack": [1, 1, 0, 0], "category": ["DDoS", "Reconnaissance", "Normal", "Normal"],
                          "subcategory": ["TCP", "Service_Scan", "Normal", "Normal"], "sid": [1, 2, 0, 0],
                          "msg": ["flood", "scan", "", ""], "action": ["alert", "alert", "", ""]})
    model = pd.DataFrame({"label": ["DoS", "Normal", "Theft", "Normal"], "attack": [1, 0, 1, 0],
                          "score": [0.9, 0.2, 0.8, 0.1]})
    v = fuse(rules, model, model_target="category")
    assert v.attack.tolist() == [1, 1, 0, 0]          # the model's word alone abstains: kept, not an attack
    assert v.category.tolist() == ["DDoS", "Reconnaissance", "Normal", "Normal"]   # the rule's wins when it fired
    assert v.source.tolist() == ["rule+model", "rule", "model", ""]
    assert agreement(v) == {"both": 1, "rule_only": 1, "model_only": 1, "neither": 1}
    zscore = pd.DataFrame({"zscore_attack": [0, 0, 1, 1], "zscore_max": [0.0, 0.0, 7.0, 5.0],
                           "zscore_measurement": ["", "", "bytes", "pkts"]})
    v = fuse(rules, model, model_target="category", zscore=zscore)
    assert v.attack.tolist() == [1, 1, 1, 0]          # model and Z-score together are heard; the Z-score alone is not
    assert v.category.tolist()[2] == "Theft" and v.source.tolist()[2:] == ["model+zscore", "zscore"]
    assert fuse(rules, model, model_target="attack", zscore=zscore).category.tolist()[2] == "Attack"
    assert fuse(rules, None).source.tolist() == ["rule", "rule", "", ""]
    with pytest.raises(ValueError, match="4 rule labels but 2 model predictions"):
        fuse(rules, model.head(2))


def test_compare_and_report_from_the_cli(tmp_path, capsys):
    from iadm.cli import main
    data = tmp_path / "d.csv"
    synthetic(data)
    assert main(["evaluate", str(data), "--compare"]) == 0
    table = capsys.readouterr().out
    for kind in ("rf", "adaboost", "lightgbm", "knn"):
        assert kind in table
    assert "f1_macro" in table and "false_negatives" in table
    assert main(["train", str(data), "--model", "rf", "-o", str(tmp_path / "rf")]) == 0
    assert main(["evaluate", str(data), "--model", str(tmp_path / "rf"), "--report", str(tmp_path / "rep")]) == 0
    for name in ("confusion_matrix.png", "precision_recall.png", "feature_importance.png"):
        assert (tmp_path / "rep" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (tmp_path / "rep" / "summary.md").read_text()
    assert "F1-macro" in summary and "![confusion_matrix.png]" in summary
    assert main(["evaluate", str(data), "--model", str(tmp_path / "nothing")]) == 1
    assert "model file is missing" in capsys.readouterr().err
