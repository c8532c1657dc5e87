"""Prometheus metrics of the controller and the monitor (prometheus-client text format).

Each is a collector that reads the live counters when scraped, so nothing on
the packet path touches Prometheus objects.
"""
from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class _Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.errors: dict[str, int] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def api_error(self, status: int) -> None:
        self.errors[str(status)] = self.errors.get(str(status), 0) + 1

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def _api_errors(self, prefix: str):
        family = CounterMetricFamily(f"{prefix}_api_errors", "API requests refused, by HTTP status", labels=["status"])
        for status, n in sorted(self.errors.items()):
            family.add_metric([status], n)
        return family


class ControllerMetrics(_Metrics):
    def __init__(self, core):
        self.core = core
        super().__init__()

    def collect(self):
        core = self.core
        yield GaugeMetricFamily("iadm_controller_switches", "switches connected", value=len(core.switches))
        blocks = core.blocks()
        active = GaugeMetricFamily("iadm_controller_blocks_active", "blocks in force, by action", labels=["action"])
        for action in ("block", "alert"):
            active.add_metric([action], sum(b["action"] == action for b in blocks))
        yield active
        verdicts = CounterMetricFamily("iadm_controller_verdicts", "verdicts applied, by action", labels=["action"])
        for action, n in sorted(core.counts["verdicts"].items()):
            verdicts.add_metric([action], n)
        yield verdicts
        yield CounterMetricFamily("iadm_controller_packet_ins", "packet-ins handled", value=core.counts["packet_ins"])
        yield self._api_errors("iadm_controller")


class MonitorMetrics(_Metrics):
    """stats: a callable returning the monitor's counters (packets, flows_active, records, kernel_drops ...)."""

    def __init__(self, stats, responder=None):
        self.stats = stats
        self.responder = responder
        self._last = (time.monotonic(), 0)
        self.records_per_s = 0.0
        super().__init__()

    def collect(self):
        s = self.stats()
        now = time.monotonic()
        then, records = self._last
        if now - then >= 1.0:
            self.records_per_s = (s.get("records", 0) - records) / (now - then)
            self._last = (now, s.get("records", 0))
        yield CounterMetricFamily("iadm_monitor_packets", "packets captured", value=s.get("packets", 0))
        yield CounterMetricFamily("iadm_monitor_packets_skipped", "packets not decoded (truncated, bad header, "
                                  "other ethertype, unsupported)",
                                  value=sum(s.get(k, 0) for k in ("truncated", "bad_header", "other_ethertype",
                                                                   "unsupported")))
        yield CounterMetricFamily("iadm_monitor_kernel_drops", "packets the kernel dropped before the ring",
                                  value=s.get("kernel_drops", 0))
        yield GaugeMetricFamily("iadm_monitor_flows", "flows in the flow table", value=s.get("flows_active", 0))
        yield CounterMetricFamily("iadm_monitor_flows_evicted", "flows evicted from a full table",
                                  value=s.get("evicted", 0))
        yield CounterMetricFamily("iadm_monitor_records", "flow records made", value=s.get("records", 0))
        yield GaugeMetricFamily("iadm_monitor_records_per_second", "records/s since the previous scrape "
                                "(at least 1 s ago)", value=self.records_per_s)
        if self.responder is not None:
            info = GaugeMetricFamily("iadm_monitor_info", "this monitor's gateway (always 1)", labels=["gateway"])
            info.add_metric([self.responder.gateway_id or ""], 1)
            yield info
            verdicts = CounterMetricFamily("iadm_monitor_verdicts", "verdicts sent to the controller, by "
                                           "source and category", labels=["source", "category"])
            for (source, category), n in sorted(self.responder.verdicts_by.items()):
                verdicts.add_metric([source, category], n)
            yield verdicts
            yield CounterMetricFamily("iadm_monitor_verdicts_refused", "verdicts the controller refused or "
                                      "could not be reached for", value=self.responder.counts["verdicts_refused"])
            yield CounterMetricFamily("iadm_monitor_alerts", "alert lines written",
                                      value=self.responder.counts["alerts"])
            yield GaugeMetricFamily("iadm_monitor_blocks_active", "attackers under a block this monitor asked for",
                                    value=self.responder.blocks_active())
        yield self._api_errors("iadm_monitor")
