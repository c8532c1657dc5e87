"""The operator API of the monitor: what it saw and decided, and the Z-score detector's knobs.

JSON over HTTP, bearer token, 127.0.0.1 by default (iadm.httpjson); the
OpenAPI 3 document is at /openapi.json and GET / lists the routes. Every
error is {"error": {"status", "message", "field"?}}; a refused request changes
nothing. The routes follow the statistical detector report's API, with the
entity types under /entities/ so that they cannot collide with measurements.
"""
from __future__ import annotations

import collections
import logging
import threading
from urllib.parse import urlsplit

from iadm.alerts.log import read_events
from iadm.alerts.review import SOURCES, AlertFilter, parse_time
from iadm.httpjson import ApiError, ApiServer, JsonHandler, plain_digits
from iadm.stats.zscore import ENTITIES, FREQUENCY_RANGE, MEASUREMENTS, TOLERANCE_RANGE, SettingError

MAX_PAGE = 1000


class ErrorLog(logging.Handler):
    """The last warnings and errors of the monitor, for GET /status."""

    def __init__(self, keep: int = 50):
        super().__init__(logging.WARNING)
        self.records = collections.deque(maxlen=keep)

    def emit(self, record):
        self.records.append({"time": record.created, "level": record.levelname, "logger": record.name,
                             "message": record.getMessage()})


class MonitorState:
    """What the API reads: the detector (rules, model, Z-score), the responder, the capture's counters."""

    def __init__(self, detector, responder=None, stats=dict, alert_log: str | None = None, client=None,
                 errors: ErrorLog | None = None):
        self.detector, self.responder, self.stats = detector, responder, stats
        self.alert_log, self.client = alert_log, client
        self.errors = errors or ErrorLog()


def _int(params: dict, name: str, default: int, lo: int, hi: int) -> int:
    text = params.get(name)
    if text is None:
        return default
    if not plain_digits(text) or not lo <= int(text) <= hi:
        raise ApiError(400, f"{name} must be an integer from {lo} to {hi}", name)
    return int(text)


def _time(params: dict, name: str) -> float | None:
    if name not in params:
        return None
    try:
        return parse_time(params[name])
    except ValueError as exc:
        raise ApiError(400, str(exc), name) from None


def _page(items: list, params: dict) -> dict:
    limit = _int(params, "limit", 100, 1, MAX_PAGE)
    offset = _int(params, "offset", 0, 0, 10**9)
    return {"total": len(items), "offset": offset, "limit": limit, "items": items[offset:offset + limit]}


