"""EM/MV criteria and the detector comparison."""
import numpy as np
import pandas as pd

from iadm.cli import main
from iadm.stats.compare import compare, em_mv, ranking


def test_em_mv_prefer_the_true_density_over_noise():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, 3000), rng.uniform(-8, 8, 60)])
    grid = rng.uniform(-8, 8, 20000)
    density = lambda v: -v ** 2           # the true normal density's order
    noise = lambda v: np.random.default_rng(1).random(len(v))
    good, bad = em_mv(density(x), density(grid), 16.0), em_mv(noise(x), noise(grid), 16.0)
    assert good["em_auc"] > bad["em_auc"] and good["mv_auc"] < bad["mv_auc"]
    assert good["mv"][0] < 5 and bad["mv"][0] > 12    # 90% of the mass: ~3.3 wide vs nearly all of 16


def records(n=1200, spikes=40, seed=0):
    rng = np.random.default_rng(seed)
    normal = rng.normal(400, 30, n).clip(60)
    frame = pd.DataFrame({"saddr": "10.0.0.1", "daddr": "10.0.0.2", "sport": rng.integers(1024, 60000, n + spikes),
                          "dport": 1883, "proto": "tcp", "bytes": np.concatenate([normal, rng.uniform(5e4, 1e5, spikes)]),
                          "stime": np.arange(n + spikes, dtype=float), "ltime": np.arange(n + spikes, dtype=float)})
    frame["pkts"] = (frame["bytes"] // 100).astype(int) + 1
    frame["attack"] = [0] * n + [1] * spikes
    return frame


def test_compare_ranks_every_detector_and_uses_labels_when_present():
    table, curves = compare(records(), top_services=1)
    assert set(table.detector) == {"iforest", "lof", "ocsvm", "hst", "zscore"}
    assert set(table.measurement) == {"bytes_created", "bytes_total", "packets_created", "packets_total"}
    z = table[(table.detector == "zscore") & (table.measurement == "bytes_total")]
    assert z.pr_auc.iat[0] > 0.9                 # the 40 spikes are far out: the z-score ranks them first
    # LOF (k=20) sees 40 spikes as a dense cluster of their own, and ranks them normal.
    assert table[(table.detector == "lof") & (table.measurement == "bytes_total")].pr_auc.iat[0] < 0.5
    ranks = ranking(table)
    assert list(ranks.columns[:3]) == ["em_rank", "mv_rank", "groups"] and (ranks.groups == 4).all()


def test_cli_writes_table_and_plot(tmp_path, capsys):
    data = tmp_path / "records.csv"
    records().to_csv(data, index=False)
    assert main(["anomaly", "compare", str(data), "--detectors", "iforest", "zscore", "-o", str(tmp_path)]) == 0
    assert (tmp_path / "em-mv.png").stat().st_size > 10_000 and (tmp_path / "anomaly-compare.csv").exists()
    assert "mean rank per detector" in capsys.readouterr().out
    assert main(["anomaly", "scan", str(data), "--db", str(tmp_path / "z.sqlite"), "--frequency", "1"]) == 0
