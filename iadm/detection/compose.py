"""One function that builds a monitor from its config: the CLI parses, this composes.

The parts and who owns what:
  FeaturePipeline (flows) -> Labeller -> Detector (opinions + fusion) -> Responder (verdicts, alert lines)
                                                     ^ rule engine, model, Z-score
An operator API, when enabled, reads the same detector and responder.
"""
from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field

from iadm.config import MonitorConfig

log = logging.getLogger("iadm")


@dataclass
class Monitor:
    labeller: object
    alert_log: object
    client: object | None
    flow_options: dict
    api: object | None = None
    store: object | None = None      # the console's alert store (iadm/console/store.py), fed by the alert log
    fleet: object | None = None      # the fleet's event publisher (iadm/fleet/publisher.py), likewise
    shared: dict = field(default_factory=lambda: {"stats": dict})

    def run(self, source: dict, records_path: str | None = None, duration: float | None = None,
            status_every: float = 1.0, stream=None, **overrides) -> dict:
        """source: {"iface": NAME} live or {"pcap": PATH} replayed."""
        from iadm.monitor import watch
        source = {"iface": None, "pcap": None} | source
        return watch(source, records_path=records_path, duration=duration, status_every=status_every,
                     labeller=self.labeller, shared=self.shared, **({"stream": stream} if stream else {}),
                     **(self.flow_options | overrides))

    def close(self) -> None:
        if self.api is not None:
            self.api.shutdown()
            self.api.server_close()
        self.labeller.close()
        self.alert_log.close()
        for sink in (self.store, self.fleet):
            if sink is not None:
                sink.close()


def build_monitor(config: MonitorConfig, *, replay: bool = False, client=None, rule_files=None,
                  variables=None, with_api: bool | None = None) -> Monitor:
    """replay: the clock is the capture's (evidence windows and alert times in capture time).
    client: who receives verdicts (default: the controller at config.verdict_url, or nobody)."""
    from iadm.alerts.log import AlertLog
    from iadm.monitor import Labeller
    zscore = None
    if config.zscore:
        from iadm.stats.zscore import ZScoreDetector
        os.makedirs(os.path.dirname(os.path.abspath(config.zscore_db)), exist_ok=True)
        zscore = ZScoreDetector(config.zscore_db, config.zscore_tolerance, config.zscore_frequency,
                                config.zscore_min_count)
    if client is None and config.verdict_url:
        from iadm.sdn.client import VerdictClient
        client = VerdictClient(config.verdict_url, config.verdict_token)
    api_on = config.api if with_api is None else with_api
    gateway = config.gateway_id or socket.gethostname()
    store = None
    if api_on and config.console:   # the console reads a store fed by the same events as the alert log
        from iadm.console.store import open_store
        store = open_store(config.console_store)
    sinks = [store] if store is not None else []
    fleet = None
    if config.fleet.enabled:   # events to the fleet's Redis stream (iadm/fleet): never waits on Redis
        from iadm.fleet.publisher import publisher
        fleet = publisher(config.fleet, gateway)
        sinks.append(fleet)
    alert_log = AlertLog(config.alert_log, config.alert_max_bytes, config.alert_keep, sinks=sinks)
    baseline = None
    if config.baseline or config.learn_seconds or store is not None:
        from iadm.detection.baseline import SiteBaseline
        # the console's "not an attack" teaches a baseline even where the config names none
        from iadm.console.app import default_baseline_path
        baseline = SiteBaseline(config.baseline or (default_baseline_path(config.console_store)
                                                    if store is not None else None), config.learn_seconds)
    labeller = Labeller.from_rules(
        rule_files or config.rule_files, variables or config.variables, watch=True, model=config.model or None,
        zscore=zscore, baseline=baseline,
        responder_options={"client": client, "alert_log": alert_log, "block_seconds": config.block_seconds,
                           "min_records": config.min_records, "model_min_records": config.model_min_records,
                           "evidence_seconds": config.evidence_seconds,
                           "realert_seconds": config.realert_seconds, "replay": replay,
                           "uplink_macs": config.uplink_macs, "no_uplink": config.no_uplink,
                           "shaped_rate_pps": config.shaped_rate_pps,
                           "gateway_id": gateway})
    flow_options = {"status_interval": config.status_interval, "idle_timeout": config.idle_timeout,
                    "max_flows": config.max_flows, "gateway": gateway}
    monitor = Monitor(labeller, alert_log, client, flow_options, store=store, fleet=fleet)
    console = None
    if store is not None:
        from iadm.console.app import Console
        from iadm.console.traffic import TrafficMeter
        labeller.observers.append(TrafficMeter(store, gateway))
        shared = config.console_store.startswith(("postgresql://", "postgres://"))   # a fleet's: every gateway
        console = Console(store, alert_log, labeller.detector, labeller.responder, client, baseline,
                          None if shared else gateway)
    if api_on:
        from iadm.api.operator import ErrorLog, MonitorState, OperatorServer
        errors = ErrorLog()
        logging.getLogger("iadm").addHandler(errors)
        state = MonitorState(labeller.detector, labeller.responder, stats=lambda: monitor.shared["stats"](),
                             alert_log=config.alert_log, client=client, errors=errors)
        monitor.api = OperatorServer((config.api_host, config.api_port), state, config.api_token, console=console)
        monitor.api.start()
    return monitor
