"""The Z-score detector: Welford/Chan against two-pass, the |z| test, feedback, persistence, bounds."""
import numpy as np
import pandas as pd
import pytest

from iadm.stats.zscore import MEASUREMENTS, SettingError, ZScoreDetector, check_settings


def flow_records(values, src="10.0.0.1", sport=40000, dport=1883, t0=1000.0, cumulative=False):
    """One record per value, all of one flow key; `values` are bytes (and packets = bytes // 100)."""
    values = np.asarray(values, dtype=float)
    total = np.cumsum(values) if cumulative else values
    return pd.DataFrame({"saddr": src, "daddr": "10.0.0.2", "sport": sport, "dport": dport, "proto": "tcp",
                         "bytes": total, "pkts": np.maximum(1, total // 100), "stime": t0,
                         "ltime": t0 + np.arange(len(values))})


def test_streaming_statistics_equal_a_two_pass_computation():
    rng = np.random.default_rng(7)
    # Large offset, small spread: the report's sum-of-squares formula loses digits here; Welford does not.
    values = 1e9 + rng.normal(0, 3.0, 5000)
    det = ZScoreDetector(tolerance=6, min_count=10**6)     # judge nothing: every value is folded in
    for chunk in np.array_split(values, 37):               # uneven batches exercise Chan's merge
        det.score(flow_records(chunk))
    stats = det.key_stats("bytes_total", 0)
    assert stats["count"] == 5000
    assert stats["mean"] == pytest.approx(values.mean(), rel=1e-15, abs=1e-6)
    assert stats["std"] == pytest.approx(values.std(ddof=1), rel=1e-6)
    # The sum-of-squares form (s, q) cancels catastrophically at this offset; Welford does not.
    naive = np.sqrt(max(0.0, (np.sum(values ** 2) - values.sum() ** 2 / len(values)) / (len(values) - 1)))
    assert abs(naive - values.std(ddof=1)) > 0.1 * values.std(ddof=1)
    rms = np.sqrt(np.mean(values ** 2))   # what the report's variance term yields: the RMS, not a deviation
    assert abs(stats["std"] - rms) > 1e8


def test_a_spike_is_flagged_in_both_directions_and_not_before_the_minimum_count():
    rng = np.random.default_rng(1)
    young = ZScoreDetector(tolerance=3, min_count=20)
    young.score(flow_records(rng.normal(500, 10, 19)))
    assert young.score(flow_records([5000])).zscore_attack.sum() == 0   # 19 values seen: may not judge yet
    det = ZScoreDetector(tolerance=3, min_count=20)
    det.score(flow_records(rng.normal(500, 10, 40)))
    high = det.score(flow_records([500, 900, 501]))
    low = det.score(flow_records([100]))
    assert high.zscore_attack.tolist() == [0, 1, 0] and high.zscore_measurement[1] == "bytes_total"
    assert low.zscore_attack.tolist() == [1] and low.zscore_max[0] > 3
    opened = det.anomalies("bytes_total")
    assert [round(a["value"]) for a in opened] == [900, 100] and opened[0]["z"] > 3 > -3 > opened[1]["z"]


def test_only_normal_points_update_the_statistics():
    det = ZScoreDetector(tolerance=3, min_count=5)
    det.score(flow_records([100, 101, 99, 100, 102, 98]))
    before = det.key_stats("bytes_total", 0)
    det.score(flow_records([10_000]))
    assert det.key_stats("bytes_total", 0)["count"] == before["count"]


def test_feedback_false_positive_leaves_the_list_and_feeds_the_statistics():
    det = ZScoreDetector(tolerance=3, min_count=5)
    det.score(flow_records([100, 101, 99, 100, 102, 98]))
    det.score(flow_records([150]))
    [anomaly] = det.anomalies("bytes_total")
    det.feedback("bytes_total", anomaly["id"], "false_positive")
    assert det.anomalies("bytes_total") == []
    assert det.key_stats("bytes_total", 0)["count"] == 7
    with pytest.raises(SettingError, match="already has feedback"):
        det.feedback("bytes_total", anomaly["id"], "confirmed")
    with pytest.raises(LookupError):
        det.feedback("bytes_total", 999, "confirmed")


def test_created_measurements_are_increments_of_the_running_totals():
    det = ZScoreDetector(min_count=10**6)
    det.score(flow_records([100, 100, 100, 400], cumulative=True).iloc[:2])
    det.score(flow_records([100, 100, 100, 400], cumulative=True).iloc[2:])
    created = det.key_stats("bytes_created", 0)
    assert created["count"] == 4 and created["sum"] == 700 and created["mean"] == 175


def test_statistics_and_anomalies_survive_a_restart(tmp_path):
    db = str(tmp_path / "z.sqlite")
    det = ZScoreDetector(db, tolerance=3, min_count=5)
    det.score(flow_records([100, 101, 99, 100, 102, 98]))
    det.score(flow_records([5000]))
    det.configure(tolerance=4.5)
    det.close()
    again = ZScoreDetector(db, min_count=5)
    assert again.tolerance == 4.5
    assert again.key_stats("bytes_total", 0)["count"] == 6
    assert len(again.anomalies("bytes_total")) == 1
    assert again.score(flow_records([5000])).zscore_attack.tolist() == [1]   # judged at once: stats came back


def test_settings_are_validated_and_nothing_changes_on_refusal():
    det = ZScoreDetector()
    for bad in ({"tolerance": 1.5}, {"tolerance": 7}, {"frequency": 0.5}, {"frequency": 200},
                {"tolerance": "3"}, {"tolerance": True}):
        with pytest.raises(SettingError):
            det.configure(**bad)
    assert det.settings()["tolerance"] == 3 and det.settings()["frequency"] == 24
    check_settings(tolerance=2, frequency=168)


def test_forged_source_flood_keeps_the_key_store_bounded():
    det = ZScoreDetector(min_count=5, max_keys=1000)
    det.score(flow_records([100, 101, 99, 100, 102, 98]))            # one established key
    for i in range(20):
        flood = pd.DataFrame({"saddr": [f"198.51.{i}.{k % 250}" for k in range(500)], "daddr": "10.0.0.2",
                              "sport": np.arange(500) + 1024, "dport": 80, "proto": "tcp", "bytes": 60, "pkts": 1,
                              "stime": 2000.0 + i, "ltime": 2000.0 + i})
        det.score(flood)
        assert det.size <= 1000
    assert det.stats_counters["keys_dropped"] > 0
    assert det.slot_of(det.key_id(0)) == 0 and det.key_stats("bytes_total", 0)["src"] == "10.0.0.1"


def test_batch_mode_scores_period_by_period():
    det = ZScoreDetector(tolerance=3, frequency=1, min_count=5)
    normal = flow_records([100, 101, 99, 100, 102, 98], t0=0.0)
    normal["stime"] = np.arange(6) * 60.0                       # hour 0
    spike = flow_records([100, 5000], t0=3600.0)
    spike["stime"] = [3700.0, 3800.0]                           # hour 1: judged against hour 0
    out = det.scan(pd.concat([spike, normal], ignore_index=True))
    assert out.zscore_attack.sum() == 1
    assert out.zscore_attack.iat[-1] == 1                       # sorted by stime: the spike comes last
    [anomaly] = det.anomalies("bytes_total")
    assert anomaly["value"] == 5000 and anomaly["n"] == 6       # judged against hour 0's six values only
    assert {m for m in MEASUREMENTS if det.anomalies(m)} >= {"bytes_total", "bytes_created"}


# --- the compiled store against a straightforward reference ------------------------------------
import math  # noqa: E402

from iadm.stats.zscore import SERVICES  # noqa: E402


def _text(value) -> str:
    """A key field's text: str() of the value; missing (None, NaN) is empty."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _port(value) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return -1
    return -1 if math.isnan(number) else int(number)


class ReferenceZScore:
    """One dict per key and a Python loop per record: the detector's documented semantics
    (judged against the statistics before the batch; normal values folded by Chan's merge of
    the batch's sums in record order; eviction by the documented rule), in plain floats."""

    def __init__(self, tolerance=3.0, min_count=10, max_keys=200_000):
        self.tolerance, self.min_count, self.max_keys = tolerance, min_count, max_keys
        self.keys = {}         # key text -> state; insertion order is slot order
        self.anomalies = []
        self.dropped = 0

    @staticmethod
    def key(row) -> str:
        fields = [_text(row[c]) for c in ("saddr", "daddr", "sport", "dport", "proto")]
        port = _port(row["dport"])
        return "|".join(fields + [SERVICES.get(port, f"{fields[4]}/{port}")])

    def _evict(self, fresh: int) -> None:
        keep = max(0, min(self.max_keys // 2, self.max_keys - fresh))
        ranked = sorted(enumerate(self.keys.items()),
                        key=lambda e: (not max(e[1][1]["n"]) >= self.min_count,
                                       -(e[1][1]["seen"] if not math.isnan(e[1][1]["seen"]) else -math.inf), e[0]))
        kept = sorted(ranked[:keep])
        self.dropped += len(self.keys) - len(kept)
        self.keys = {k: state for _, (k, state) in kept}

    def score(self, frame: pd.DataFrame) -> pd.DataFrame:
        rows = frame.to_dict("records")
        texts = [self.key(r) for r in rows]
        fresh = list(dict.fromkeys(t for t in texts if t not in self.keys))
        if len(self.keys) + len(fresh) > self.max_keys:
            self._evict(len(fresh))
        for text in fresh[:max(0, self.max_keys - len(self.keys))]:
            self.keys[text] = {"n": [0.0] * 4, "mean": [0.0] * 4, "m2": [0.0] * 4, "total": [0.0] * 4,
                               "last": [-1.0, -1.0], "seen": 0.0}
        before = {t: {k: list(v) if isinstance(v, list) else v for k, v in s.items()} for t, s in self.keys.items()}
        batch = {}            # key -> per measurement the normal values, in record order
        found = [[] for _ in MEASUREMENTS]   # anomalies are listed measurement by measurement
        out = []
        for text, row in zip(texts, rows):
            state = self.keys.get(text)
            if state is None:
                out.append((0, 0.0, ""))
                continue
            state["seen"] = float(row["ltime"])
            x = []
            for k, total in enumerate((float(row["bytes"]), float(row["pkts"]))):
                prev = state["last"][k]
                x += [total - prev if (prev >= 0 and total >= prev) else total, total]
                state["last"][k] = total
            old = before[text]
            best, first = 0.0, ""
            for j, m in enumerate(MEASUREMENTS):
                count, mean = old["n"][j], old["mean"][j]
                if count > 1:
                    var = old["m2"][j] / max(count - 1.0, 1.0)
                    std = math.sqrt(var) if var >= 0 or math.isnan(var) else math.nan
                else:
                    std = math.nan
                if std > 0:
                    z = (x[j] - mean) / std
                elif x[j] == mean:
                    z = 0.0
                else:
                    d = x[j] - mean
                    z = math.inf if d > 0 else (-math.inf if d < 0 else math.nan)
                anomalous = count >= self.min_count and abs(z) > self.tolerance
                if count >= self.min_count and abs(z) > best:
                    best = abs(z)
                if anomalous:
                    first = first or m
                    found[j].append((m, text, float(row["ltime"]), x[j], z, mean,
                                           std if math.isfinite(std) else 0.0, int(count)))
                else:
                    batch.setdefault(text, [[], [], [], []])[j].append(x[j])
            out.append((int(bool(first)), best, first))
        self.anomalies += [a for part in found for a in part]
        for text, values in batch.items():
            state = self.keys[text]
            for j, xs in enumerate(values):
                if not xs:
                    continue
                nb, s = float(len(xs)), 0.0
                for v in xs:
                    s += v
                mb = s / nb
                sq = 0.0
                for v in xs:
                    sq += (v - mb) * (v - mb)
                na, ma = state["n"][j], state["mean"][j]
                both = na + nb
                delta = mb - ma
                state["mean"][j] = ma + delta * nb / both
                state["m2"][j] = state["m2"][j] + sq + delta * delta * na * nb / both
                state["n"][j] = both
                state["total"][j] += s
        return pd.DataFrame(out, columns=["zscore_attack", "zscore_max", "zscore_measurement"])


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def assert_like_reference(det: ZScoreDetector, ref: ReferenceZScore) -> None:
    assert det.keys == list(ref.keys)
    for slot, state in enumerate(ref.keys.values()):
        for j, m in enumerate(MEASUREMENTS):
            for mine, theirs in ((det.n[m][slot], state["n"][j]), (det.mean[m][slot], state["mean"][j]),
                                 (det.m2[m][slot], state["m2"][j]), (det.total[m][slot], state["total"][j])):
                assert _same(float(mine), theirs), (slot, m, mine, theirs)
        assert [det.last["bytes"][slot], det.last["packets"][slot]] == state["last"] or all(
            _same(a, b) for a, b in zip([det.last["bytes"][slot], det.last["packets"][slot]], state["last"]))
    mine = [(a["measurement"], det.key_text(det.slot_of(a["key_id"])) if det.slot_of(a["key_id"]) is not None
             else None, a["ts"], a["value"], a["z"], a["mean"], a["std"], a["n"]) for a in det.anomaly_rows]
    assert len(mine) == len(ref.anomalies)
    for a, b in zip(mine, ref.anomalies):
        assert a[0] == b[0] and a[1] in (b[1], None) and all(_same(p, q) for p, q in zip(a[2:], b[2:])), (a, b)
    assert [r["id"] for r in det.anomaly_rows] == list(range(1, len(mine) + 1))
    assert det.stats_counters["keys_dropped"] == ref.dropped


def random_frame(rng, pool, size, t0, new_keys=0, style=0):
    """Records of keys from `pool` (repeated, shuffled) and some new ones, in one of a few column
    styles (Arrow text, objects, categories; ints, floats, texts; missing values), with values
    normal around a per-key level, spikes, zeros, constants, NaN and infinities."""
    picks = [pool[i] for i in rng.integers(0, len(pool), size)]
    picks += [(f"198.51.{rng.integers(256)}.{rng.integers(256)}", "10.0.0.2", int(rng.integers(1024, 65535)),
               int(rng.choice([80, 443, 9999])), "tcp", 100.0) for _ in range(new_keys)]
    rng.shuffle(picks)
    src, dst, sport, dport, proto, level = (list(c) for c in zip(*picks))
    n = len(picks)
    noise = rng.normal(0, 1, n) * np.array(level) * 0.05
    byte_values = np.round(np.array(level) + noise, int(rng.integers(0, 3)))
    kind = rng.random(n)
    byte_values[kind < 0.03] = np.array(level)[kind < 0.03] * 50          # spikes
    byte_values[(kind >= 0.03) & (kind < 0.05)] = 0.0
    byte_values[(kind >= 0.05) & (kind < 0.06)] = np.nan
    byte_values[(kind >= 0.06) & (kind < 0.065)] = np.inf
    byte_values[(kind >= 0.065) & (kind < 0.07)] = -np.inf
    constant = np.array([lv == 7.0 for lv in level])                        # zero-variance keys
    byte_values[constant] = 7.0
    cumulative = rng.random() < 0.5
    frame = pd.DataFrame({"saddr": src, "daddr": dst, "sport": sport, "dport": dport, "proto": proto,
                          "bytes": np.cumsum(np.nan_to_num(byte_values, nan=1.0, posinf=1e12, neginf=0.0))
                          if cumulative else byte_values,
                          "pkts": np.maximum(1, np.nan_to_num(byte_values, nan=1, posinf=9, neginf=-9) // 100),
                          "stime": t0, "ltime": t0 + np.sort(rng.integers(0, 5, n)).astype(float)})
    if style == 1:     # objects, float ports (with a missing one), a missing address
        frame["saddr"] = frame["saddr"].astype(object)
        frame.loc[0, "saddr"] = None
        frame["sport"] = frame["sport"].astype(float)
        frame["dport"] = frame["dport"].astype(float)
        if n > 1:
            frame.loc[1, "dport"] = np.nan
    elif style == 2:   # categories, text ports
        frame["proto"] = pd.Categorical(frame["proto"])
        frame["daddr"] = pd.Categorical(frame["daddr"])
        frame["sport"] = frame["sport"].astype(str)
    elif style == 3:   # small ints, a categorical of numbers, a Python-storage string column
        frame["sport"] = frame["sport"].astype(np.int32)
        frame["dport"] = pd.Categorical(frame["dport"])
        frame["saddr"] = frame["saddr"].astype(pd.StringDtype("python"))
    return frame


@pytest.mark.parametrize("seed,max_keys,min_count", [(0, 200_000, 3), (1, 40, 2), (2, 25, 5), (3, 1000, 10)])
def test_the_compiled_store_scores_like_the_reference(seed, max_keys, min_count):
    rng = np.random.default_rng(seed)
    pool = [(f"10.0.0.{i % 7}", "10.0.0.2", 40000 + i, int(rng.choice([53, 80, 123, 1883, 5683, 12345])),
             str(rng.choice(["tcp", "udp"])), float(rng.choice([60.0, 500.0, 7.0, 1e9]))) for i in range(30)]
    det = ZScoreDetector(tolerance=3, min_count=min_count, max_keys=max_keys)
    ref = ReferenceZScore(tolerance=3.0, min_count=min_count, max_keys=max_keys)
    for step in range(40):
        frame = random_frame(rng, pool, int(rng.integers(1, 120)), 1000.0 + 10 * step,
                             new_keys=int(rng.integers(0, 30)) if step % 3 == 0 else 0, style=step % 4)
        got, want = det.score(frame), ref.score(frame)
        assert got["zscore_attack"].tolist() == want["zscore_attack"].tolist(), step
        assert got["zscore_max"].tolist() == want["zscore_max"].tolist(), step
        assert got["zscore_measurement"].tolist() == want["zscore_measurement"].tolist(), step
        assert det.size <= max_keys
    assert_like_reference(det, ref)
    assert det.stats_counters["keys_dropped"] > 0 or max_keys >= 1000
    assert sum(r["status"] == "open" for r in det.anomaly_rows) > 0


def test_the_output_frame_keeps_its_columns_and_types():
    det = ZScoreDetector(min_count=2)
    empty = det.score(flow_records([]))
    assert list(empty.columns) == ["zscore_attack", "zscore_max", "zscore_measurement", "delay_device",
                                   "delay_measurement", "delay_value", "delay_z", "delay_excess"] and len(empty) == 0
    out = det.score(flow_records([100, 101, 99, 100, 5000]).set_index(np.arange(5) + 70))
    assert isinstance(out.index, pd.RangeIndex) and out.zscore_attack.dtype == np.int64
    assert out.zscore_max.dtype == np.float64
    assert out.zscore_measurement.dtype == pd.Series(np.array(["x"], dtype=object)).dtype
    assert out.zscore_measurement.tolist()[:4] == ["", "", "", ""]


def test_key_texts_are_the_fields_as_text():
    det = ZScoreDetector()
    frame = flow_records([1.0, 2.0])
    frame["proto"] = pd.Categorical(["tcp", "udp"])
    frame["dport"] = [1883, 31337]
    frame["sport"] = [-5, 2**63 - 1]
    det.score(frame)
    assert det.keys == ["10.0.0.1|10.0.0.2|-5|1883|tcp|mqtt", f"10.0.0.1|10.0.0.2|{2**63 - 1}|31337|udp|udp/31337"]
    assert det.key_fields(1)[4:] == ["udp", "udp/31337"]
    assert det.entities("service") == ["mqtt", "udp/31337"]


def test_a_restart_continues_as_if_the_detector_had_run_on(tmp_path):
    rng = np.random.default_rng(11)
    pool = [(f"10.0.0.{i}", "10.0.0.2", 40000 + i, 1883, "tcp", 400.0) for i in range(12)]
    frames = [random_frame(rng, pool, 60, 1000.0 + 10 * k, new_keys=3) for k in range(12)]
    steady = ZScoreDetector(tolerance=3, min_count=3)
    db = str(tmp_path / "z.sqlite")
    det = ZScoreDetector(db, tolerance=3, min_count=3)
    for k, frame in enumerate(frames):
        pd.testing.assert_frame_equal(det.score(frame), steady.score(frame))
        if k % 4 == 1:
            det.close()
            det = ZScoreDetector(db, tolerance=3, min_count=3)
    assert det.keys == steady.keys and det.anomaly_rows == steady.anomaly_rows
    [first, *_] = det.anomalies("bytes_total")
    det.feedback("bytes_total", first["id"], "confirmed")
    det.close()
    again = ZScoreDetector(db)
    assert again.anomalies("bytes_total", status="confirmed") == [first | {"status": "confirmed"}]
    assert len(again.anomaly_rows) == len(steady.anomaly_rows)
    assert again.slot_of(first["key_id"]) == steady.slot_of(first["key_id"])