class _Handler(JsonHandler):
    server_version = "iadm-monitor"
    ROUTES = [
        ("GET", "/", "index"), ("GET", "/openapi.json", "openapi"), ("GET", "/status", "status"),
        ("GET", "/config", "get_config"), ("PUT", "/config", "put_config"), ("GET", "/alerts", "alerts"),
        ("GET", "/blocks", "blocks"), ("GET", "/metrics", "metrics"),
        ("GET", "/entities/{kind}", "entities"),
        ("GET", "/{measurement}/stats", "stats"), ("GET", "/{measurement}/stats/{key_id}", "key_stats"),
        ("GET", "/{measurement}/anomalies", "anomalies"),
        ("POST", "/{measurement}/anomalies/{anomaly_id}/feedback", "feedback"),
    ]

    @property
    def state(self) -> MonitorState:
        return self.server.state

    def _dispatch(self, method: str) -> None:
        # The console's pages (iadm/console) share the port and the token; they log in with a
        # session cookie instead of a bearer header.
        site = getattr(self.server, "console", None)
        path = urlsplit(self.path).path
        if site is not None and (path == "/console" or path.startswith("/console/")):
            return site.serve(self, method)
        return super()._dispatch(method)

    def _zscore(self):
        z = self.state.detector.zscore
        if z is None:
            raise ApiError(409, "the Z-score detector is off in this monitor (config [zscore] enabled)")
        return z

    def _measurement(self, measurement: str) -> str:
        if measurement not in MEASUREMENTS:
            raise ApiError(404, f"no measurement {measurement!r}; measurements: {', '.join(MEASUREMENTS)}",
                           "measurement")
        return measurement

    # --- routes ---------------------------------------------------------------------------------
    def index(self):
        return 200, {"routes": [f"{m} {p}" for m, p, _ in self.ROUTES], "measurements": list(MEASUREMENTS),
                     "entities": list(ENTITIES), "openapi": "/openapi.json"}

    def openapi(self):
        return 200, OPENAPI

    def status(self):
        d = self.state.detector
        ruleset = d.engine.ruleset
        components = {
            "capture": {"ok": True, **{k: v for k, v in self.state.stats().items() if isinstance(v, (int, float))}},
            "rules": {"ok": True, "files": list(ruleset.sources[0]) if ruleset.sources else [],
                      "rules": len(ruleset.rules), "reload_error": getattr(d.watcher, "last_error", None)},
            "model": {"ok": d.model is not None, "name": d.model_name or None,
                      "target": d.model.card["target"] if d.model else None,
                      "created": d.model.card.get("created") if d.model else None},
            "zscore": ({"ok": True, **d.zscore.settings(), "keys": d.zscore.size} if d.zscore else {"ok": False}),
            "responder": ({"ok": True, **self.state.responder.counts} if self.state.responder else {"ok": False}),
        }
        return 200, {"components": components, "last_errors": list(self.state.errors.records)}

    def get_config(self):
        return 200, self._zscore().settings() | {"ranges": {"tolerance": TOLERANCE_RANGE,
                                                             "frequency": FREQUENCY_RANGE}}

    def put_config(self):
        z = self._zscore()
        doc = self.json_body()
        unknown = sorted(set(doc) - {"tolerance", "frequency"})
        if unknown:
            raise ApiError(400, f"unknown field {unknown[0]!r}; fields: tolerance, frequency", unknown[0])
        try:
            return 200, z.configure(doc.get("tolerance"), doc.get("frequency"))
        except SettingError as exc:
            raise ApiError(400, str(exc), exc.field) from None

    def stats(self, measurement):
        params = self.query()
        return 200, _page(self._zscore().stats(self._measurement(measurement)), params)

    def key_stats(self, measurement, key_id):
        z = self._zscore()
        measurement = self._measurement(measurement)
        slot = z.slot_of(key_id)
        if slot is None:
            raise ApiError(404, f"no key {key_id!r}; GET /{measurement}/stats lists them", "key_id")
        return 200, z.key_stats(measurement, slot)

    def entities(self, kind):
        if kind not in ENTITIES:
            raise ApiError(404, f"no entity type {kind!r}; types: {', '.join(ENTITIES)}", "kind")
        return 200, {"type": kind, "values": self._zscore().entities(kind)}

    def anomalies(self, measurement):
        params = self.query()
        status = params.get("status", "open")
        if status not in ("open", "confirmed", "false_positive", "all"):
            raise ApiError(400, "status must be open, confirmed, false_positive or all", "status")
        found = self._zscore().anomalies(self._measurement(measurement), _time(params, "since"),
                                         _time(params, "until"), params.get("key"), status)
        return 200, _page(found, params)

    def feedback(self, measurement, anomaly_id):
        z = self._zscore()
        measurement = self._measurement(measurement)
        if not plain_digits(anomaly_id):
            raise ApiError(404, f"no anomaly {anomaly_id!r}", "anomaly_id")
        doc = self.json_body()
        unknown = sorted(set(doc) - {"verdict"})
        if unknown:
            raise ApiError(400, f"unknown field {unknown[0]!r}; fields: verdict", unknown[0])
        try:
            return 200, z.feedback(measurement, int(anomaly_id), doc.get("verdict"))
        except SettingError as exc:
            raise ApiError(409 if "already" in str(exc) else 400, str(exc), exc.field) from None
        except LookupError as exc:
            raise ApiError(404, str(exc), "anomaly_id") from None

    def alerts(self):
        params = self.query()
        if not self.state.alert_log:
            raise ApiError(409, "this monitor writes no alert log")
        unknown = sorted(set(params) - {"since", "until", "src", "category", "sid", "source", "limit", "offset"})
        if unknown:
            raise ApiError(400, f"unknown query parameter {unknown[0]!r}", unknown[0])
        if params.get("source") not in (None, *SOURCES):
            raise ApiError(400, f"source must be one of {', '.join(SOURCES)}", "source")
        keep = AlertFilter(since=_time(params, "since"), until=_time(params, "until"), src=params.get("src"),
                           category=params.get("category"), source=params.get("source"),
                           sid=_int(params, "sid", 0, 0, 2**31) if "sid" in params else None)
        try:
            events = [e for e in read_events(self.state.alert_log) if keep(e)]
        except FileNotFoundError:
            events = []
        for e in events:
            e.pop("_ts", None)
        events.reverse()   # newest first
        return 200, _page(events, params)

    def blocks(self):
        if self.state.client is None:
            raise ApiError(409, "this monitor has no controller (config verdicts.url)")
        try:
            return 200, {"blocks": self.state.client.blocks()}
        except Exception as exc:   # the controller is down or refused: say so, as a gateway would
            raise ApiError(502, f"the controller's verdict API did not answer: {exc}") from None

    def metrics(self):
        metrics = self.server.metrics
        return 200, metrics.render(), metrics.content_type


