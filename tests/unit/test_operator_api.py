"""The monitor's operator API over real HTTP: token, routes, validation, feedback, read-through, fuzzing."""
import http.client
import json

import numpy as np
import pandas as pd
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from iadm.alerts.log import AlertLog, eve_timestamp
from iadm.api.operator import OPENAPI, ErrorLog, MonitorState, OperatorServer
from iadm.detection.detector import Detector
from iadm.rules.engine import RuleEngine
from iadm.stats.zscore import ZScoreDetector

TOKEN = "operator-token"
T0 = 1_790_000_000.0


class Controller:
    def __init__(self):
        self.up = True

    def blocks(self):
        if not self.up:
            raise ConnectionRefusedError("connection refused")
        return [{"block_id": 1, "action": "block", "match": {"eth_src": "00:00:00:00:00:65", "in_port": 4}}]


def flow(values, sport=40000):
    n = len(values)
    return pd.DataFrame({"saddr": "10.0.0.1", "daddr": "10.0.0.2", "sport": sport, "dport": 1883, "proto": "tcp",
                         "bytes": np.asarray(values, float), "pkts": 5, "stime": T0, "ltime": T0 + np.arange(n)})


@pytest.fixture
def api(tmp_path):
    zscore = ZScoreDetector(str(tmp_path / "z.sqlite"), min_count=5)
    zscore.score(flow([100, 101, 99, 100, 102, 98]))
    zscore.score(flow([5000]))
    detector = Detector(RuleEngine.from_files(["rules/iot.rules"], "rules/variables.conf"), zscore=zscore)
    log = AlertLog(str(tmp_path / "alerts.json"))
    for i in range(30):
        log.write({"timestamp": eve_timestamp(T0 + i), "event_type": "alert", "src_ip": f"10.0.0.{101 + i % 3}",
                   "verdict_source": "rule" if i % 2 else "model",
                   "alert": {"action": "blocked", "signature_id": 1000001 if i % 2 else 0, "category": "DoS"}})
    log.close()
    controller = Controller()
    errors = ErrorLog()
    state = MonitorState(detector, stats=lambda: {"packets": 1234, "records": 99, "flows_active": 7},
                         alert_log=str(tmp_path / "alerts.json"), client=controller, errors=errors)
    server = OperatorServer(("127.0.0.1", 0), state, TOKEN)
    server.start()
    yield server.server_address[1], zscore, controller
    server.shutdown()
    server.server_close()


