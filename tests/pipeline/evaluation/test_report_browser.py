"""report.html in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`, which
`make install` adds when run as root) driven by Selenium. Skipped, saying why, where they are missing."""
import json
import os
import shutil

import pytest

from pipeline.evaluation.report import CAPTION_PT, DPI

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# what the page shows where it is not drawn: every image, its box, and where it sits
_IMAGES_JS = """return [...document.images].map(i => ({alt: i.alt, complete: i.complete, natural: i.naturalWidth,
    shown: i.getBoundingClientRect().width, top: i.getBoundingClientRect().top + window.scrollY}))"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the test extra")
    from selenium.webdriver.chrome.service import Service

    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.skip(f"{', '.join(missing)} missing: apt-get install chromium chromium-driver (make install as root)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}", "--window-size=1200,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.mark.e2e  # an evaluation, the figures and starting Chromium take several seconds
def test_report_html_loads_every_image_and_leads_with_the_verdict_in_chromium(browser, tmp_path, real, real_source,
                                                                             fast, write_output):
    import numpy as np
    from selenium.webdriver.common.by import By

    from pipeline.evaluation.evaluate import evaluate

    latents = np.random.default_rng(0).standard_normal((300, 5)).astype(np.float32)
    out = write_output(tmp_path / "data" / "out", real.test.images[:300], real.test.labels[:300], latents=latents)
    report_dir = tmp_path / "reports" / "r1"
    r = evaluate(out, real_source, None, str(report_dir), fast)
    saved = json.loads((report_dir / "report.json").read_text())
    assert saved["verdict"] == r["verdict"] and saved["verdict"]["status"] in ("pass", "fail")
    # the page is opened from a copy elsewhere: it needs nothing beside it
    page = tmp_path / "alone" / "report.html"
    page.parent.mkdir()
    shutil.copy(report_dir / "report.html", page)
    browser.get(page.as_uri())

    images = browser.execute_script(_IMAGES_JS)
    assert len(images) == len(r["figures"]) == 5
    assert all(i["complete"] and i["natural"] > 0 for i in images), images
    verdict = browser.find_element(By.ID, "verdict")
    assert verdict.find_element(By.CLASS_NAME, "badge").text == saved["verdict"]["status"].upper()
    assert verdict.find_elements(By.CSS_SELECTOR, "tr")[1:] and "label fidelity" in verdict.text
    # the verdict is on top, then the sample grid, then the details
    assert verdict.rect["y"] + verdict.rect["height"] < images[0]["top"]
    assert images[0]["alt"] == "samples per class"
    # every table-of-contents entry leads to its section
    links = browser.find_elements(By.CSS_SELECTOR, "nav a")
    assert links and all(browser.find_elements(By.ID, a.get_attribute("hash")[1:]) for a in links)
    # captions drawn into the pictures stay at least 11 px as shown
    captioned = [i for i in images if i["alt"] in ("lowest-fidelity examples per class",
                                                   "closest synthetic/real pairs")]
    assert len(captioned) == 2 and all(CAPTION_PT * DPI / 72 * i["shown"] / i["natural"] >= 11 for i in captioned)
    # names, not local paths: the bundled classifier by name, the data relative to the report
    shown = browser.find_element(By.ID, "summary").find_element(By.XPATH, "following-sibling::table").text
    assert "reference classifier bundled" in shown and str(tmp_path) not in browser.title
    assert browser.find_element(By.TAG_NAME, "h1").text == "Evaluation of " + os.path.join("..", "..", "data", "out")
