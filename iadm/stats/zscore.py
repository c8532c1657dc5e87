"""Z-score per flow key with incremental (Welford/Chan) statistics, persisted in SQLite.

Key: (src, dst, sport, dport, proto, service), the statistical detector
report's "hash". Measurements per record: bytes_created and packets_created
(what this record adds to its flow: the increment since the key's previous
record) and bytes_total and packets_total (the flow's running totals).

Per key and measurement: count n, mean and M2 (sum of squared deviations),
plus the plain sum. std = sqrt(M2 / (n - 1)), the sample deviation. A value x
is anomalous when n >= min_count and |x - mean| / std > tolerance (two-sided);
with std = 0 any x != mean is (|z| is infinite). Only normal values update the
statistics. The report's own formulas divide the mean by the old count and give
the RMS instead of a deviation; these are Welford's, merged batch-wise by Chan's
rule, which is exact (tests compare with a two-pass computation).

Streaming: `score(records)` takes a batch (the live monitor's 0.1 s of records)
and judges every record against the statistics as they were before the batch,
then folds the batch's normal values in. Batch mode: `scan(records)` cuts the
records into periods of `frequency` hours by stime and scores period after
period, as the report's detector did on its schedule.

Feedback: an anomaly marked false positive leaves the open list and its value
is folded into the statistics; a confirmed one stays on record as confirmed.
"""
from __future__ import annotations

import hashlib
import sqlite3
import threading

import numpy as np
import pandas as pd

MEASUREMENTS = ("bytes_created", "bytes_total", "packets_created", "packets_total")
ENTITIES = {"src": "saddr", "dst": "daddr", "sport": "sport", "dport": "dport", "proto": "proto",
            "service": "service"}
TOLERANCE_RANGE = (2.0, 6.0)
FREQUENCY_RANGE = (1.0, 168.0)
SERVICES = {53: "dns", 80: "http", 443: "https", 1883: "mqtt", 8883: "mqtts", 5683: "coap", 5684: "coaps",
            123: "ntp", 22: "ssh", 23: "telnet", 8080: "http-alt", 67: "dhcp", 68: "dhcp"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (slot INTEGER PRIMARY KEY, key_id TEXT UNIQUE, src TEXT, dst TEXT, sport TEXT,
    dport TEXT, proto TEXT, service TEXT, last_bytes REAL, last_packets REAL);
CREATE TABLE IF NOT EXISTS stats (measurement TEXT, slot INTEGER, n INTEGER, mean REAL, m2 REAL, total REAL,
    PRIMARY KEY (measurement, slot));
CREATE TABLE IF NOT EXISTS anomalies (id INTEGER PRIMARY KEY, measurement TEXT, key_id TEXT, ts REAL, value REAL,
    z REAL, mean REAL, std REAL, n INTEGER, status TEXT);
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value REAL);
"""


class SettingError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def check_settings(tolerance=None, frequency=None) -> None:
    for name, value, (lo, hi) in (("tolerance", tolerance, TOLERANCE_RANGE), ("frequency", frequency,
                                                                              FREQUENCY_RANGE)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
            raise SettingError(name, f"{name} must be a number from {lo:g} to {hi:g}, not {value!r}")


def service_names(proto, dport) -> np.ndarray:
    """A well-known port's service name, else "proto/port"."""
    ports = pd.to_numeric(pd.Series(dport), errors="coerce").fillna(-1).astype(np.int64)
    named = ports.map(SERVICES)
    fallback = pd.Series(proto, dtype=object).astype(str) + "/" + ports.astype(str)
    return named.where(named.notna(), fallback).to_numpy(dtype=object)


