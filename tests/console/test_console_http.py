"""The console's security over plain HTTP, against the real monitor of conftest.py: no cookie is 401
(pages redirect to the login form), no CSRF token is 403, a wrong token logs nobody in, the CSP
allows no inline script."""
import http.client
import urllib.parse

from iadm.console.store import GroupFilter


def request(lab, method, path, body=None, headers=None):
    url = urllib.parse.urlsplit(lab["url"])
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
    hdrs = dict(headers or {})
    if body is not None:
        body = urllib.parse.urlencode(body)
        hdrs["Content-Type"] = "application/x-www-form-urlencoded"
    conn.request(method, path, body, hdrs)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp, data


def login(lab, token=None):
    resp, _ = request(lab, "POST", "/console/login", {"token": token or lab["token"], "name": "alice"})
    return resp


def test_a_page_without_a_session_goes_to_the_login_form_and_the_api_is_401(lab):
    resp, _ = request(lab, "GET", "/console/inbox")
    assert resp.status == 303 and resp.getheader("Location").startswith("/console/login")
    resp, _ = request(lab, "GET", "/console/api/version")
    assert resp.status == 401


def test_a_wrong_token_logs_nobody_in(lab):
    resp = login(lab, "wrong")
    assert resp.status == 401 and resp.getheader("Set-Cookie") is None


def test_the_session_cookie_is_httponly_samesite_strict_and_the_csp_has_no_inline_script(lab):
    resp = login(lab)
    assert resp.status == 303
    cookie = resp.getheader("Set-Cookie")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and lab["token"] not in cookie
    resp, body = request(lab, "GET", "/console/inbox", headers={"Cookie": cookie.split(";")[0]})
    assert resp.status == 200
    csp = resp.getheader("Content-Security-Policy")
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert b"<script>" not in body and b"<script src=\"/console/static/console.js\"" in body


def test_a_post_without_cookie_is_401_and_without_csrf_403_and_changes_nothing(lab):
    store = lab["monitor"].store
    group = store.groups(GroupFilter()).items[0]
    resp, _ = request(lab, "POST", f"/console/groups/{group['id']}/archive", {"csrf": "x"})
    assert resp.status == 401
    cookie = login(lab).getheader("Set-Cookie").split(";")[0]
    resp, _ = request(lab, "POST", f"/console/groups/{group['id']}/archive", {}, {"Cookie": cookie})
    assert resp.status == 403
    resp, _ = request(lab, "POST", f"/console/groups/{group['id']}/archive", {"csrf": "forged"}, {"Cookie": cookie})
    assert resp.status == 403
    assert store.group(group["id"])["state"] == group["state"]


def test_the_bearer_api_still_answers_beside_the_console(lab):
    resp, body = request(lab, "GET", "/status", headers={"Authorization": f"Bearer {lab['token']}"})
    assert resp.status == 200 and b"components" in body
