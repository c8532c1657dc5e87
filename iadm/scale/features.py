"""`iadm features DIR_OR_GLOB -o OUT.parquet [--dask local|ADDRESS]`: many captures to one dataset.

One task per capture: a capture's flow table and its 100-record window aggregates run over the
whole capture, as they do for one file, so a capture is never split (a chunk boundary would cut
flows and windows, and the records would no longer be the ones the monitor makes). Each task
writes its capture's partition itself (iadm.flows.output.DatasetWriter), so records never travel
through the scheduler; on a multi-machine cluster OUT must be a path every worker can write (a
shared file system), and the captures a path every worker can read.
"""
from __future__ import annotations

import glob
import os
import sys
import time

PCAP_SUFFIXES = (".pcap", ".pcapng", ".cap")


def find_captures(spec: str) -> list[tuple[str, str]]:
    """(path, capture name) of each capture a file, a directory (searched recursively) or a glob
    names; a name is the path relative to the directory (or to the glob's common directory)."""
    if os.path.isfile(spec):
        return [(spec, os.path.basename(spec))]
    if os.path.isdir(spec):
        found = sorted(os.path.join(d, f) for d, _, files in os.walk(spec) for f in files
                       if f.lower().endswith(PCAP_SUFFIXES))
        base = spec
    else:
        found = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
        base = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in found]) if found else ""
    if not found:
        raise ValueError(f"{spec}: no capture files (a pcap/pcapng file, a directory of them, or a glob)")
    return [(p, os.path.relpath(os.path.abspath(p), os.path.abspath(base))) for p in found]


def extract_capture(pcap: str, root: str, capture: str, options: dict, rules: list[str] | None = None,
                    variables: str | None = None, progress: bool = False) -> dict:
    """One capture's records into its partition of the dataset at root (the task a worker runs).
    A damaged capture keeps every record before the damage, as `iadm features` does for one file;
    its error is returned with the counts, not raised, so that the other captures carry on."""
    from iadm.capture.batch import CaptureError
    from iadm.capture.pcapfile import read_pcap
    from iadm.flows.output import DatasetWriter
    from iadm.flows.pipeline import FeaturePipeline
    from iadm.progress import ProgressBar
    started = time.monotonic()
    labeller = None
    if rules:
        from iadm.monitor import Labeller
        from iadm.rules.parser import RuleErrors
        try:
            labeller = Labeller.from_rules(rules, variables)
        except RuleErrors as errs:
            raise ValueError(f"rules not loaded:\n{errs}") from None
    pipe = FeaturePipeline(**options)
    error = None
    bar = ProgressBar(os.path.getsize(pcap), capture) if progress else None
    with DatasetWriter(root, capture) as writer:
        def write(frames):
            for frame in frames:
                writer.write(labeller(frame) if labeller is not None and len(frame) else frame)
        try:
            for batch in read_pcap(pcap, progress=bar.update if bar else None):
                write(pipe.push(batch))
                if bar:
                    bar.update(packets=pipe.counters["packets"])
        except CaptureError as exc:
            error = str(exc)
        write(pipe.finish())
    if bar:
        bar.close()
    return pipe.stats() | {"capture": capture, "path": pcap, "records_written": writer.rows,
                           "rule_attacks": labeller.attacks if labeller else 0,
                           "seconds": time.monotonic() - started, "error": error}


class _Progress:
    """Captures done, packets and records so far, as each capture's task reports back."""

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.stream, self.done, self.packets, self.records = total, stream, 0, 0, 0
        self.start = time.monotonic()
        self.tty = stream.isatty()

    def finished(self, result: dict) -> None:
        self.done += 1
        self.packets += result["packets"]
        self.records += result["records_written"]
        rate = self.packets / max(time.monotonic() - self.start, 1e-9)
        bar = "#" * int(30 * self.done / self.total)
        line = (f"[{bar:<30}] {self.done}/{self.total} captures, {self.packets:,} packets ({rate:,.0f}/s), "
                f"{self.records:,} records; last: {result['capture']}")
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")


def extract_many(spec: str, out: str, options: dict, client=None, rules: list[str] | None = None,
                 variables: str | None = None, stream=sys.stderr) -> dict:
    """Every capture of spec into the dataset `out`, on the cluster of `client` when given (one
    task per capture) or here, one after another. Returns the totals and each capture's counts;
    a capture that failed is named in `failed` (the others are written)."""
    captures = find_captures(spec)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"{out}: exists and is not a directory (the records dataset is one)")
    os.makedirs(out, exist_ok=True)
    started = time.monotonic()
    results, failed = [], []
    progress = _Progress(len(captures), stream)
    if client is None:
        for path, name in captures:
            try:
                result = extract_capture(path, out, name, options, rules, variables,
                                         progress=stream.isatty() and len(captures) == 1)
            except (OSError, ValueError) as exc:
                failed.append(f"{name}: {exc}")
                continue
            results.append(result)
            progress.finished(result)
    else:
        from distributed import as_completed
        futures = {client.submit(extract_capture, path, out, name, options, rules, variables, pure=False): name
                   for path, name in captures}
        for future in as_completed(futures):
            try:
                result = future.result()
            except (OSError, ValueError) as exc:
                failed.append(f"{futures[future]}: {exc}")
                continue
            results.append(result)
            progress.finished(result)
    progress.close()
    failed += [f"{r['capture']}: {r['error']} ({r['records_written']:,} records written before it)"
               for r in results if r["error"]]
    results.sort(key=lambda r: r["capture"])
    totals = {k: sum(r[k] for r in results) for k in ("packets", "decoded", "records_written", "rule_attacks")}
    skipped = {k: sum(r[k] for r in results) for k in ("truncated", "bad_header", "fragments", "other_ethertype",
                                                       "unsupported")}
    return totals | {"captures": len(captures), "seconds": time.monotonic() - started, "results": results,
                     "failed": failed, "skipped": {k: v for k, v in skipped.items() if v}}
