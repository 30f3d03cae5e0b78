"""The demo page end to end in real headless Chromium (Debian's), driven by Playwright.

Against a real ``ebjr serve`` of the quickstart bundle: drawing and uploading a digit
show the prediction, who answered, the score against the threshold and the latency;
the slider moves the live threshold (with the token); the teacher share and the
curve's operating point update.
"""

import io
import os
import shutil

import httpx
import numpy as np
import pytest

import ebjr
from serve_support import ServerProcess

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TOKEN = "demo-token"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

if not os.path.exists(CHROMIUM):
    if os.environ.get("EBJR_REQUIRE_BROWSER"):
        raise RuntimeError(f"EBJR_REQUIRE_BROWSER is set but {CHROMIUM} does not exist")
    pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run does)",
                allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def server(quickstart_bundle):
    with ServerProcess(quickstart_bundle, "--admin-token", TOKEN, "--model-name",
                       "quickstart", "--shadow-rate", "0.5", "--guarantee-eps", "0.05") as srv:
        yield srv


@pytest.fixture
def page(server):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        pg = browser.new_page(viewport={"width": 1100, "height": 900})
        errors = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(f"{server.url}/")
        yield pg
        browser.close()
        assert not errors, errors  # no JavaScript errors on the page


def _digit_png(image: np.ndarray) -> bytes:
    """An 8x8 digit (ink in [0, 1]) as a 96x96 PNG, dark ink on white, like a scan."""
    from PIL import Image

    grey = (255 * (1 - image)).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(grey).resize((96, 96), Image.NEAREST).save(buf, format="PNG")
    return buf.getvalue()


def test_draw_shows_the_routing_decision(page):
    sync_api.expect(page.locator("#model-name")).to_have_text("quickstart")
    box = page.locator("#pad").bounding_box()
    x = box["x"] + box["width"] / 2
    page.mouse.move(x, box["y"] + 30)
    page.mouse.down()
    page.mouse.move(x, box["y"] + box["height"] - 30, steps=12)  # a vertical stroke: a "1"
    page.mouse.up()
    sync_api.expect(page.locator("#prediction")).not_to_have_text("–")
    who = page.locator("#answered-by").inner_text()
    assert who.split()[0] in ("student", "teacher")
    score = float(page.locator("#score").inner_text())
    used = float(page.locator("#threshold-used").inner_text())
    decision = page.locator("#decision").inner_text()
    assert (score >= used) == ("student is fit" in decision) == who.startswith("student")
    assert page.locator("#latency").inner_text().endswith("ms (server)")
    sync_api.expect(page.locator("#teacher-share")).to_contain_text("%")
    sync_api.expect(page.locator("#op-point")).to_contain_text("to the teacher")
    sync_api.expect(page.locator("#guarantee")).to_contain_text("eps 5.00 %")


def test_upload_predicts_the_digit_and_the_slider_moves_the_threshold(page, server,
                                                                       quickstart_bundle,
                                                                       tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    images, labels = digits.images / 16.0, digits.target
    joint = ebjr.load(quickstart_bundle)
    pred = joint.predict(images[:50].astype(np.float32)).predictions.numpy()
    i = int(np.flatnonzero(pred == labels[:50])[3])  # a digit the joint model gets right
    png = tmp_path / "digit.png"
    png.write_bytes(_digit_png(images[i]))
    page.locator("#upload").set_input_files(str(png))
    sync_api.expect(page.locator("#prediction")).to_have_text(str(labels[i]))

    # the slider without the token is refused, with it the live threshold moves
    slider = page.locator("#slider")
    slider.fill("1000")  # the top of the curve: (almost) everything to the teacher
    sync_api.expect(page.locator("#knob-status")).to_contain_text("admin token")
    page.locator("#token").fill(TOKEN)
    page.locator("#token").dispatch_event("change")
    slider.fill("999")
    sync_api.expect(page.locator("#knob-status")).to_contain_text("threshold set to")
    live = httpx.get(f"{server.url}/v2/models/quickstart/threshold").json()["threshold"]
    curve = httpx.get(f"{server.url}/v2/models/quickstart/curve").json()["curve"]
    finite = [t for t in curve["threshold"] if abs(t) < 1e300]
    lo, hi = min(finite), max(finite)
    assert live == pytest.approx(lo + (hi - lo) * 0.999, rel=1e-6, abs=1e-9)
    page.locator("#predict").click()
    sync_api.expect(page.locator("#answered-by")).to_contain_text("teacher")
    sync_api.expect(page.locator("#threshold-used")).to_have_text(f"{live:.3f}")
    # the operating point follows: at this threshold most of the traffic goes to the teacher
    sync_api.expect(page.locator("#op-point")).to_contain_text("to the teacher")
    share = float(page.locator("#op-point").inner_text().split(": ")[1].split(" %")[0])
    assert share > 90
    page.screenshot(path=str(tmp_path / "demo.png"))
    # and back to the calibrated value, for the other tests
    httpx.put(f"{server.url}/v2/models/quickstart/threshold",
              json={"threshold": joint.threshold},
              headers={"Authorization": f"Bearer {TOKEN}"}).raise_for_status()
