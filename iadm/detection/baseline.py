"""Site adaptation: what this gateway's own devices do every day, learned, then no longer alerted.

An entry is (signature id, source, destination, destination port): a device that polls its
server with bursts of short connections every day draws one signature (the HTTP-flood watcher's,
say) from one source to one server port, and nothing else. Entries are learned from the alerts
of a learning period (the first `learn_seconds` of the monitor's capture time, live or replayed:
the site is taken to be clean then, and nothing learned is acted upon) or from captures of the
site (`iadm baseline learn`), and kept in a JSON file the operator can read and edit. After that,
a record an entry covers is no attack (its source says "baseline"), so it neither alerts nor
blocks; anything else from the same device still does: a new signature, a new destination, a
new port.
"""
from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
import pandas as pd


class BaselineError(ValueError):
    pass


class SiteBaseline:
    def __init__(self, path: str | None = None, learn_seconds: float = 0.0):
        self.path = path
        self.learn_seconds = learn_seconds
        self.entries: dict[tuple, dict] = {}
        self.started: float | None = None
        self.counts = {"learned": 0, "covered": 0}
        # the console's "not an attack" teaches from the API's thread while the detector reads
        self._lock = threading.Lock()
        if path and os.path.exists(path):
            self.entries = load(path)

    def learning(self, now: float) -> bool:
        if self.started is None:
            self.started = now
        return now - self.started < self.learn_seconds

    def __call__(self, records: pd.DataFrame, verdicts: pd.DataFrame) -> pd.DataFrame:
        attack = verdicts["attack"].to_numpy(dtype=bool)
        if not len(records) or (not attack.any() and self.started is not None):
            return verdicts
        now = float(records["ltime"].min())
        learning = self.learning(now)
        if not learning and not self.entries:
            return verdicts   # nothing learned yet: nothing to cover
        rows = np.flatnonzero(attack)
        keys = list(zip(verdicts["rule_sid"].to_numpy()[rows].tolist(),
                        *(records[name].to_numpy()[rows].astype(str).tolist() for name in ("saddr", "daddr", "dport"))))
        with self._lock:
            if learning:
                self._learn(keys, records["ltime"].to_numpy()[rows])
                covered = np.ones(len(rows), dtype=bool)
            else:
                covered = np.array([k in self.entries for k in keys], dtype=bool)
        if not covered.any():
            return verdicts
        self.counts["covered"] += int(covered.sum())
        verdicts = verdicts.copy()
        hit = rows[covered]
        verdicts.loc[hit, "attack"] = 0
        verdicts.loc[hit, "category"] = "Normal"
        verdicts.loc[hit, "source"] = verdicts["source"].to_numpy(dtype=object)[hit] + "+baseline"
        return verdicts

    def learn(self, keys: list, times) -> None:
        with self._lock:
            self._learn(keys, times)

    def _learn(self, keys: list, times) -> None:
        for key, t in zip(keys, np.asarray(times, dtype=float).tolist()):
            if not key[0]:
                continue   # the model's or the Z-score's vote has no signature to learn
            entry = self.entries.get(key)
            if entry is None:
                self.entries[key] = {"first": t, "last": t, "records": 1}
                self.counts["learned"] += 1
            else:
                entry["last"] = max(entry["last"], t)
                entry["records"] += 1

    def teach(self, sid: int, src: str, dest: str, dest_port, at: float) -> bool:
        """An operator's "not an attack" on an alert: its (sid, source, destination, port) is learned
        and saved at once, so that the site's own traffic stops alerting from the next batch on.
        False when there is nothing to learn (no signature: a model's or Z-score's vote alone)."""
        if not sid:
            return False
        with self._lock:
            self._learn([(int(sid), str(src), str(dest), "" if dest_port is None else str(dest_port))], [at])
            self._save()
        return True

    def save(self, path: str | None = None) -> None:
        with self._lock:
            self._save(path)

    def _save(self, path: str | None = None) -> None:
        path = path or self.path
        if not path:
            return
        doc = {"format": "iadm-baseline/1", "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "entries": [{"sid": k[0], "src": k[1], "dest": k[2], "dest_port": k[3]} | v
                           for k, v in sorted(self.entries.items())]}
        tmp = f"{path}.tmp"
        with open(tmp, "w") as fh:
            json.dump(doc, fh, indent=1)
        os.replace(tmp, path)


def load(path: str) -> dict:
    """Entries of a baseline file; a BaselineError names the file and the entry that is wrong."""
    try:
        with open(path) as fh:
            doc = json.load(fh)
    except OSError as exc:
        raise BaselineError(f"{path}: cannot read: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise BaselineError(f"{path}: not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != "iadm-baseline/1" or not isinstance(doc.get("entries"), list):
        raise BaselineError(f"{path}: not an iadm baseline (format iadm-baseline/1 with a list of entries)")
    entries = {}
    for i, e in enumerate(doc["entries"]):
        try:
            key = (int(e["sid"]), str(e["src"]), str(e["dest"]), str(e["dest_port"]))
        except (KeyError, TypeError, ValueError):
            raise BaselineError(f"{path}: entry #{i + 1} needs sid, src, dest and dest_port") from None
        entries[key] = {"first": float(e.get("first", 0)), "last": float(e.get("last", 0)),
                        "records": int(e.get("records", 0))}
    return entries


def learn_from_captures(config, captures: list[str], out: str, say=print) -> SiteBaseline:
    """`iadm baseline learn`: every alert the monitor config would raise on these captures of the
    site becomes an entry (the captures are taken to be clean: review the file before using it)."""
    import dataclasses
    import io
    import tempfile

    from iadm.detection.compose import build_monitor
    merged = SiteBaseline(out if os.path.exists(out) else None)
    for path in captures:
        with tempfile.TemporaryDirectory(prefix="iadm-baseline-") as tmp:
            learning = dataclasses.replace(config, baseline="", learn_seconds=float("inf"), api=False,
                                           verdict_url=None, alert_log=os.path.join(tmp, "alerts.json"),
                                           zscore_db=os.path.join(tmp, "zscore.sqlite"))
            monitor = build_monitor(learning, replay=True)
            try:
                monitor.run({"pcap": path}, status_every=1e9, stream=io.StringIO())
            finally:
                monitor.close()
            site = monitor.labeller.detector.baseline
        for key, entry in site.entries.items():
            have = merged.entries.get(key)
            merged.entries[key] = entry if have is None else {
                "first": min(have["first"], entry["first"]), "last": max(have["last"], entry["last"]),
                "records": have["records"] + entry["records"]}
        say(f"{path}: {len(site.entries)} entries ({site.counts['covered']:,} alerted records)")
    merged.save(out)
    say(f"{out}: {len(merged.entries)} entries")
    return merged
