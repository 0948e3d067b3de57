"""The share page in a real browser: Debian's chromium, headless, driven by selenium through chromium-driver.

A patient opens the link `pacsvault share create` printed, types the PIN,
sees the study listed and downloads it; the ZIP holds every instance byte
for byte as stored. The screenshots are kept in the test's tmp dir:
``<tmp_path>/share-page-pin.png`` (the PIN form) and
``<tmp_path>/share-page-studies.png`` (the list of studies).
"""

from __future__ import annotations

import shutil
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import Daemon, dicom_bytes, identity, run_cli

ROOT = "1.2.826.0.1.3680043.10.90"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    for program in (CHROMIUM, CHROMEDRIVER):
        if not Path(program).exists():
            pytest.fail(f"this test needs Debian's chromium and chromium-driver ({program} is missing; "
                        "`apt-get install chromium chromium-driver`, as .ci/run does)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1000,700",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER, log_output=str(tmp_path / "driver.log")))
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def stored_study(daemon: Daemon) -> dict[str, bytes]:
    """Study 1 (three CT instances) to share, and study 2 of the same patient, not shared."""
    stored: dict[str, bytes] = {}
    with daemon.client() as client:
        for n, count in ((1, 3), (2, 1)):
            for i in range(1, count + 1):
                ids = identity(n, ROOT)
                ids["SOPInstanceUID"] = f"{ids['SeriesInstanceUID']}.{i}"
                data = dicom_bytes("CT_small.dcm", PatientID="SHARE-1", StudyDate="20240517", Modality="CT",
                                   StudyDescription=f"CT chest {n}", **ids)
                assert client.store(data).status == "stored"
                if n == 1:
                    stored[ids["SOPInstanceUID"]] = data
    return stored


def wait_for_download(folder: Path, timeout: float = 60.0) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [p for p in folder.iterdir() if p.suffix == ".zip"]
        if done and not any(p.name.endswith(".crdownload") for p in folder.iterdir()):
            return done[0]
        time.sleep(0.1)
    raise AssertionError(f"no download finished in {timeout}s: {list(folder.iterdir())}")


def test_patient_opens_link_enters_pin_and_downloads_the_study(daemon: Daemon, browser: webdriver.Chrome,
                                                              tmp_path: Path) -> None:
    stored = stored_study(daemon)
    created = run_cli(daemon.target, "share", "create", "--study-uid", identity(1, ROOT)["StudyInstanceUID"],
                      "--pin", "2468")
    assert created.returncode == 0, created.stderr
    link = next(word for word in created.stdout.split() if word.startswith("http://"))
    assert link.startswith(f"http://127.0.0.1:{daemon.web_port}/share/pv_")

    browser.get(link)
    assert browser.title == "Shared images"
    assert browser.find_elements(By.CSS_SELECTOR, "table") == []  # nothing shown before the PIN
    browser.save_screenshot(str(tmp_path / "share-page-pin.png"))
    browser.find_element(By.ID, "pin").send_keys("1111")
    browser.find_element(By.ID, "open").click()
    problem = WebDriverWait(browser, 30).until(expected_conditions.presence_of_element_located((By.ID, "problem")))
    assert "not right" in problem.text
    browser.find_element(By.ID, "pin").send_keys("2468")
    browser.find_element(By.ID, "open").click()
    WebDriverWait(browser, 30).until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "table")))

    rows = browser.find_elements(By.CSS_SELECTOR, "table tr")[1:]
    assert [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")][:4] for row in rows] == \
        [["2024-05-17", "CT", "CT chest 1", "3"]]  # the other study of the patient is not shared
    browser.save_screenshot(str(tmp_path / "share-page-studies.png"))
    rows[0].find_element(By.CSS_SELECTOR, "button.download").click()

    archive = wait_for_download(tmp_path / "downloads")
    with zipfile.ZipFile(archive) as opened:
        assert opened.testzip() is None
        contents = {Path(name).stem: opened.read(name) for name in opened.namelist()}
    assert contents == stored  # every instance, byte for byte
    shutil.copy(archive, tmp_path / "downloaded-study.zip")
    assert (tmp_path / "share-page-studies.png").stat().st_size > 1000


def test_share_page_without_pin_lists_at_once_and_refuses_the_rest(daemon: Daemon,
                                                                   browser: webdriver.Chrome) -> None:
    stored_study(daemon)
    with daemon.client() as reader:
        grant = reader.create_share(patient_id="SHARE-1", ttl_seconds=600)
    browser.get(grant.link)
    WebDriverWait(browser, 30).until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "table")))
    descriptions = sorted(td.text for td in browser.find_elements(By.CSS_SELECTOR, "table tr td:nth-child(3)"))
    assert descriptions == ["CT chest 1", "CT chest 2"]  # a patient share: every study of that patient
    # Anything else is 404: unknown tokens, other paths, a revoked grant.
    base = f"http://127.0.0.1:{daemon.web_port}"
    for path in ("/share/pv_not-a-token", f"/share/{grant.token}/studies", "/share/", "/index.html"):
        assert requests.get(base + path, timeout=30).status_code == 404, path
    with daemon.client() as reader:
        reader.revoke_share(grant.share.share_id)
    assert requests.get(grant.link, timeout=30).status_code == 404
    assert requests.post(f"{grant.link}/download", data={"study": identity(1, ROOT)["StudyInstanceUID"]},
                         timeout=30).status_code == 404