class OperatorServer(ApiServer):
    """Concurrent, capped, with read deadlines (iadm.httpjson.ApiServer): a stalled client holds up nobody."""

    def __init__(self, address: tuple, state: MonitorState, token: str, metrics=None, console=None, **limits):
        if not token:
            raise ValueError("the operator API needs a token (config api.token or IADM_API_TOKEN)")
        from iadm.metrics import MonitorMetrics
        self.state = state
        self.token = token
        self.console = None
        if console is not None:   # an iadm.console.app.Console: its pages under /console
            from iadm.console.web import ConsoleSite
            self.console = ConsoleSite(console, token)
        self.metrics = metrics or MonitorMetrics(state.stats, state.responder)
        self.count_error = self.metrics.api_error
        super().__init__(address, _Handler, **limits)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True,
                                  name="operator-api")
        thread.start()
        return thread


def _param(name, schema, where="query", required=False, description=""):
    return {"name": name, "in": where, "required": required, "schema": schema, "description": description}


_ERR = {"description": "refused", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_OK = {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}
_MEASUREMENT = _param("measurement", {"type": "string", "enum": list(MEASUREMENTS)}, "path", True)
_PAGE = [_param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}),
         _param("offset", {"type": "integer", "minimum": 0})]
_TIMES = [_param("since", {"type": "string"}, description="ISO-8601, epoch seconds or an age (10m)"),
          _param("until", {"type": "string"})]


def _op(summary, params=(), body=None, codes=(400, 401, 404, 409)):
    op = {"summary": summary, "parameters": list(params), "responses": {"200": _OK}}
    op["responses"].update({str(c): _ERR for c in codes})
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


OPENAPI = {
    "openapi": "3.0.3",
    "info": {"title": "iadm monitor operator API", "version": "1"},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["status", "message"],
            "properties": {"status": {"type": "integer"}, "message": {"type": "string"},
                           "field": {"type": "string"}}}}}}},
    "security": [{"bearer": []}],
    "paths": {
        "/": {"get": _op("index of routes", codes=(401,))},
        "/openapi.json": {"get": _op("this document", codes=(401,))},
        "/status": {"get": _op("component health, last errors, rule set and model in use", codes=(401,))},
        "/config": {"get": _op("Z-score tolerance and frequency", codes=(401, 409)),
                    "put": _op("change tolerance and/or frequency", body={
                        "type": "object", "additionalProperties": False, "properties": {
                            "tolerance": {"type": "number", "minimum": TOLERANCE_RANGE[0],
                                          "maximum": TOLERANCE_RANGE[1]},
                            "frequency": {"type": "number", "minimum": FREQUENCY_RANGE[0],
                                          "maximum": FREQUENCY_RANGE[1]}}}, codes=(400, 401, 409, 411, 413, 415))},
        "/alerts": {"get": _op("the alert log, newest first, filtered and paginated", [
            *_TIMES, _param("src", {"type": "string"}), _param("category", {"type": "string"}),
            _param("sid", {"type": "integer", "minimum": 0}), _param("source", {"type": "string", "enum":
                                                                               list(SOURCES)}), *_PAGE])},
        "/blocks": {"get": _op("the controller's blocks, read through", codes=(401, 409, 502))},
        "/metrics": {"get": {"summary": "Prometheus metrics (no token)", "security": [],
                             "responses": {"200": {"description": "OK", "content": {"text/plain": {
                                 "schema": {"type": "string"}}}}}}},
        "/entities/{kind}": {"get": _op("values seen of one key field", [
            _param("kind", {"type": "string", "enum": list(ENTITIES)}, "path", True)])},
        "/{measurement}/stats": {"get": _op("statistics of every key", [_MEASUREMENT, *_PAGE])},
        "/{measurement}/stats/{key_id}": {"get": _op("count, mean, std and sums of one key", [
            _MEASUREMENT, _param("key_id", {"type": "string"}, "path", True)])},
        "/{measurement}/anomalies": {"get": _op("anomalies, filtered by time, key and status", [
            _MEASUREMENT, *_TIMES, _param("key", {"type": "string"}),
            _param("status", {"type": "string", "enum": ["open", "confirmed", "false_positive", "all"]}),
            *_PAGE])},
        "/{measurement}/anomalies/{anomaly_id}/feedback": {"post": _op(
            "confirm an anomaly, or mark it a false positive (leaves the list, feeds the statistics)",
            [_MEASUREMENT, _param("anomaly_id", {"type": "integer", "minimum": 1}, "path", True)],
            body={"type": "object", "required": ["verdict"], "additionalProperties": False,
                  "properties": {"verdict": {"type": "string", "enum": ["confirmed", "false_positive"]}}},
            codes=(400, 401, 404, 409, 411, 413, 415))},
    },
}
