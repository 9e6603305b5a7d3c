"""The Gradio demo in a real browser: the app runs as `python -m galip_diffusers demo` on 127.0.0.1 (a free port) with
a tiny pipeline folder, and headless Chromium (Playwright, driving the system's chromium) uses it like a person would.
Screenshots go to results/browser/.

gradio and playwright come with `pip install -e ".[dev]"`. The one test skipped on purpose in the suite: this one, on a
machine without a Chromium binary (`apt-get install -y chromium`; Playwright drives it, so no `playwright install`
download is needed). Set GALIP_CHROMIUM to use another Chromium binary.
"""

import io
import os
import shutil
import subprocess
import sys
import time
import urllib.request

import PIL.Image
import pytest
from helpers.network import free_port

from galip_diffusers.testing_utils import tiny_pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCREENSHOTS = os.path.join(ROOT, "results", "browser")
CHROMIUM = os.environ.get("GALIP_CHROMIUM") or next(
    (path for path in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if path), None
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary on this machine (apt-get install -y chromium, or "
                       "set GALIP_CHROMIUM)"),
]
TIMEOUT_MS = 30_000


def _wait_until_up(url: str, process: subprocess.Popen, log_path: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the demo exited with code {process.returncode}:\n{open(log_path).read()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.25)
    raise TimeoutError(f"the demo did not answer on {url} within {timeout_s} s:\n{open(log_path).read()[-3000:]}")


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser") / "tiny-galip"
    tiny_pipeline().save_pretrained(folder)
    port = free_port()
    log_path = str(folder.parent / "demo.log")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "PYTHONPATH": os.pathsep.join(filter(None, [os.path.join(ROOT, "src"), os.environ.get("PYTHONPATH")])),
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "galip_diffusers", "demo", "--model", str(folder), "--host", "127.0.0.1",
             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_up(url, process, log_path)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, demo_url):
    page = browser.new_page(viewport={"width": 1280, "height": 1200})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(demo_url)
    page.wait_for_selector("#generate")
    yield page
    page.close()


def _screenshot(page, name: str) -> None:
    os.makedirs(SCREENSHOTS, exist_ok=True)
    page.screenshot(path=os.path.join(SCREENSHOTS, name), full_page=True)


def test_generate_fills_the_gallery_with_the_requested_number_of_images(page):
    from playwright.sync_api import expect

    expect(page.locator("#refine input[type=checkbox]")).to_be_disabled()  # the tiny model has no scorer
    expect(page.locator("#refine")).to_contain_text("has none")
    page.fill("#prompt textarea", "a small green triangle on a gray background")
    page.fill("#num-images input[type=number]", "6")
    page.locator("#num-images input[type=number]").blur()
    page.click("#generate")
    expect(page.locator("#status")).to_contain_text("6 image(s) of 32x32 px in", timeout=TIMEOUT_MS)
    expect(page.locator("#gallery img")).to_have_count(6)
    expect(page.locator("#status")).to_contain_text("ms per image")  # the speed of the request is shown
    for image in page.locator("#gallery img").all():  # every picture really loaded
        expect(image).to_have_js_property("complete", True)
        assert image.evaluate("img => img.naturalWidth") == 256
    _screenshot(page, "demo-generate.png")

    # Bad input is a message on the page (status and a warning toast), not a stack trace; the gallery stays.
    page.fill("#prompt textarea", "   ")
    page.click("#generate")
    expect(page.locator("#status")).to_contain_text("Not run: Enter a prompt: it is empty.")
    expect(page.get_by_test_id("toast-body").filter(has_text="Enter a prompt")).to_be_visible()
    expect(page.locator("#gallery img")).to_have_count(6)
    assert "Traceback" not in page.content()
    page.wait_for_timeout(500)  # let the toast finish sliding in before the screenshot
    _screenshot(page, "demo-bad-input.png")

    # A prompt over 77 tokens is cut, with a warning; at most 16 images per request (the widget stops there).
    page.fill("#prompt textarea", "a large red circle on a white background " * 8)
    page.click("#generate")
    expect(page.locator("#status")).to_contain_text("⚠️ The prompt has 266 tokens; the model reads at most 77")
    assert page.locator("#num-images input[type=number]").get_attribute("max") == "16"


def test_interpolation_shows_a_strip_and_serves_a_gif(page):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Interpolate").click()
    page.fill("#prompt-a textarea", "a large red circle on a white background")
    page.fill("#prompt-b textarea", "a small blue square on a black background")
    page.fill("#frames input[type=number]", "5")
    page.locator("#frames input[type=number]").blur()
    page.click("#interpolate")
    expect(page.locator("#interp-status")).to_contain_text("5 frames of 32x32 px in", timeout=TIMEOUT_MS)
    strip = page.locator("#strip img")
    expect(strip).to_have_js_property("complete", True)
    assert strip.evaluate("img => img.naturalWidth") == 5 * 96 + 4 * 2
    link = page.locator("#gif a[href*='.gif']").first
    expect(link).to_be_visible()
    response = page.request.get(link.get_attribute("href"))
    assert response.ok
    with PIL.Image.open(io.BytesIO(response.body())) as gif:
        assert gif.format == "GIF" and gif.n_frames == 2 * 5 - 2  # forward and back
    _screenshot(page, "demo-interpolate.png")
