"""The console's pages and actions, independent of HTTP (iadm/console/web.py serves them).

Each page method takes the query parameters and returns (status, template name, context);
each action validates everything first, then acts, then writes the operator's decision to the
alert log (which feeds the store), so a refused action changes nothing.
"""
from __future__ import annotations

import json
import logging
import os
import time

from iadm.alerts.review import parse_time
from iadm.console.store import COARSE_BUCKET, AlertStore, GroupFilter, StoreError, operator_event
from iadm.console.vendors import vendor
from iadm.httpjson import plain_digits

log = logging.getLogger("iadm.console")
PAGE = 50
WINDOWS = {"15m": 900, "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400}


class ConsoleError(ValueError):
    """A refused page or action: HTTP status, message, and the field at fault."""

    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.field = status, field


class Console:
    """What the pages read and change: the store, the alert log (operator events are written to it),
    the detector (rules, model, Z-score), the responder, the controller's client, the site baseline."""

    def __init__(self, store: AlertStore, alert_log=None, detector=None, responder=None, client=None,
                 baseline=None, gateway: str | None = None):
        self.store, self.alert_log, self.detector = store, alert_log, detector
        self.responder, self.client, self.baseline, self.gateway = responder, client, baseline, gateway

    # --- helpers --------------------------------------------------------------------------------
    @staticmethod
    def _offset(params: dict) -> int:
        text = params.get("offset", "0") or "0"
        if not plain_digits(text) or int(text) > 10**9:
            raise ConsoleError(400, "offset must be a whole number", "offset")
        return int(text)

    @staticmethod
    def _time(params: dict, name: str) -> float | None:
        text = (params.get(name) or "").strip()
        if not text:
            return None
        try:
            return parse_time(text)
        except ValueError as exc:
            raise ConsoleError(400, f"{name}: {exc}", name) from None

    def _record(self, event: dict) -> None:
        """An operator's decision: to the alert log (and so to the store), or straight to the store."""
        if self.alert_log is not None:
            self.alert_log.write(event)
        else:
            self.store.add(event)

    def _group(self, group_id: str) -> dict:
        if not plain_digits(str(group_id)):
            raise ConsoleError(404, f"no alert group {group_id!r}", "group")
        group = self.store.group(int(group_id))
        if group is None:
            raise ConsoleError(404, f"no alert group {group_id}", "group")
        return group

    # --- pages ----------------------------------------------------------------------------------
    def inbox(self, params: dict) -> tuple:
        where = GroupFilter(since=self._time(params, "since"), until=self._time(params, "until"),
                            category=params.get("category") or None, address=params.get("host") or None,
                            action=params.get("action") or None, source=params.get("source") or None,
                            state=params.get("state") or None, gateway=self.gateway or params.get("gateway") or None)
        offset = self._offset(params)
        try:
            page = self.store.groups(where, offset, PAGE)
        except StoreError as exc:
            raise ConsoleError(400, str(exc), exc.field) from None
        # a fleet's store (PostgreSQL) holds every gateway's alerts: this console shows them all,
        # with a gateway column and filter; a gateway's own store shows its own
        return 200, "inbox.html", {"page": page, "params": params, "fleet": self.gateway is None,
                                   "filters": {k: params.get(k, "") for k in (
                                       "since", "until", "category", "host", "action", "source", "state",
                                       "gateway")}}

    def group_page(self, group_id: str) -> tuple:
        group = self._group(group_id)
        opinions = [_opinions(e) for e in group["events"]]
        return 200, "group.html", {"group": group, "opinions": opinions}

    def mitigations(self, params: dict) -> tuple:
        active, error = [], None
        if self.client is None:
            error = "this monitor has no controller (config verdicts.url)"
        else:
            try:
                active = self.client.blocks()
            except Exception as exc:   # the controller is down: say so, show the history anyway
                error = f"the controller's verdict API did not answer: {exc}"
        history = self.store.mitigations(self.gateway, self._offset(params), PAGE)
        return 200, "mitigations.html", {"active": active, "error": error, "history": history}

    def devices(self, params: dict) -> tuple:
        page = self.store.devices(self.gateway, self._offset(params), PAGE)
        learned = {}
        if self.baseline is not None:
            for _sid, src, _dest, _port in list(self.baseline.entries):   # the detector may be learning
                learned[src] = learned.get(src, 0) + 1
        for d in page.items:
            d["vendor"] = vendor(d["mac"])
            d["baseline"] = sum(learned.get(a, 0) for a in d["addresses"])
        return 200, "devices.html", {"page": page, "baseline_on": self.baseline is not None}

    def timeline(self, params: dict) -> tuple:
        span = self.store.span(self.gateway)
        window = params.get("window") or "all"
        if window != "all" and window not in WINDOWS:
            raise ConsoleError(400, f"window must be all or one of {', '.join(WINDOWS)}", "window")
        until = self._time(params, "until")
        if span is None:
            return 200, "timeline.html", {"chart": None, "window": window, "windows": list(WINDOWS)}
        until = until or span[1]
        since = span[0] if window == "all" else until - WINDOWS[window]
        since = min(since, until - 1)
        bucket = getattr(self.store, "traffic_bucket", 10.0)
        # about 120 columns whatever the window: readable at a glance, never per-tick spikes; a
        # step of whole 5-minute buckets, aligned, once the window is long enough to read them
        step = max(bucket, -(-(until - since) // 120 // bucket) * bucket)
        if step >= COARSE_BUCKET:
            step = -(-step // COARSE_BUCKET) * COARSE_BUCKET
        since = since // step * step
        data = self.store.timeline(since, until + step, step, self.gateway)
        return 200, "timeline.html", {"chart": chart(data), "window": window, "windows": list(WINDOWS),
                                      "data": data}

    def detector_page(self, params: dict | None = None, error: ConsoleError | None = None) -> tuple:
        d = self.detector
        rules = {"count": 0, "files": [], "error": None}
        if d is not None:
            ruleset = d.engine.ruleset
            rules = {"count": len(ruleset.rules), "files": list(ruleset.sources[0]) if ruleset.sources else [],
                     "error": getattr(d.watcher, "last_error", None),
                     "reloaded": getattr(d.watcher, "reloaded_at", None)}
        zscore = d.zscore.settings() if d is not None and d.zscore is not None else None
        card = d.model.card if d is not None and d.model is not None else None
        from iadm.stats.zscore import FREQUENCY_RANGE, TOLERANCE_RANGE
        return (error.status if error else 200), "detector.html", {
            "rules": rules, "zscore": zscore, "card": card, "card_json": json.dumps(card, indent=1, default=str)
            if card else "", "model_name": getattr(d, "model_name", "") if d else "", "error": error,
            "tolerance_range": TOLERANCE_RANGE, "frequency_range": FREQUENCY_RANGE, "form": params or {}}

    # --- actions --------------------------------------------------------------------------------
    def set_state(self, group_id: str, action: str, who: str) -> dict:
        if action not in ("archive", "escalate", "inbox"):
            raise ConsoleError(404, f"no action {action!r} on a group", "action")
        group = self._group(group_id)
        self._record(operator_event(group, action, who))
        return group

    def unblock(self, block_id: str, who: str, group: dict | None = None) -> None:
        if not plain_digits(str(block_id)):
            raise ConsoleError(404, f"no block {block_id!r}", "block_id")
        if self.client is None:
            raise ConsoleError(409, "this monitor has no controller (config verdicts.url)")
        try:
            self.client.verdict(action="unblock", block_id=int(block_id), source=f"console:{who}"[:128])
        except Exception as exc:
            status = getattr(exc, "status", 502)
            raise ConsoleError(404 if status == 404 else 502, f"the controller refused the unblock: {exc}") from None
        self._record(operator_event(group or {"gateway": self.gateway}, "unblock", who, block_id=int(block_id)))

    def not_attack(self, group_id: str, who: str) -> dict:
        """"Not an attack": unblock what the group's alerts blocked, fold its Z-score anomalies into
        the statistics as false positives, teach the site baseline its (sid, source, destination,
        port)s, and log the decision."""
        group = self._group(group_id)
        if group["not_attack"]:
            raise ConsoleError(409, f"alert group {group_id} is already marked not an attack")
        effects = {"unblocked": [], "zscore_false_positives": 0, "baseline_learned": 0}
        for m in group["mitigations"]:
            if m["ended_at"] is None and self.client is not None:
                try:
                    self.unblock(m["block_id"], who, group)
                    effects["unblocked"].append(m["block_id"])
                except ConsoleError as exc:   # expired already (the controller has no such block)
                    log.info("not an attack: block %s not unblocked: %s", m["block_id"], exc)
        zscore = self.detector.zscore if self.detector is not None else None
        if zscore is not None and group["src_ip"] and group["dest_ip"]:
            effects["zscore_false_positives"] = zscore.false_positives(group["src_ip"], group["dest_ip"],
                                                                       group["first_seen"] - 60, None)
        if self.baseline is not None:
            ports = {e.get("dest_port") for e in group["events"]} or {None}
            for port in ports:
                effects["baseline_learned"] += self.baseline.teach(group["signature_id"], group["src_ip"],
                                                                   group["dest_ip"], port, group["last_seen"])
        self._record(operator_event(group, "not_attack", who, effects=effects))
        return effects

    def configure(self, form: dict) -> dict:
        if self.detector is None or self.detector.zscore is None:
            raise ConsoleError(409, "the Z-score detector is off in this monitor (config [zscore] enabled)")
        values = {}
        for name in ("tolerance", "frequency"):
            text = (form.get(name) or "").strip()
            if text:
                try:
                    values[name] = float(text)
                except ValueError:
                    raise ConsoleError(400, f"{name} must be a number, not {text!r}", name) from None
        from iadm.stats.zscore import SettingError
        try:
            return self.detector.zscore.configure(values.get("tolerance"), values.get("frequency"))
        except SettingError as exc:
            raise ConsoleError(400, str(exc), exc.field) from None


def _opinions(event: dict) -> dict:
    """Every opinion an alert line carries, for the detail view."""
    alert = event.get("alert") or {}
    model = event.get("model") or {}
    return {"time": event.get("timestamp"), "rule": {"sid": alert.get("signature_id"), "msg": alert.get("signature")}
            if alert.get("signature_id") else None,
            "model": model if model.get("name") else None, "zscore": event.get("zscore"),
            "source": event.get("verdict_source"), "features": event.get("features") or {},
            "flow": event.get("flow") or {}, "verdict": event.get("verdict"), "records": event.get("records"),
            "evidence": event.get("evidence"), "ports": (event.get("src_port"), event.get("dest_port")),
            "proto": event.get("proto"), "action": alert.get("action")}


def chart(data: dict, width: int = 960, height: int = 260, alerts_height: int = 60) -> dict:
    """The timeline as SVG geometry (polylines, bars, marks) the template draws: no script needed."""
    n = len(data["buckets"])
    since, step = data["since"], data["step"]
    until = since + n * step
    peak = max([max(v) for v in data["traffic"].values() if v] + [1.0])
    alerts_peak = max(data["alerts"] + [1])
    x = lambda t: round((t - since) / (until - since) * width, 1)   # noqa: E731
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"]
    series = []
    for k, (device, values) in enumerate(data["traffic"].items()):
        points = " ".join(f"{x(since + (i + 0.5) * step)},{round(height - v / peak * (height - 10), 1)}"
                          for i, v in enumerate(values))
        series.append({"device": device, "points": points, "color": palette[k % len(palette)],
                       "peak": max(values) if values else 0})
    bar = width / max(n, 1)
    bars = [{"x": round(i * bar, 1), "w": max(round(bar - 1, 1), 1), "h": round(c / alerts_peak * alerts_height, 1),
             "count": c} for i, c in enumerate(data["alerts"]) if c]
    attacks = [{"x": x(max(a["start"], since)), "w": max(x(min(a["end"], until)) - x(max(a["start"], since)), 2),
                "label": f"{a['signature']} from {a['src_ip']}"} for a in data["attacks"]]
    marks = [{"x": x(m["at"]), "label": f"block {m['block_id']} on {m['attacker']}",
              "end": x(m["ended_at"]) if m["ended_at"] and m["ended_at"] < until else None}
             for m in data["mitigations"]]
    ticks = [{"x": x(since + i * (until - since) / 6), "anchor": ("start", *["middle"] * 5, "end")[i],
              "label": time.strftime(
        "%H:%M:%S" if until - since < 86400 else "%m-%d %H:%M", time.gmtime(since + i * (until - since) / 6))}
             for i in range(7)]
    return {"width": width, "height": height, "alerts_height": alerts_height, "series": series, "bars": bars,
            "attacks": attacks, "marks": marks, "ticks": ticks, "peak": round(peak, 1), "alerts_peak": alerts_peak,
            "step": step}


def default_baseline_path(store_path: str) -> str:
    """Where the console keeps what operators taught, when the config names no baseline file."""
    return os.path.join(os.path.dirname(os.path.abspath(store_path)), "site-baseline.json")
