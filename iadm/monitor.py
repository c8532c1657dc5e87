"""The monitor's jobs: turn a capture file into records, or watch an interface live."""
from __future__ import annotations

import os
import sys
import time

from iadm.capture.batch import CaptureError
from iadm.capture.pcapfile import read_pcap
from iadm.detection.detector import delay_findings
from iadm.flows.output import RecordWriter
from iadm.flows.pipeline import FeaturePipeline
from iadm.progress import ProgressBar


class Labeller:
    """Fills the label columns of record frames from the fused verdicts, and
    hands attack verdicts to the responder (controller + alert log) when live."""

    SAVE_EVERY = 30.0   # seconds between saves of the Z-score statistics

    def __init__(self, detector, responder=None):
        self.detector = detector
        self.responder = responder
        self.attacks = 0
        self.saved_at = time.monotonic()
        self.observers = []   # callables(records, verdicts), e.g. a benchmark's tally
        self.inspectors = []  # packet inspectors the pipeline runs on every batch (iadm/inspect)

    def idle(self) -> None:
        """Housekeeping between batches: persist the Z-score statistics now and then."""
        if self.detector.zscore is not None and time.monotonic() - self.saved_at >= self.SAVE_EVERY:
            self.detector.zscore.save()
            self.saved_at = time.monotonic()

    def close(self) -> None:
        if self.detector.zscore is not None:
            self.detector.zscore.close()
        if self.detector.baseline is not None:
            self.detector.baseline.save()

    @classmethod
    def from_rules(cls, rule_files: list[str], variables: str | None, watch: bool = False,
                   model: str | None = None, responder_options: dict | None = None, zscore=None, baseline=None):
        from iadm.detection.detector import Detector
        from iadm.detection.responder import Responder
        from iadm.rules.engine import RuleEngine
        from iadm.rules.watch import RuleWatcher
        engine = RuleEngine.from_files(rule_files, variables)
        watcher = RuleWatcher(engine) if watch else None
        if watcher:
            watcher.install_signal()
        loaded = None
        if model:
            from iadm.ml.registry import load
            loaded = load(model)
            learned = loaded.card.get("data", {}).get("record_kind", "unknown")
            if learned != "running":   # the detector feeds it running flow records
                import logging
                logging.getLogger("iadm").warning(
                    "model %s learned from %s records; the live detector gives it running flow records "
                    "(retrain on `iadm dataset capture` output, or on `iadm features --record-kind running`)",
                    model, learned)
        from iadm.detection.behaviour import BehaviourWatch
        detector = Detector(engine, loaded, watcher, zscore, BehaviourWatch() if responder_options is not None else None,
                            baseline)
        responder = None
        inspectors = []
        if responder_options is not None:
            from iadm.detection.uplink import UplinkWatch
            options = dict(responder_options)
            from iadm.inspect import ArpWatch, DnsWatch, IcmpTunnelWatch, LoginFailureWatch, MacFloodWatch
            uplink = UplinkWatch(known=options.pop("uplink_macs", ()), no_uplink=options.pop("no_uplink", False))
            mac_floods = MacFloodWatch()   # the responder asks it which MACs a flood forged
            responder = Responder(detector=detector, uplink=uplink, mac_floods=mac_floods, **options)
            inspectors += [uplink, ArpWatch(), mac_floods, DnsWatch(), LoginFailureWatch(), IcmpTunnelWatch()]
        labeller = cls(detector, responder)
        labeller.inspectors = inspectors
        return labeller

    def findings(self, found: list) -> None:
        """What the packet inspectors found in the last batch: to the responder."""
        if found and self.responder is not None:
            self.responder.findings(found)

    def __call__(self, frame):
        frame = frame.reset_index(drop=True)
        verdicts = self.detector(frame)
        self.attacks += int(verdicts["attack"].sum())
        if self.responder is not None:
            self.responder(frame, verdicts)
            slowed = delay_findings(frame, verdicts)   # a device's delay out of its history: alert only
            if slowed:
                self.responder.findings(slowed)
        for observe in self.observers:
            observe(frame, verdicts)
        return frame.assign(attack=verdicts["attack"].to_numpy(), category=verdicts["category"],
                            subcategory=verdicts["subcategory"], rule_sid=verdicts["rule_sid"].to_numpy())


def _labelled(frame, labeller):
    return labeller(frame) if labeller is not None and len(frame) else frame


