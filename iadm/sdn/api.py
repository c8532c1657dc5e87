"""The controller's verdict API: HTTP + JSON, bearer-token authenticated.

    GET  /v1/health     switches connected, blocks active
    GET  /v1/blocks     the active blocks
    POST /v1/verdicts   block / alert / unblock (schema in iadm.sdn.verdicts)
    GET  /metrics       Prometheus text (no token)

Every error is a JSON document {"error": {"status", "message", "field"?}}
and a refused request changes nothing. Connections are served concurrently,
capped, with read deadlines (iadm.httpjson.ApiServer): a stalled client does
not delay anyone's verdict.
"""
from __future__ import annotations

from iadm.httpjson import MAX_BODY, ApiServer, JsonHandler
from iadm.sdn.verdicts import parse_verdict

API_VERSION = 1
__all__ = ["MAX_BODY", "VerdictServer"]


class _Handler(JsonHandler):
    server_version = "iadm-controller"
    ROUTES = [("GET", "/v1/health", "health"), ("GET", "/v1/blocks", "blocks"),
              ("POST", "/v1/verdicts", "verdict"), ("GET", "/metrics", "metrics")]

    def health(self):
        core = self.server.core
        return 200, {"api_version": API_VERSION, "switches": [f"{d:016x}" for d in sorted(core.switches)],
                     "blocks": len(core.blocks())}

    def blocks(self):
        return 200, {"blocks": self.server.core.blocks()}

    def verdict(self):
        return self.server.core.apply_verdict(parse_verdict(self.raw_body()))

    def metrics(self):
        return 200, self.server.metrics.render(), self.server.metrics.content_type


class VerdictServer(ApiServer):
    """Each connection in its own worker (`spawn`: the framework's hub.spawn in the app, a thread by
    default); the core locks its own state, and a verdict's barrier wait holds up only its own client."""

    def __init__(self, address: tuple, core, token: str, metrics=None, **limits):
        if not token:
            raise ValueError("the verdict API needs a token (config api.token or IADM_API_TOKEN)")
        from iadm.metrics import ControllerMetrics
        self.core = core
        self.token = token
        self.metrics = metrics or ControllerMetrics(core)
        self.count_error = self.metrics.api_error
        super().__init__(address, _Handler, **limits)
