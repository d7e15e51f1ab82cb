"""The page in a real browser: headless Chromium from Debian's packages (``chromium``,
``chromium-driver``; ``.ci/run`` installs them when missing) driven by Selenium, against a real
``nst-jax serve`` process on 127.0.0.1. It uploads two pictures, starts a job, sees the preview
change at least twice, downloads the result and compares it with the API's image.

``NST_JAX_SCREENSHOT=PATH`` also saves a screenshot of the page there (README's picture; with
``NST_JAX_SCREENSHOT_WEIGHTS=FILE``, converted real weights instead of the synthetic ones)."""

from __future__ import annotations

import os
import pathlib
import shutil
import time

import httpx
import pytest

from serve_support import make_inputs, server, wait

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    (CHROMIUM is None or DRIVER is None) and not os.environ.get("CI"),
    reason="Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver); "
           "CI installs them and never skips this test")


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1100,1000",
                "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(tmp_path / "downloads"),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_page_paints_previews_and_downloads_the_result(browser, tmp_path):
    from selenium.webdriver.common.by import By

    inputs = make_inputs(tmp_path / "inputs")
    real = os.environ.get("NST_JAX_SCREENSHOT_WEIGHTS")
    if real:
        shutil.copy(real, inputs / "syn.h5")
    with httpx.Client() as h, server(inputs, tmp_path / "data", h) as s:
        browser.get(s.url + "/")
        wait(lambda: browser.find_element(By.ID, "health").text.startswith("ready"), 60, "the page's health line")
        assets = pathlib.Path(__file__).resolve().parent.parent / "nst_jax" / "assets"  # real pictures
        browser.find_element(By.ID, "content").send_keys(str(assets / "content.png"))
        browser.find_element(By.ID, "style").send_keys(str(assets / "style.png"))
        for name, value in (("size", "96"), ("iterations", "60"), ("chunk-size", "2")):
            field = browser.find_element(By.ID, name)
            field.clear()
            field.send_keys(value)
        browser.find_element(By.ID, "start").click()
        previews: list[str] = []

        def preview_changed_twice() -> bool:
            img = browser.find_element(By.ID, "preview")
            src = img.get_attribute("src") or ""
            loaded = browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img)
            if src and loaded and src not in previews:
                previews.append(src)
            error = browser.find_element(By.ID, "error").text
            assert not error, error
            return len(previews) >= 3  # the first preview, then two changes

        wait(preview_changed_twice, 180, "the preview to change twice", step=0.05)
        link = browser.find_element(By.ID, "download")
        wait(lambda: link.is_displayed(), 180, "the download link")
        job_id = link.get_attribute("href").rstrip("/").split("/")[-2]
        if os.environ.get("NST_JAX_SCREENSHOT"):
            time.sleep(2.5)  # the queue table refreshes every 2 s
            browser.save_screenshot(os.environ["NST_JAX_SCREENSHOT"])
        link.click()
        downloads = tmp_path / "downloads"
        got = wait(lambda: [p for p in downloads.glob("*.png")] if downloads.exists() else None, 60, "the download")
        api = h.get(f"{s.url}/jobs/{job_id}/image")
        job = h.get(f"{s.url}/jobs/{job_id}").json()
    assert job["status"] == "done" and job["iteration"] == 60
    assert api.status_code == 200 and pathlib.Path(got[0]).read_bytes() == api.content
    # the curve was drawn: the canvas holds more than its background
    assert len(previews) >= 3