def convert(pcap: str, out: str, labeller: Labeller | None = None, **options) -> dict:
    """`iadm features`: a capture file to a records file. A damaged capture still
    yields every record before the damage; the error is re-raised after they are written."""
    pipe = FeaturePipeline(**options)
    writer = RecordWriter(out)
    bar = ProgressBar(os.path.getsize(pcap), os.path.basename(pcap))
    error = None
    try:
        for batch in read_pcap(pcap, progress=lambda done: bar.update(done)):
            for frame in pipe.push(batch):
                writer.write(_labelled(frame, labeller))
            bar.update(packets=pipe.counters["packets"])
    except CaptureError as exc:
        error = exc
    for frame in pipe.finish():
        writer.write(_labelled(frame, labeller))
    writer.close()
    bar.close()
    stats = pipe.stats() | {"records_written": writer.rows, "rule_attacks": labeller.attacks if labeller else 0}
    if error:
        raise CaptureError(f"{error} ({writer.rows} records written to {out} before it)")
    return stats


def status_line(stats: dict, records_per_s: float) -> str:
    attacks = f" attacks {stats['rule_attacks']:,}" if "rule_attacks" in stats else ""
    if "verdicts_sent" in stats:
        attacks += f" verdicts {stats['verdicts_sent']:,} (refused {stats['verdicts_refused']:,})"
    skipped = sum(stats[k] for k in ("truncated", "bad_header", "other_ethertype", "unsupported"))
    return (f"[{time.strftime('%H:%M:%S')}] packets {stats['packets']:,} decoded {stats['decoded']:,} "
            f"skipped {skipped:,} flows {stats['flows_active']:,} evicted {stats['evicted']:,} "
            f"kernel-drops {stats.get('kernel_drops', 0):,} records {stats['records']:,} ({records_per_s:,.0f}/s)"
            f"{attacks}")


def watch(source, records_path: str | None = None, duration: float | None = None, status_every: float = 1.0,
          stream=sys.stderr, labeller: Labeller | None = None, shared: dict | None = None, **options) -> dict:
    """`iadm monitor`: live (an interface name) or replayed (a capture file), with a status line.
    `shared["stats"]` is set to a function returning the current counters (for the operator API)."""
    from iadm.flows.pipeline import warm_up
    took = warm_up()   # compile before capturing: a live ring would overflow while numba works
    if labeller is not None and labeller.inspectors:
        from iadm.inspect import warm_up as warm_up_inspectors
        took += warm_up_inspectors()
    if labeller is not None:
        took += labeller.detector.warm_up()
    if took > 1.0:
        print(f"compiled the monitor's kernels in {took:.1f} s (first run only: cached after)", file=stream,
              flush=True)
    # The detector sees each flow record so far at every status record (what the rules and the
    # model were tuned on); a flow record silent for the idle timeout ends and frees its slot.
    options = {"kind": "running", "flow_timeout": options.get("idle_timeout", 30.0)} | options
    pipe = FeaturePipeline(**options, inspectors=labeller.inspectors if labeller is not None else ())
    writer = RecordWriter(records_path) if records_path else None
    start = last_status = time.monotonic()
    last_records = 0
    live = None
    if source["iface"]:
        from iadm.capture.live import LiveCapture
        live = LiveCapture(source["iface"])
        batches = _live_batches(live, start, duration)
    else:
        batches = read_pcap(source["pcap"])
    def extra():
        if labeller is None:
            return {}
        out = {"rule_attacks": labeller.attacks}
        return out | (labeller.responder.counts if labeller.responder else {})

    if shared is not None:
        shared["stats"] = lambda: pipe.stats() | (live.stats() if live else {}) | extra()
    try:
        for batch in batches:
            # A quiet link still closes the status records that came due (by the wall clock).
            frames = pipe.push(batch) if batch is not None else pipe.advance(time.time())
            # The inspectors' findings first: they are about packets of this batch, and its records
            # come a status interval after those packets live (a replayed batch spans far more)
            if pipe.findings:
                if labeller is not None:
                    labeller.findings(pipe.findings)
                pipe.findings = []
            for frame in frames:
                frame = _labelled(frame, labeller)
                if writer:
                    writer.write(frame)
            now = time.monotonic()
            if now - last_status >= status_every:
                stats = pipe.stats() | (live.stats() if live else {}) | extra()
                rate = (stats["records"] - last_records) / (now - last_status)
                print(status_line(stats, rate), file=stream, flush=True)
                last_status, last_records = now, stats["records"]
                if labeller is not None:
                    labeller.idle()
            if duration is not None and now - start >= duration:
                break
    except KeyboardInterrupt:
        pass
    finally:
        for frame in pipe.finish():
            frame = _labelled(frame, labeller)
            if writer:
                writer.write(frame)
        if writer:
            writer.close()
        stats = pipe.stats() | (live.stats() if live else {}) | extra()
        if live:
            live.close()
        print(status_line(stats, 0.0), file=stream, flush=True)
    return stats


def _live_batches(live, start: float, duration: float | None):
    """Blocks as the kernel retires them; an idle link yields None every 100 ms, to check the clock."""
    while duration is None or time.monotonic() - start < duration:
        yield from live.blocks(timeout_ms=100)
        yield None
