"""A real headless browser (Debian's Chromium through Selenium) on the live page during a paced run: the values
change, an open wire injected through the page (arm, then confirm) is a confirmed DTC on the page and in
the audit log. A screenshot is kept (``BMS_EMU_ARTIFACTS``, default: the test's temporary folder)."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from live_support import LiveRun, audit_lines

pytest.importorskip("bokeh", reason="the live view needs the live extra (bokeh)")
webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium (test extra)")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="Chromium and chromedriver are not installed "
                                "(apt-get install chromium chromium-driver; .ci/run installs them)")

# the page's Bokeh document, its models by name, and the DOM element inside a model's view (shadow DOM)
_JS = """
const doc = (window.Bokeh && Bokeh.documents.length) ? Bokeh.documents[0] : null;
if (!doc) return null;
const model = doc.get_model_by_name(arguments[0]);
if (!model) return null;
if (arguments[1] === 'text') return model.text;
if (arguments[1] === 'data') return model.data[arguments[2]];
const view = Bokeh.index.find_one(model);
if (!view) return null;
return view.shadow_el.querySelector(arguments[1]);
"""


@pytest.fixture
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,1900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    config = getattr(driver.command_executor, "client_config", None) or getattr(driver.command_executor,
                                                                                "_client_config", None)
    if config is not None:   # a loaded machine answers slowly: the driver's own HTTP timeout (120 s) is too short
        config.timeout = 900
    driver.set_page_load_timeout(600)
    driver.set_script_timeout(120)
    yield driver
    driver.quit()


def _shown_t_s(driver) -> float | None:
    text = driver.execute_script(_JS, "status", "text") or ""
    match = re.search(r"t = <span id='t_s'>([0-9.]+)</span>", text)
    return float(match.group(1)) if match else None


def test_live_page_updates_and_injects_an_open_wire(tmp_path, browser):
    artefacts = Path(os.environ.get("BMS_EMU_ARTIFACTS", tmp_path))
    artefacts.mkdir(parents=True, exist_ok=True)
    # a loaded machine takes its time between the two clicks: the arming lasts long enough here
    with LiveRun(tmp_path, mode="paced", max_rate_hz=25.0, arm_timeout_s=3600.0) as run:
        browser.get(f"{run.url}?token={run.live.control.token}")
        first = run.wait_until(lambda: _shown_t_s(browser), "the page shows a simulated time", 600.0)
        run.wait_until(lambda: (_shown_t_s(browser) or 0.0) > first, "the page's values change", 600.0)
        # the open wire of group 17 is the prefilled example: arm, then confirm
        assert "open_wire" in browser.execute_script(_JS, "fault_options", "input").get_attribute("value")
        browser.execute_script(_JS, "arm", "button").click()
        run.wait_until(lambda: "ARMED" in (browser.execute_script(_JS, "control_status", "text") or ""),
                       "the injection armed", 600.0)
        assert not run.live.control.active     # armed is not injected
        browser.execute_script(_JS, "confirm", "button").click()
        run.wait_until(lambda: "applied" in (browser.execute_script(_JS, "control_status", "text") or ""),
                       "the page says the injection was applied", 600.0)

        def confirmed_on_page():
            names = browser.execute_script(_JS, "dtcs", "data", "name") or []
            bits = browser.execute_script(_JS, "dtcs", "data", "bits") or []
            return any(n == "CELL_VOLTAGE_SENSOR" and "confirmed" in b for n, b in zip(names, bits))
        run.wait_until(confirmed_on_page, "a confirmed CELL_VOLTAGE_SENSOR DTC on the page", 600.0)
        events = browser.execute_script(_JS, "events", "data", "name") or []
        assert any(e.startswith("bench:inject:bench") for e in events)
        browser.save_screenshot(str(artefacts / "live-page.png"))
    applied = [e for e in audit_lines(run.out / "bench-audit.jsonl") if e["result"] == "applied"]
    assert len(applied) == 1 and applied[0]["source"] == "page"
    assert applied[0]["fault"]["fault"] == "open_wire" and applied[0]["fault"]["index"] == 17
    assert (artefacts / "live-page.png").stat().st_size > 10_000
    assert any(f["event"] == "fault:CELL_VOLTAGE_SENSOR:ERROR" for f in run.result.summary["faults"])
