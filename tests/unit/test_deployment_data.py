"""Defaults a first user meets: Bot-IoT files with only `category`, and a checkout that test runs leave clean."""
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from iadm.ml.datasets import load

ROOT = Path(__file__).resolve().parents[2]


# --- Bot-IoT with only `category` ---------------------------------------------------------------

def test_a_file_with_only_category_gets_attack_from_it(tmp_path):
    path = tmp_path / "cat.csv"
    pd.DataFrame({"stime": [1.0, 2.0, 3.0, 4.0, 5.0], "proto": "tcp", "saddr": "10.0.0.1", "sport": 1,
                  "daddr": "10.0.0.2", "dport": [80, 81, 82, 83, 84], "dur": [0.1, 0.2, 0.3, 0.4, 0.5],
                  "category": ["Normal", "DoS", " Reconnaissance", "normal", None]}).to_csv(path, index=False)
    data, report = load(str(path), required=["attack", "dur"])
    assert data["attack"].tolist() == [0, 1, 1, 0]       # the row with no category is dropped, not guessed
    assert report.missing["attack"] == 1
    data.to_csv(tmp_path / "with_attack.csv", index=False)
    kept, _ = load(str(tmp_path / "with_attack.csv"), required=["attack"])
    assert kept["attack"].tolist() == [0, 1, 1, 0]       # an attack column present is never recomputed


def test_a_file_with_neither_label_still_names_what_is_missing(tmp_path):
    path = tmp_path / "none.csv"
    pd.DataFrame({"stime": [1.0], "proto": ["tcp"], "saddr": ["a"], "dur": [0.1]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="column 'attack' is missing"):
        load(str(path), required=["attack"])


# --- a clean checkout stays clean ------------------------------------------------------------------

def test_no_log_is_tracked_and_build_logs_are_ignored():
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(["git", "ls-files", "*.log", ".venv-ryu.log"], cwd=ROOT, capture_output=True,
                             text=True).stdout.split()
    assert tracked == []
    ignored = subprocess.run(["git", "check-ignore", "run/venv-ryu.log", ".venv-ryu.log"], cwd=ROOT,
                             capture_output=True, text=True).stdout.split()
    assert ignored == ["run/venv-ryu.log", ".venv-ryu.log"]
    assert "log=run/" in (ROOT / "scripts" / "setup").read_text()
