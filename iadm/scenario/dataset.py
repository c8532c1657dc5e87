"""`iadm dataset capture`: a scenario run turned into labelled flow records."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from iadm.flows.output import RecordWriter
from iadm.flows.pipeline import records_from_pcap
from iadm.scenario.label import label_by_windows, summary_table
from iadm.scenario.runner import STATUS_INTERVAL, RunResult, run_scenario
from iadm.scenario.spec import load_scenario


def labelled_records(result: RunResult) -> tuple[pd.DataFrame, dict]:
    """The run's monitor-port capture as records (the live monitor's status interval), labelled by window."""
    records, stats = records_from_pcap(str(result.pcap), status_interval=STATUS_INTERVAL)
    return label_by_windows(records, result.windows), stats


def capture(scenario_path: str, outdir: str, detect: bool = False, say=print) -> tuple[pd.DataFrame, str]:
    scenario = load_scenario(scenario_path)
    result = run_scenario(scenario, Path(outdir), detect=detect, say=say)
    labelled, stats = labelled_records(result)
    out = Path(outdir) / "records.parquet"
    writer = RecordWriter(str(out))
    writer.write(labelled)
    writer.close()
    say(f"{result.pcap}: {stats['packets']:,} packets -> {len(labelled):,} records -> {out}")
    return labelled, summary_table(labelled)
