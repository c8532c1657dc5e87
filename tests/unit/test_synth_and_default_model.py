"""Synthetic labelled data and the shipped default model."""
import numpy as np

from iadm.capture.batch import Batch
from iadm.flows.pipeline import FeaturePipeline
from iadm.ml import registry
from iadm.synth import ATTACKER_MAC, attacks, benign, label_records


def records_of(packets):
    packets = sorted(packets, key=lambda p: p[0])
    pipe = FeaturePipeline()
    frames = pipe.push(Batch.from_frames([f for _, f in packets], [t for t, _ in packets]))
    frames += pipe.finish()
    import pandas as pd
    return pd.concat(frames, ignore_index=True)


def test_labels_follow_the_injection_windows_and_the_sender():
    t0 = 1_700_000_000.0
    packets = benign(t0, 120.0, devices=2)
    attack_packets, windows = attacks(t0 + 10.0)
    records = records_of(packets + attack_packets)
    labelled = label_records(records, windows)
    attacker = int(ATTACKER_MAC.replace(":", ""), 16)
    # every record the attacker started inside a window is that window's attack
    assert (labelled[labelled.smac == attacker].attack == 1).all()
    # benign devices talking during the attacks stay Normal
    during = labelled[(labelled.stime >= windows[0].start) & (labelled.stime <= windows[-1].end)
                      & (labelled.smac != attacker) & (labelled.daddr != "10.0.0.101")]
    assert len(during) > 10 and (during.category == "Normal").all()
    assert set(labelled.category) == {"Normal", "DDoS", "DoS", "Reconnaissance", "Theft"}


def test_shipped_default_model_loads_and_flags_a_synthetic_flood():
    model = registry.load("models/default")
    assert model.card["target"] == "category" and model.card["kind"] == "lightgbm"
    assert model.card["command"].startswith("scripts/train_default.py") and 0.5 <= model.card["alert_score"] <= 1
    assert model.card["data"]["captures"] > 30 and model.card["evaluation"]["benign_held_out"]
    t0 = 1_700_000_000.0
    attack_packets, windows = attacks(t0, seed=7)
    flood = [p for p in attack_packets if p[0] <= windows[0].end]
    records = records_of(flood + benign(t0, 60.0, devices=1, seed=7))
    from iadm.ml.datasets import derive
    pred = model.predict(derive(records))
    attacker = int(ATTACKER_MAC.replace(":", ""), 16)
    flagged = pred[records.smac.to_numpy() == attacker]
    assert flagged.attack.mean() > 0.95 and (flagged.label == "DDoS").mean() > 0.9
    assert np.isfinite(pred.score).all()