class ZScoreDetector:
    def __init__(self, db: str | None = None, tolerance: float = 3.0, frequency: float = 24.0, min_count: int = 10,
                 max_keys: int = 200_000):
        check_settings(tolerance, frequency)
        if min_count < 2:
            raise SettingError("min_count", "min_count must be at least 2 (a deviation needs two values)")
        self.tolerance, self.frequency, self.min_count = float(tolerance), float(frequency), int(min_count)
        self.max_keys = int(max_keys)
        self.stats_counters = {"keys_dropped": 0}
        self._lock = threading.RLock()
        self.keys: list[str] = []                      # slot -> key text
        self.slot_by_key: dict[str, int] = {}          # key text -> slot (a dict: cheap to grow)
        self._ids: dict[int, str] = {}           # slot -> key id, computed when asked for
        self._slots_by_id: dict[str, int] | None = None
        self._rewrite = False
        self.size = 0
        self._alloc(1024)
        self.anomaly_rows: list[dict] = []
        self.next_anomaly = 1
        self.db = sqlite3.connect(db, check_same_thread=False) if db else None
        if self.db:
            self.db.executescript(_SCHEMA)
            self._load()

    # --- storage ------------------------------------------------------------------------------
    def _alloc(self, capacity: int) -> None:
        def grow(old, fill=0.0):
            new = np.full(capacity, fill)
            if old is not None:
                new[:len(old)] = old
            return new
        old = getattr(self, "n", None)
        self.n = {m: grow(old[m] if old else None) for m in MEASUREMENTS}
        self.mean = {m: grow(self.mean[m] if old else None) for m in MEASUREMENTS}
        self.m2 = {m: grow(self.m2[m] if old else None) for m in MEASUREMENTS}
        self.total = {m: grow(self.total[m] if old else None) for m in MEASUREMENTS}
        self.last = {k: grow(self.last[k] if old else None, -1.0) for k in ("bytes", "packets")}
        self.seen = grow(self.seen if old else None)
        self.dirty = grow(self.dirty if old else None).astype(bool)
        self.capacity = capacity

    def _lookup(self, keys: np.ndarray) -> np.ndarray:
        get = self.slot_by_key.get
        return np.fromiter((get(k, -1) for k in keys), dtype=np.int64, count=len(keys))

    def _slots(self, keys: np.ndarray) -> np.ndarray:
        slots = self._lookup(keys)
        new = slots < 0
        if new.any():
            fresh = np.unique(keys[new])
            if self.size + len(fresh) > self.max_keys:
                self._compact(keep=max(0, min(self.max_keys // 2, self.max_keys - len(fresh))))
                fresh = fresh[:self.max_keys]   # more new keys than fit: the rest are not tracked
            start = self.size
            if start + len(fresh) > self.capacity:
                self._alloc(max(self.capacity * 2, start + len(fresh)))
            self.slot_by_key.update(zip(fresh.tolist(), range(start, start + len(fresh))))
            self.keys.extend(fresh.tolist())
            self._slots_by_id = None
            self.size += len(fresh)
            slots = self._lookup(keys)
        return slots

    def _compact(self, keep: int) -> None:
        """Bounded memory (a forged-source flood is a new key per record): keep the keys with
        enough values to judge, most recently seen first, and drop the rest (counted)."""
        established = np.max([self.n[m][:self.size] for m in MEASUREMENTS], axis=0) >= self.min_count
        order = np.lexsort((-self.seen[:self.size], ~established))[:keep]
        order.sort()
        self.stats_counters["keys_dropped"] += self.size - len(order)
        kept = len(order)
        for table, empty in ((self.n, 0.0), (self.mean, 0.0), (self.m2, 0.0), (self.total, 0.0), (self.last, -1.0)):
            for arr in table.values():
                arr[:kept] = arr[order]
                arr[kept:] = empty     # freed slots start clean for the keys that take them
        self.seen[:kept] = self.seen[order]
        self.seen[kept:] = 0.0
        self._ids, self._slots_by_id = {}, None
        self.keys = [self.keys[i] for i in order]
        self.slot_by_key = {k: i for i, k in enumerate(self.keys)}
        self.size = len(order)
        self.dirty[:] = False
        self.dirty[:self.size] = True
        self._rewrite = True

    # --- scoring ------------------------------------------------------------------------------
    def std(self, measurement: str, slots) -> np.ndarray:
        n = self.n[measurement][slots]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 1, np.sqrt(self.m2[measurement][slots] / np.maximum(n - 1, 1)), np.nan)

    def score(self, records: pd.DataFrame) -> pd.DataFrame:
        """Per record: zscore_attack (any measurement anomalous), zscore_max |z|, zscore_measurement."""
        n = len(records)
        out = pd.DataFrame({"zscore_attack": np.zeros(n, dtype=np.int64), "zscore_max": np.zeros(n),
                            "zscore_measurement": np.full(n, "", dtype=object)})
        if n == 0:
            return out
        text = {c: pd.Series(records[c].to_numpy(), dtype=object).astype(str)
                for c in ("saddr", "daddr", "sport", "dport", "proto")}
        service = pd.Series(service_names(text["proto"].to_numpy(), records["dport"].to_numpy()), dtype=object)
        keys = text["saddr"].str.cat([text["daddr"], text["sport"], text["dport"], text["proto"], service],
                                     sep="|").to_numpy(dtype=object)
        totals = {"bytes": records["bytes"].to_numpy(dtype=float), "packets": records["pkts"].to_numpy(dtype=float)}
        ts = records["ltime"].to_numpy(dtype=float)
        with self._lock:
            slots = self._slots(keys)
            positions = np.flatnonzero(slots >= 0)
            tracked = slots >= 0
            if not tracked.all():   # only when a batch brings more new keys than max_keys
                keys, ts = keys[tracked], ts[tracked]
                totals = {k: v[tracked] for k, v in totals.items()}
                slots = slots[tracked]
                n = len(slots)
            self.seen[slots] = ts
            values = {}
            for kind, total in totals.items():
                created = np.empty(n)
                # In record order, each record's increment over the previous record of its key.
                order = np.argsort(slots, kind="stable")
                s_sorted = slots[order]
                t_sorted = total[order]
                prev = np.empty(n)
                prev[1:] = t_sorted[:-1]
                first = np.ones(n, dtype=bool)
                first[1:] = s_sorted[1:] != s_sorted[:-1]
                prev[first] = self.last[kind][s_sorted[first]]
                inc = np.where((prev >= 0) & (t_sorted >= prev), t_sorted - prev, t_sorted)
                created[order] = inc
                last_idx = np.flatnonzero(np.append(s_sorted[1:] != s_sorted[:-1], True))
                self.last[kind][s_sorted[last_idx]] = t_sorted[last_idx]
                values[f"{kind}_created"], values[f"{kind}_total"] = created, total
            best = np.zeros(n)
            anomalous_any = np.zeros(n, dtype=bool)
            which = np.full(n, "", dtype=object)
            for m in MEASUREMENTS:
                x = values[m]
                mean, std, count = self.mean[m][slots], self.std(m, slots), self.n[m][slots]
                with np.errstate(invalid="ignore", divide="ignore"):
                    z = np.where(std > 0, (x - mean) / std, np.where(x == mean, 0.0, np.inf * np.sign(x - mean)))
                judged = count >= self.min_count
                anomalous = judged & (np.abs(z) > self.tolerance)
                self._record_anomalies(m, slots, ts, x, z, mean, std, count, anomalous)
                self._fold(m, slots[~anomalous], x[~anomalous])
                bigger = judged & (np.abs(z) > best)
                best = np.where(bigger, np.abs(z), best)
                which[anomalous & ~anomalous_any] = m
                anomalous_any |= anomalous
            self.dirty[slots] = True
        out.loc[positions, "zscore_attack"] = anomalous_any.astype(np.int64)
        out.loc[positions, "zscore_max"] = best
        out.loc[positions, "zscore_measurement"] = which
        return out

    def _fold(self, m: str, slots: np.ndarray, x: np.ndarray) -> None:
        """Chan's merge of a batch of values into each slot's (n, mean, M2)."""
        if not len(slots):
            return
        uniq, inv = np.unique(slots, return_inverse=True)
        nb = np.bincount(inv).astype(float)
        mean_b = np.bincount(inv, weights=x) / nb
        m2_b = np.bincount(inv, weights=(x - mean_b[inv]) ** 2)
        na, mean_a = self.n[m][uniq], self.mean[m][uniq]
        total_n = na + nb
        delta = mean_b - mean_a
        self.mean[m][uniq] = mean_a + delta * nb / total_n
        self.m2[m][uniq] = self.m2[m][uniq] + m2_b + delta ** 2 * na * nb / total_n
        self.n[m][uniq] = total_n
        self.total[m][uniq] += np.bincount(inv, weights=x)

    def _record_anomalies(self, m, slots, ts, x, z, mean, std, count, anomalous) -> None:
        for i in np.flatnonzero(anomalous):
            self.anomaly_rows.append({"id": self.next_anomaly, "measurement": m, "key_id": self.key_id(slots[i]),
                                      "ts": float(ts[i]), "value": float(x[i]), "z": float(z[i]),
                                      "mean": float(mean[i]), "std": float(std[i]) if np.isfinite(std[i]) else 0.0,
                                      "n": int(count[i]), "status": "open"})
            self.next_anomaly += 1

    def scan(self, records: pd.DataFrame) -> pd.DataFrame:
        """Batch mode: periods of `frequency` hours by stime, scored one after another."""
        records = records.sort_values("stime", kind="stable").reset_index(drop=True)
        period = np.floor(records["stime"].to_numpy(dtype=float) / (self.frequency * 3600.0))
        parts = [self.score(records[period == p]) for p in np.unique(period)]
        return pd.concat(parts, ignore_index=True) if parts else self.score(records)

    # --- operators ----------------------------------------------------------------------------
    def configure(self, tolerance=None, frequency=None) -> dict:
        check_settings(tolerance, frequency)
        with self._lock:
            if tolerance is not None:
                self.tolerance = float(tolerance)
            if frequency is not None:
                self.frequency = float(frequency)
            if self.db:
                self.db.executemany("INSERT OR REPLACE INTO settings VALUES (?, ?)",
                                    [("tolerance", self.tolerance), ("frequency", self.frequency)])
                self.db.commit()
        return self.settings()

    def settings(self) -> dict:
        return {"tolerance": self.tolerance, "frequency": self.frequency, "min_count": self.min_count}

    def key_id(self, slot: int) -> str:
        """A short stable name of a key (its text hashed), for URLs."""
        if slot not in self._ids:
            self._ids[slot] = hashlib.sha1(self.keys[slot].encode()).hexdigest()[:12]
        return self._ids[slot]

    def key_fields(self, slot: int) -> list[str]:
        return self.keys[slot].split("|")

    def slot_of(self, key_id: str) -> int | None:
        with self._lock:
            if self._slots_by_id is None:
                self._slots_by_id = {self.key_id(s): s for s in range(self.size)}
            return self._slots_by_id.get(key_id)

    def key_stats(self, measurement: str, slot: int) -> dict:
        src, dst, sport, dport, proto, service = self.key_fields(slot)
        std = self.std(measurement, np.array([slot]))[0]
        return {"key_id": self.key_id(slot), "src": src, "dst": dst, "sport": sport, "dport": dport,
                "proto": proto, "service": service, "count": int(self.n[measurement][slot]),
                "mean": float(self.mean[measurement][slot]), "std": None if np.isnan(std) else float(std),
                "sum": float(self.total[measurement][slot]), "m2": float(self.m2[measurement][slot])}

    def stats(self, measurement: str) -> list[dict]:
        with self._lock:
            return [self.key_stats(measurement, s) for s in range(self.size) if self.n[measurement][s] > 0]

    def entities(self, kind: str) -> list[str]:
        column = list(ENTITIES).index(kind)
        with self._lock:
            parts = pd.Series(self.keys, dtype=object).str.split("|", expand=True)
            return sorted(parts[column].unique().tolist()) if len(parts) else []

    def anomalies(self, measurement: str, since: float | None = None, until: float | None = None,
                  key_id: str | None = None, status: str = "open") -> list[dict]:
        with self._lock:
            return [dict(a) for a in self.anomaly_rows if a["measurement"] == measurement
                    and (status == "all" or a["status"] == status) and (since is None or a["ts"] >= since)
                    and (until is None or a["ts"] <= until) and (key_id is None or a["key_id"] == key_id)]

    def feedback(self, measurement: str, anomaly_id: int, verdict: str) -> dict:
        if verdict not in ("confirmed", "false_positive"):
            raise SettingError("verdict", f"verdict must be 'confirmed' or 'false_positive', not {verdict!r}")
        with self._lock:
            row = next((a for a in self.anomaly_rows if a["id"] == anomaly_id and a["measurement"] == measurement),
                       None)
            if row is None:
                raise LookupError(f"no anomaly {anomaly_id} in {measurement}")
            if row["status"] != "open":
                raise SettingError("verdict", f"anomaly {anomaly_id} already has feedback: {row['status']}")
            row["status"] = verdict
            if verdict == "false_positive":
                slot = self.slot_of(row["key_id"])
                self._fold(measurement, np.array([slot]), np.array([row["value"]]))
                self.dirty[slot] = True
            return dict(row)

    # --- persistence --------------------------------------------------------------------------
    def save(self) -> None:
        if not self.db:
            return
        with self._lock:
            slots = np.flatnonzero(self.dirty[:self.size])
            if self._rewrite:   # slots were renumbered by a compaction
                self.db.execute("DELETE FROM keys")
                self.db.execute("DELETE FROM stats")
                self._rewrite = False
            self.db.executemany("INSERT OR REPLACE INTO keys VALUES (?,?,?,?,?,?,?,?,?,?)",
                                [(int(s), self.key_id(s), *self.key_fields(s), float(self.last["bytes"][s]),
                                  float(self.last["packets"][s])) for s in slots])
            self.db.executemany("INSERT OR REPLACE INTO stats VALUES (?,?,?,?,?,?)",
                                [(m, int(s), int(self.n[m][s]), float(self.mean[m][s]), float(self.m2[m][s]),
                                  float(self.total[m][s])) for m in MEASUREMENTS for s in slots])
            self.db.executemany("INSERT OR REPLACE INTO anomalies VALUES (?,?,?,?,?,?,?,?,?,?)",
                                [tuple(a.values()) for a in self.anomaly_rows])
            self.db.executemany("INSERT OR REPLACE INTO settings VALUES (?, ?)",
                                [("tolerance", self.tolerance), ("frequency", self.frequency)])
            self.db.commit()
            self.dirty[:] = False

    def _load(self) -> None:
        rows = self.db.execute("SELECT slot, key_id, src, dst, sport, dport, proto, service, last_bytes, "
                               "last_packets FROM keys ORDER BY slot").fetchall()
        if rows:
            self._alloc(max(1024, 2 * len(rows)))
            self.size = len(rows)
            self._ids = {i: r[1] for i, r in enumerate(rows)}
            self.keys = ["|".join(r[2:8]) for r in rows]
            self.slot_by_key = {k: i for i, k in enumerate(self.keys)}
            self.last["bytes"][:self.size] = [r[8] for r in rows]
            self.last["packets"][:self.size] = [r[9] for r in rows]
        for m, slot, n, mean, m2, total in self.db.execute("SELECT * FROM stats"):
            self.n[m][slot], self.mean[m][slot], self.m2[m][slot], self.total[m][slot] = n, mean, m2, total
        names = ("id", "measurement", "key_id", "ts", "value", "z", "mean", "std", "n", "status")
        self.anomaly_rows = [dict(zip(names, r)) for r in self.db.execute("SELECT * FROM anomalies ORDER BY id")]
        self.next_anomaly = max((a["id"] for a in self.anomaly_rows), default=0) + 1
        for name, value in self.db.execute("SELECT name, value FROM settings"):
            setattr(self, name, float(value))

    def close(self) -> None:
        self.save()
        if self.db:
            self.db.close()
