"""The playground page in a real headless Chromium (Debian's chromium, driven through its chromedriver): a key, a
job submitted and seen to succeed, its image in the gallery, an edit uploaded through presigned POSTs, and a field
error shown next to its field. Screenshots are kept under build/artifacts/."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from darkroom.api.playground import page
from darkroom_local.stack import LocalStack
from tests.e2e.served import served_stack

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# Chromium on a machine with no network of its own: no background services, no first-run, no GPU.
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
)


@pytest.fixture(scope="module")
def running() -> Iterator[LocalStack]:
    with served_stack() as stack:
        yield stack


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists(), "make test installs chromium and chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def screenshot(driver: WebDriver, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / name))


def test_submit_a_job_see_it_succeed_and_in_the_gallery(running: LocalStack, browser: WebDriver) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as when
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    wait: WebDriverWait[WebDriver] = WebDriverWait(driver, 30)
    find = driver.find_element
    driver.get(f"{running.api_url}/")
    # Given the dev tenant's key
    find(By.ID, "api-key").send_keys(running.api_keys["dev"])
    find(By.ID, "use-key").click()
    wait.until(lambda _: find(By.ID, "connected").text == "connected")
    # The choices come from the model table: gpt-image-2 offers no transparent background, gpt-image-1.5 does
    assert "transparent" not in [o.text for o in Select(find(By.ID, "g-background")).options]
    Select(find(By.ID, "g-model")).select_by_value("gpt-image-1.5")
    assert "transparent" in [o.text for o in Select(find(By.ID, "g-background")).options]
    assert "custom" not in [o.text for o in Select(find(By.ID, "g-size")).options]
    Select(find(By.ID, "g-model")).select_by_value("gpt-image-2")
    # When a prompt is submitted
    find(By.ID, "g-prompt").send_keys("a lighthouse at dusk, seen from the sea")
    Select(find(By.ID, "g-size")).select_by_value("1536x1024")
    Select(find(By.ID, "g-quality")).select_by_value("low")
    find(By.ID, "generate").click()
    # Then the job's state is shown live until it succeeds, with its image loaded
    wait.until(when.text_to_be_present_in_element((By.ID, "job-state"), "succeeded"))
    job_id = find(By.ID, "job-id").text
    image = wait.until(when.presence_of_element_located((By.CSS_SELECTOR, f'#job-images img[data-job="{job_id}"]')))
    wait.until(lambda _: driver.execute_script("return arguments[0].naturalWidth", image) == 1536)
    # ... and the gallery shows it, its picture loaded
    card = wait.until(when.presence_of_element_located((By.CSS_SELECTOR, f'#gallery .card[data-job="{job_id}"] img')))
    wait.until(lambda _: driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", card) > 0)
    screenshot(driver, "playground.png")


def test_an_edit_uploads_through_presigned_posts(running: LocalStack, browser: WebDriver, tmp_path: Path) -> None:
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as when
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    wait: WebDriverWait[WebDriver] = WebDriverWait(driver, 30)
    find = driver.find_element
    photo = tmp_path / "photo.png"
    Image.new("RGB", (320, 240), (20, 90, 200)).save(photo)
    shown_before = find(By.ID, "job-id").text
    find(By.ID, "e-image").send_keys(str(photo))
    find(By.ID, "e-prompt").send_keys("make it a watercolour")
    find(By.ID, "edit").click()
    wait.until(lambda _: find(By.ID, "job-id").text not in ("", shown_before))
    job_id = find(By.ID, "job-id").text
    wait.until(lambda _: find(By.ID, "job-state").text in ("succeeded", "failed", "canceled"))
    assert find(By.ID, "job-state").text == "succeeded", find(By.ID, "job-error").text
    image = wait.until(when.presence_of_element_located((By.CSS_SELECTOR, f'#job-images img[data-job="{job_id}"]')))
    wait.until(lambda _: driver.execute_script("return arguments[0].naturalWidth", image) == 320)


def test_previews_show_while_the_job_renders(running: LocalStack, browser: WebDriver) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    wait: WebDriverWait[WebDriver] = WebDriverWait(driver, 30)
    find = driver.find_element
    # Given a provider that takes 4.5 s (inside the stack's 5 s provider timeout), streaming a preview every 1.5 s:
    # the second is shown for 1.5 s before the image, and the page looks every second at most
    assert running.emulator is not None
    running.emulator.config.latency_ms = 4500
    try:
        shown_before = find(By.ID, "job-id").text
        prompt = find(By.ID, "g-prompt")
        prompt.clear()
        prompt.send_keys("a harbour in fog")
        Select(find(By.ID, "g-size")).select_by_value("1024x1024")
        Select(find(By.ID, "g-previews")).select_by_value("2")
        find(By.ID, "generate").click()
        wait.until(lambda _: find(By.ID, "job-id").text not in ("", shown_before))
        # Then the second preview is shown, loaded, while the job still runs
        previews = 'return [...document.querySelectorAll("#job-images img.preview")].filter(i => i.naturalWidth).length'
        wait.until(lambda _: driver.execute_script(previews) == 2 and find(By.ID, "job-state").text == "running")
        screenshot(driver, "playground-previews.png")
        # and the image itself replaces them once the job succeeds
        wait.until(lambda _: find(By.ID, "job-state").text == "succeeded")
        wait.until(lambda _: not driver.find_elements(By.CSS_SELECTOR, "#job-images img.preview"))
        assert driver.find_elements(By.CSS_SELECTOR, "#job-images img")
    finally:
        running.emulator.config.latency_ms = 0
        Select(find(By.ID, "g-previews")).select_by_value("0")


def test_an_api_error_appears_next_to_its_field(running: LocalStack, browser: WebDriver) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as when
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    wait: WebDriverWait[WebDriver] = WebDriverWait(driver, 30)
    find = driver.find_element
    # A custom size the model table allows in form but the API refuses: not a multiple of 16
    Select(find(By.ID, "g-size")).select_by_value("custom")
    find(By.ID, "g-custom-size").send_keys("1000x1000")
    find(By.ID, "generate").click()
    slot = '#generate-form [data-error-for="size"]'
    wait.until(when.text_to_be_present_in_element((By.CSS_SELECTOR, slot), "multiples of 16"))
    assert find(By.ID, "g-size").get_attribute("aria-invalid") == "true"
    assert find(By.CSS_SELECTOR, '#generate-form [data-error-for="_"]').text == ""
    screenshot(driver, "playground-field-error.png")


class _RateLimitedModels(BaseHTTPRequestHandler):
    """The page, and a /v1/models that answers 429: a key check failing for another reason than the key."""

    def do_GET(self) -> None:
        if self.path == "/":
            answer = page()
            body, status, headers = str(answer.body).encode(), answer.status, answer.headers
        else:
            error = {"code": "rate_limited", "message": "Slow down.", "type": "rate_limit_error", "param": None}
            body, status, headers = json.dumps({"error": error}).encode(), 429, {"content-type": "application/json"}
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


def test_a_key_check_failing_otherwise_than_401_shows_by_the_key(browser: WebDriver) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server = ThreadingHTTPServer(("127.0.0.1", 0), _RateLimitedModels)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        browser.get(f"http://127.0.0.1:{server.server_address[1]}/")
        browser.find_element(By.ID, "api-key").send_keys("dr_anything")
        browser.find_element(By.ID, "use-key").click()
        shown = WebDriverWait(browser, 10).until(
            lambda driver: driver.find_element(By.CSS_SELECTOR, "#key-form .error").text
        )
        assert "Slow down." in shown
    finally:
        server.shutdown()
        server.server_close()