def call(port, method, path, body=None, token=TOKEN, ctype="application/json"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if body is not None:
        headers["Content-Type"] = ctype
        body = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    return resp.status, (json.loads(raw) if resp.getheader("Content-Type") == "application/json" else raw.decode())


def test_index_status_and_openapi(api):
    port, _, _ = api
    status, index = call(port, "GET", "/")
    assert status == 200 and "POST /{measurement}/anomalies/{anomaly_id}/feedback" in index["routes"]
    status, doc = call(port, "GET", "/status")
    assert doc["components"]["rules"]["rules"] == 15 and doc["components"]["capture"]["packets"] == 1234
    assert doc["components"]["zscore"]["tolerance"] == 3.0 and doc["components"]["model"]["ok"] is False
    status, spec = call(port, "GET", "/openapi.json")
    assert status == 200 and spec == json.loads(json.dumps(OPENAPI))


@pytest.mark.parametrize("token", [None, "wrong"])
def test_every_route_needs_the_token_and_a_refusal_changes_nothing(api, token):
    port, zscore, _ = api
    for method, path in (("GET", "/status"), ("GET", "/bytes_total/stats"), ("GET", "/nowhere")):
        status, doc = call(port, method, path, token=token)
        assert status == 401 and doc["error"]["status"] == 401
    status, _ = call(port, "PUT", "/config", {"tolerance": 4}, token=token)
    assert status == 401 and zscore.tolerance == 3.0


def test_config_validation(api):
    port, zscore, _ = api
    assert call(port, "PUT", "/config", {"tolerance": 4.5, "frequency": 12})[1] == {
        "tolerance": 4.5, "frequency": 12.0, "min_count": 5}
    for body, field in (({"tolerance": 7}, "tolerance"), ({"tolerance": 1}, "tolerance"),
                        ({"frequency": 169}, "frequency"), ({"tolerance": "3"}, "tolerance"),
                        ({"tolerence": 3}, "tolerence")):
        status, doc = call(port, "PUT", "/config", body)
        assert status == 400 and doc["error"]["field"] == field
    status, doc = call(port, "PUT", "/config", b"{not json")
    assert status == 400 and "not JSON" in doc["error"]["message"]
    status, _ = call(port, "PUT", "/config", b"[]")
    assert status == 400
    assert call(port, "PUT", "/config", {"tolerance": 3}, ctype="text/plain")[0] == 415
    assert zscore.settings()["tolerance"] == 4.5 and zscore.settings()["frequency"] == 12


def test_unknown_routes_measurements_methods(api):
    port, _, _ = api
    assert call(port, "GET", "/nowhere")[0] == 404
    status, doc = call(port, "GET", "/bytes_made/stats")
    assert status == 404 and "bytes_total" in doc["error"]["message"]
    assert call(port, "DELETE", "/config")[0] == 405
    assert call(port, "GET", "/entities/url")[0] == 404
    assert call(port, "GET", "/bytes_total/stats?limit=0")[0] == 400
    assert call(port, "GET", "/bytes_total/stats?limit=1&limit=2")[0] == 400
    # digits of other scripts are digits to str.isdigit() but not to int(): a 400, never a 500
    assert call(port, "GET", "/bytes_total/stats?limit=%C2%B9")[0] == 400
    assert call(port, "POST", "/bytes_total/anomalies/%C2%B9/feedback", {"verdict": "confirmed"})[0] in (400, 404)


def test_stats_entities_and_anomaly_feedback(api):
    port, zscore, _ = api
    status, page = call(port, "GET", "/bytes_total/stats")
    [key] = page["items"]
    assert key["count"] == 6 and key["service"] == "mqtt"
    status, one = call(port, "GET", f"/bytes_total/stats/{key['key_id']}")
    assert one["mean"] == pytest.approx(100.0) and one["std"] > 0
    assert call(port, "GET", "/bytes_total/stats/ffffffffffff")[0] == 404
    assert call(port, "GET", "/entities/service")[1]["values"] == ["mqtt"]
    status, anomalies = call(port, "GET", f"/bytes_total/anomalies?key={key['key_id']}&since={T0 - 1}")
    [anomaly] = anomalies["items"]
    assert anomaly["value"] == 5000
    path = f"/bytes_total/anomalies/{anomaly['id']}/feedback"
    assert call(port, "POST", path, {"verdict": "maybe"})[0] == 400
    assert call(port, "POST", path, {"verdict": "false_positive"})[0] == 200
    assert call(port, "GET", "/bytes_total/anomalies")[1]["items"] == []
    assert call(port, "GET", f"/bytes_total/stats/{key['key_id']}")[1]["count"] == 7
    assert call(port, "POST", path, {"verdict": "confirmed"})[0] == 409
    assert call(port, "POST", "/bytes_total/anomalies/999/feedback", {"verdict": "confirmed"})[0] == 404


def test_alerts_are_filtered_and_paginated_newest_first(api):
    port, _, _ = api
    status, page = call(port, "GET", "/alerts?source=rule&limit=5&offset=5")
    assert page["total"] == 15 and len(page["items"]) == 5
    assert all(e["verdict_source"] == "rule" for e in page["items"])
    status, page = call(port, "GET", "/alerts?src=10.0.0.101&sid=1000001")
    assert page["total"] == 5
    assert call(port, "GET", "/alerts?source=snort")[0] == 400
    assert call(port, "GET", "/alerts?since=yesterday")[0] == 400


def test_blocks_are_read_through_and_a_dead_controller_is_a_502(api):
    port, _, controller = api
    assert call(port, "GET", "/blocks")[1]["blocks"][0]["block_id"] == 1
    controller.up = False
    status, doc = call(port, "GET", "/blocks")
    assert status == 502 and "did not answer" in doc["error"]["message"]


def test_metrics_need_no_token_and_count_refusals(api):
    port, _, _ = api
    call(port, "GET", "/status", token="wrong")
    status, text = call(port, "GET", "/metrics", token=None)
    assert status == 200 and "iadm_monitor_packets_total 1234.0" in text
    assert 'iadm_monitor_api_errors_total{status="401"}' in text


def test_the_openapi_document_is_valid_and_covers_every_route():
    from openapi_spec_validator import validate
    from iadm.api.operator import _Handler
    validate(OPENAPI)
    assert {(m.lower(), p) for m, p, _ in _Handler.ROUTES} == {
        (method, path) for path, ops in OPENAPI["paths"].items() for method in ops}


SCHEMA = schemathesis.openapi.from_dict(OPENAPI)


@SCHEMA.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzzing_the_schema_finds_no_server_error(case, api):
    port, _, _ = api
    response = case.call(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code < 500, (case.method, case.formatted_path, response.text)
