"""The verdict API over real HTTP on loopback, in front of a controller core and a fake switch."""
import http.client
import json
import threading

import pytest
from fakeswitch import H1, H2, IP, MON

from iadm.sdn.api import MAX_BODY, VerdictServer

TOKEN = "s3cret-token"


@pytest.fixture
def api(gateway):
    server = VerdictServer(("127.0.0.1", 0), gateway.core, TOKEN)
    thread = threading.Thread(target=lambda: server.serve_forever(poll_interval=0.05), daemon=True)
    thread.start()
    gateway.learn_all()
    yield gateway, server.server_address[1]
    server.shutdown()
    server.server_close()


def request(port, method, path, body=None, token=TOKEN, ctype="application/json", headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    if body is not None:
        hdrs["Content-Type"] = ctype
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
    conn.request(method, path, body=body, headers=hdrs)
    resp = conn.getresponse()
    doc = json.loads(resp.read())
    conn.close()
    return resp.status, doc


def state(gateway):
    return gateway.core.blocks(), gateway.switch.table(0)


def test_block_list_unblock_round_trip(api):
    gateway, port = api
    status, doc = request(port, "POST", "/v1/verdicts", {"action": "block", "src_ip": IP[H1], "duration": 30})
    assert status == 201
    assert gateway.send_packet(H1, dst_port=H2) == []
    status, listing = request(port, "GET", "/v1/blocks")
    assert status == 200 and [b["block_id"] for b in listing["blocks"]] == [doc["block"]["block_id"]]
    assert listing["blocks"][0]["remaining_seconds"] == 30
    status, _ = request(port, "POST", "/v1/verdicts", {"action": "unblock", "src_ip": IP[H1]})
    assert status == 200
    assert gateway.send_packet(H1, dst_port=H2) == [H2, MON]
    assert request(port, "GET", "/v1/health")[1]["switches"] == ["0000000000000001"]


@pytest.mark.parametrize("token", [None, "", "wrong", TOKEN + "x"])
def test_bad_or_missing_token_is_refused_and_changes_nothing(api, token):
    gateway, port = api
    before = state(gateway)
    status, doc = request(port, "POST", "/v1/verdicts", {"action": "block", "src_ip": IP[H1]}, token=token)
    assert status == 401 and "token" in doc["error"]["message"]
    assert request(port, "GET", "/v1/blocks", token=token)[0] == 401
    assert state(gateway) == before


@pytest.mark.parametrize("body, status, field", [
    ({"action": "block", "src_ip": IP[H1], "ttl": 3}, 400, "ttl"),
    ({"action": "block", "src_ip": "10.0.0.999"}, 400, "src_ip"),
    ({"action": "block", "src_ip": "10.0.0.253"}, 403, "src_ip"),
    (b"{not json", 400, None),
])
def test_invalid_verdicts_get_4xx_json_and_change_nothing(api, body, status, field):
    gateway, port = api
    before = state(gateway)
    got, doc = request(port, "POST", "/v1/verdicts", body)
    assert got == status
    assert doc["error"].get("field") == field
    assert state(gateway) == before


def test_oversized_body_is_413(api):
    gateway, port = api
    body = json.dumps({"action": "block", "src_ip": IP[H1], "reason": "x" * MAX_BODY}).encode()
    assert request(port, "POST", "/v1/verdicts", body)[0] == 413
    assert gateway.core.blocks() == []


def test_wrong_content_type_unknown_route_and_method(api):
    _, port = api
    assert request(port, "POST", "/v1/verdicts", b"action=block", ctype="application/x-www-form-urlencoded")[0] == 415
    assert request(port, "GET", "/v1/nothing")[0] == 404
    assert request(port, "DELETE", "/v1/blocks")[0] == 405
    assert request(port, "GET", "/v1/verdicts")[0] == 405
    status, doc = request(port, "TRACE", "/v1/blocks")   # not the base class's HTML 501
    assert status == 405 and doc["error"]["status"] == 405


def test_server_refuses_to_start_without_token(gateway):
    with pytest.raises(ValueError, match="token"):
        VerdictServer(("127.0.0.1", 0), gateway.core, "")


def test_the_client_keeps_one_connection_and_survives_its_loss(api):
    """The monitor's client reuses one kept-alive connection for its verdicts; when that connection
    is gone (the server closes idle ones), the next call is made on a new one, once."""
    import socket

    from iadm.sdn.client import ApiError, VerdictClient
    gateway, port = api
    client = VerdictClient(f"http://127.0.0.1:{port}", TOKEN)
    client.health()
    sock = client._conn.sock
    for i in range(20):
        client.verdict(action="block", src_ip=f"10.0.1.{i + 1}", duration=30)
    assert client._conn.sock is sock and len(gateway.core.blocks()) == 20
    sock.shutdown(socket.SHUT_RDWR)                 # the connection dies under the client
    assert client.health()["switches"] is not None and client._conn.sock is not sock
    with pytest.raises(ApiError) as err:
        client.verdict(action="block", src_ip="10.0.0.253")    # allowlisted: a 403 with the server's words
    assert err.value.status == 403 and "allowlisted" in str(err.value)
    client.close()
    dead = VerdictClient("http://127.0.0.1:9", TOKEN, timeout=0.5)
    with pytest.raises(OSError):
        dead.health()


def test_digits_of_other_scripts_are_not_numbers():
    from iadm.httpjson import plain_digits
    assert plain_digits("42") and not plain_digits("¹") and not plain_digits("٣") and not plain_digits("")
    assert not plain_digits(None) and not plain_digits("-1") and not plain_digits("1.0")
