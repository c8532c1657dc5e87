"""The console in a real browser (Debian's headless Chromium driven by Playwright) against the real
monitor of conftest.py: log in (and be refused with a wrong token), the attacks in the inbox, a
detail view with every opinion, unblock (the verdict API no longer lists the block), "not an
attack" and its effects, the tolerance refused out of range, new alerts without a reload.
A screenshot of each page goes to run/console/."""
import json
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from iadm.alerts.log import eve_timestamp, read_events
from iadm.console.store import GroupFilter

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[2] / "run" / "console"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def page(lab):
    if not Path(CHROMIUM).exists():
        pytest.skip("no Debian chromium")
    SHOTS.mkdir(parents=True, exist_ok=True)
    profile = tempfile.mkdtemp(prefix="iadm-chromium-")
    with playwright.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=ARGS,
                                                       headless=True, viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.set_default_timeout(5000)
        page.on("dialog", lambda dialog: dialog.accept())
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.errors = errors
        yield page
        context.close()
    shutil.rmtree(profile, ignore_errors=True)


def shot(page, name):
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_login_is_refused_with_a_wrong_token_then_accepted(lab, page):
    page.goto(lab["url"] + "/console/inbox")
    assert "/console/login" in page.url
    page.fill("input[name=name]", "alice")
    page.fill("input[name=token]", "not-the-token")
    page.click("text=Log in")
    assert "Log in refused" in page.inner_text("main")
    shot(page, "login")
    page.fill("input[name=name]", "alice")
    page.fill("input[name=token]", lab["token"])
    page.click("button:has-text('Log in')")
    page.wait_for_url("**/console/inbox")
    assert page.locator("table.groups tbody tr[data-group]").count() >= 1


def test_the_attacks_are_in_the_inbox_and_a_detail_view_shows_every_opinion(lab, page):
    page.goto(lab["url"] + "/console/inbox")
    rows = page.locator("table.groups tbody tr.blocked")
    assert rows.count() >= 1
    assert "10.0.0.101" in rows.first.inner_text() and "mitigated" in rows.first.inner_text()
    shot(page, "inbox")
    rows.first.locator("a").first.click()
    page.wait_for_url("**/console/groups/*")
    text = page.inner_text("main")
    assert "Rule" in text and "sid " in text and "Model" in text and "Z-score" in text
    assert page.locator("table.features tr").count() > 1   # the flow record's features
    shot(page, "detail")


def test_unblock_removes_the_block_from_the_controller(lab, page):
    blocks = lab["client"].blocks()
    assert blocks, "the flood was blocked"
    block_id = blocks[0]["block_id"]
    page.goto(lab["url"] + "/console/mitigations")
    row = page.locator(f"table.active tr[data-block='{block_id}']")
    assert row.count() == 1
    shot(page, "mitigations")
    row.locator("button:has-text('Unblock')").click()
    page.wait_for_load_state()
    assert block_id not in [b["block_id"] for b in lab["client"].blocks()]
    assert page.locator(f"table.active tr[data-block='{block_id}']").count() == 0
    history = lab["monitor"].store.mitigations().items
    assert any(m["block_id"] == str(block_id) and m["ended_by"] == "alice" for m in history)


def test_not_an_attack_unblocks_teaches_the_baseline_and_is_logged(lab, page):
    monitor = lab["monitor"]
    store = monitor.store
    group = next(g for g in store.groups(GroupFilter()).items if g["signature_id"])
    page.goto(lab["url"] + f"/console/groups/{group['id']}")
    page.click("button:has-text('Not an attack')")
    page.wait_for_load_state()
    assert "not an attack (by alice" in page.inner_text("#group-state")
    shot(page, "feedback")
    after = store.group(group["id"])
    assert after["not_attack"]["who"] == "alice" and after["state"] == "archived"
    assert not [m for m in after["mitigations"] if m["ended_at"] is None]   # nothing of it still blocked
    baseline = monitor.labeller.detector.baseline
    assert any(k[0] == group["signature_id"] and k[1] == group["src_ip"] for k in baseline.entries)
    assert Path(baseline.path).exists()
    ops = [e for e in read_events(lab["config"].alert_log) if e.get("event_type") == "operator"]
    mine = [e for e in ops if e["operator"]["action"] == "not_attack"]
    assert mine and mine[-1]["operator"]["who"] == "alice" and mine[-1]["timestamp"]
    # the inbox no longer shows it; the store rebuilt from the log still knows the decision
    page.goto(lab["url"] + "/console/inbox")
    assert page.locator(f"tr[data-group='{group['id']}']").count() == 0
    from iadm.console.store import SQLiteAlertStore
    rebuilt = SQLiteAlertStore(str(lab["tmp"] / "rebuilt.sqlite"))
    rebuilt.rebuild(lab["config"].alert_log)
    again = [g for g in rebuilt.groups(GroupFilter(state="all")).items if g["signature"] == group["signature"]
             and g["src_ip"] == group["src_ip"] and g["dest_ip"] == group["dest_ip"]]
    assert again and again[0]["not_attack"]["who"] == "alice"
    rebuilt.close()


def test_the_tolerance_is_refused_out_of_range_and_changed_within(lab, page):
    zscore = lab["monitor"].labeller.detector.zscore
    before = zscore.tolerance
    page.goto(lab["url"] + "/console/detector")
    page.fill("#tolerance", "9")
    page.click("button:has-text('Save')")
    assert "Refused" in page.inner_text("main") and "tolerance" in page.inner_text(".error")
    assert zscore.tolerance == before
    shot(page, "detector")
    page.fill("#tolerance", "4.5")
    page.click("button:has-text('Save')")
    page.wait_for_url("**/console/detector")
    assert zscore.tolerance == 4.5 and page.inner_text("#tolerance-now") == "4.5"
    assert int(page.inner_text("#rule-count")) > 0


def test_devices_and_timeline(lab, page):
    page.goto(lab["url"] + "/console/devices")
    text = page.inner_text("table.devices")
    assert "00:00:00:00:00:65" in text and "10.0.0.101" in text
    shot(page, "devices")
    page.goto(lab["url"] + "/console/timeline")
    assert page.locator("svg.chart polyline").count() >= 1
    assert page.locator("svg.chart line[stroke='#d62728']").count() >= 1   # the mitigation marked
    shot(page, "timeline")


def test_a_new_alert_appears_in_the_inbox_without_a_reload_within_2_s(lab, page):
    page.goto(lab["url"] + "/console/inbox")
    page.evaluate("window.notReloaded = true")
    event = {"timestamp": eve_timestamp(time.time()), "event_type": "alert", "host": "gw-test",
             "src_ip": "10.0.0.77", "dest_ip": "10.0.0.2", "proto": "TCP",
             "alert": {"action": "allowed", "signature_id": 4242, "signature": "live test signature",
                       "category": "Reconnaissance"}, "verdict_source": "rule"}
    start = time.monotonic()
    lab["monitor"].alert_log.write(event)
    page.wait_for_selector("text=live test signature", timeout=2500)
    assert time.monotonic() - start < 2.0
    assert page.evaluate("window.notReloaded") is True
    assert not [e for e in page.errors if "Content Security Policy" in e], page.errors
    json.dumps(page.errors)
