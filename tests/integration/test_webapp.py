"""The web app in a real browser (Debian's Chromium driven by Selenium through Debian's
chromium-driver; tests/chromium_install.sh installs them) against a gateway on the local
engine: sign in (a wrong key refused), make images and see them appear, upload and edit,
run the social recipe for two topics and see 8 images grouped (and download them as one
ZIP), history showing only the key's jobs, a workflow's generated form, the Chinese
interface, a phone-sized screen; no Content-Security-Policy violation on any page.

Screenshots of each page go to ``$COMFYFN_SCREENSHOTS`` (default ``out/screenshots``).
The gateway's ``max_pixels`` is 64 × 64, so recipe sizes are brought down to it and
every image is tiny."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.gateway_proc import InProcess, auth, settings_for
from tests.support.polling import wait_for
from tests.support.tests_png import image_bytes

pytestmark = [pytest.mark.engine, pytest.mark.any_version]  # the page, not the ComfyUI version

ROOT = Path(__file__).resolve().parents[2]
SHOTS = Path(os.environ.get("COMFYFN_SCREENSHOTS") or ROOT / "out" / "screenshots")
CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
)
JOB_WAIT = 240.0  #: seconds for images made on the engine (a loaded 2-core machine)
PAGE_WAIT = 30.0


@pytest.fixture(scope="module")
def gateway(server, tmp_path_factory) -> Iterator[InProcess]:
    settings = settings_for(tmp_path_factory.mktemp("webapp"), [server], max_pixels=64 * 64)
    with InProcess(settings) as gateway:
        yield gateway


def _driver(downloads: Path, language: str = "en-US"):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
        pytest.fail("Chromium is missing: run tests/chromium_install.sh", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, "--window-size=1280,900", f"--lang={language}"):
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs",
        {"intl.accept_languages": language, "download.default_directory": str(downloads)},
    )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    return driver


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads) -> Iterator[object]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver = _driver(downloads)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(autouse=True)
def no_csp_violations(request):
    """Every test's pages load under the CSP without a violation (a blocked inline script,
    style or outside request is logged by the browser)."""
    drivers = [
        request.getfixturevalue(name)  # set up first, so torn down after this check
        for name in ("browser", "zh_browser")
        if name in request.fixturenames
    ]
    yield
    for driver in drivers:
        logged = [e["message"] for e in driver.get_log("browser")]
        assert not [m for m in logged if "Content Security Policy" in m], logged


def shot(driver, name: str, at: str | None = None) -> Path:
    """A screenshot of the page's top, or scrolled to the element ``at`` (a CSS selector)."""
    path = SHOTS / f"{name}.png"
    if at is None:
        driver.execute_script("window.scrollTo(0, 0)")
    else:
        driver.execute_script("arguments[0].scrollIntoView()", css(driver, at)[0])
    assert driver.save_screenshot(str(path)), path
    return path


def css(driver, selector: str):
    return driver.find_elements("css selector", selector)


def visible(driver, selector: str) -> bool:
    found = css(driver, selector)
    return bool(found) and found[0].is_displayed()


def signed_out(driver, gateway: InProcess) -> None:
    """The page, signed out (with the app's own button if an earlier test signed in)."""
    driver.get(f"{gateway.url}/")
    shown = wait_for(
        lambda: visible(driver, "#signin-key") or (visible(driver, "#sign-out") and "out"),
        PAGE_WAIT,
        "the page",
    )
    if shown == "out":
        driver.find_element("id", "sign-out").click()
        wait_for(lambda: visible(driver, "#signin-key"), PAGE_WAIT, "the sign-in form")
    assert session_status(driver) == 401


def session_status(driver) -> int:
    """What ``GET /ui/api/me`` answers the page (the cookie is not visible at ``/``)."""
    return int(driver.execute_script("return fetch('/ui/api/me').then(r => r.status)"))


def sign_in(driver, gateway: InProcess, secret: str) -> None:
    signed_out(driver, gateway)
    driver.find_element("id", "signin-key").send_keys(secret)
    driver.find_element("css selector", "#signin-form button[type=submit]").click()
    wait_for(lambda: visible(driver, "#make-prompt"), PAGE_WAIT, "the Make page after sign-in")
    wait_for(lambda: len(css(driver, "#make-preset option")) > 5, PAGE_WAIT, "the size presets")
    assert session_status(driver) == 200


def fill(driver, element_id: str, text: str) -> None:
    field = driver.find_element("id", element_id)
    field.clear()
    field.send_keys(text)


def cards_done(driver, selector: str, count: int) -> list:
    """The cards under ``selector`` once ``count`` of them succeeded; a failed one fails."""

    def check():
        cards = css(driver, f"{selector} .card")
        states = [c.get_attribute("data-state") for c in cards]
        assert "failed" not in states and "lost" not in states, [c.text for c in cards]
        return cards if states.count("succeeded") == count else None

    return wait_for(check, JOB_WAIT, f"{count} finished images in {selector}", interval=0.2)


def image_size(driver, card) -> tuple[int, int]:
    """The natural size of a card's image once it has loaded."""
    script = (
        "const i = arguments[0].querySelector('.frame img');"
        "return i.complete && i.src.startsWith('http') && [i.naturalWidth, i.naturalHeight];"
    )
    return tuple(wait_for(lambda: driver.execute_script(script, card), PAGE_WAIT, "an image"))


def unlabelled(driver) -> list[str]:
    """The visible controls without a label (for, wrapping, or aria-label)."""
    script = """return [...document.querySelectorAll('input, select, textarea, button')]
      .filter(e => e.offsetParent !== null || e.classList.contains('sr-only'))
      .filter(e => e.tagName === 'BUTTON' ? !e.textContent.trim()
                   : !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
      .map(e => e.outerHTML.slice(0, 80));"""
    return driver.execute_script(script)


def test_a_wrong_key_is_refused(browser, gateway):
    signed_out(browser, gateway)
    assert unlabelled(browser) == []
    browser.find_element("id", "signin-key").send_keys("sk-not-a-key")
    browser.find_element("id", "signin-key").submit()
    status = wait_for(lambda: browser.find_element("id", "status").text, PAGE_WAIT, "the refusal")
    assert "invalid API key" in status
    assert "error" in browser.find_element("id", "status").get_attribute("class")
    assert not visible(browser, "#tabs") and visible(browser, "#signin-key")
    assert session_status(browser) == 401
    shot(browser, "01-sign-in-refused")


def test_make_images_and_see_them_appear(browser, gateway):
    sign_in(browser, gateway, gateway.key("maker"))
    assert unlabelled(browser) == []
    fill(browser, "make-prompt", "一只橘猫在窗台上晒太阳 a cat in the sun")
    fill(browser, "make-width", "64")
    fill(browser, "make-height", "64")
    fill(browser, "make-seed", "1234")
    fill(browser, "make-count", "2")
    browser.find_element("css selector", "#make-form button[type=submit]").click()
    cards = cards_done(browser, "#make-gallery", 2)
    assert sorted(c.text.split("#")[1].split(" ")[0] for c in cards) == ["1234", "1235"]
    assert image_size(browser, cards[0]) == (64, 64)
    download = cards[0].find_element("css selector", "a[download]")
    assert download.get_attribute("download").endswith("_1235.png")
    assert httpx.get(download.get_attribute("href")).headers["content-type"] == "image/png"
    # "more like this": the same parameters with another seed
    cards[0].find_element("xpath", ".//button[text()='More like this']").click()
    cards = cards_done(browser, "#make-gallery", 3)
    seeds = {c.text.split("#")[1].split(" ")[0] for c in cards}
    assert len(seeds) == 3
    shot(browser, "02-make")


def test_a_preset_sets_the_size_within_the_gateways_limit(browser, gateway):
    sign_in(browser, gateway, gateway.key("presets"))
    options = {o.text: o.get_attribute("value") for o in css(browser, "#make-preset option")}
    for label in (
        "WeChat 1080×1080",
        "Weibo 1200×675",
        "Douyin 1080×1920",
        "Xiaohongshu 1242×1660",
        "E-commerce main 800×800",
        "Icon 512×512",
        "Design background 1920×1080",
    ):
        assert label in options, options
    select = browser.find_element("id", "make-preset")
    select.send_keys("Douyin")
    width = int(browser.find_element("id", "make-width").get_attribute("value"))
    height = int(browser.find_element("id", "make-height").get_attribute("value"))
    assert width * height <= 64 * 64 and height > width and width % 16 == 0


def test_upload_and_edit(browser, gateway, tmp_path):
    sign_in(browser, gateway, gateway.key("editor"))
    picture = tmp_path / "photo.png"
    picture.write_bytes(image_bytes((64, 48), "teal"))
    browser.get(f"{gateway.url}/#edit")
    wait_for(lambda: visible(browser, "#edit-prompt"), PAGE_WAIT, "the Edit page")
    assert unlabelled(browser) == []
    browser.find_element("id", "edit-file").send_keys(str(picture))
    wait_for(lambda: visible(browser, "#edit-preview"), PAGE_WAIT, "the uploaded image")
    fill(browser, "edit-prompt", "把背景换成海边 the sea behind")
    browser.find_element("css selector", "#edit-form button[type=submit]").click()
    cards = cards_done(browser, "#edit-gallery", 1)
    assert image_size(browser, cards[0]) == (64, 48)  # the image's size kept
    assert "zimage-edit" in cards[0].text
    shot(browser, "03-edit")


def test_edit_this_takes_a_result_to_the_edit_page(browser, gateway):
    secret = gateway.key("edit-this")
    sign_in(browser, gateway, secret)
    fill(browser, "make-prompt", "a red apple")
    fill(browser, "make-width", "48")
    fill(browser, "make-height", "32")
    browser.find_element("css selector", "#make-form button[type=submit]").click()
    card = cards_done(browser, "#make-gallery", 1)[0]
    card.find_element("xpath", ".//button[text()='Edit this']").click()
    wait_for(lambda: visible(browser, "#edit-preview"), PAGE_WAIT, "the result on Edit")
    alt = browser.find_element("id", "edit-preview").get_attribute("alt")
    assert "48 × 32" in alt


def test_the_social_recipe_for_two_topics_fills_a_grouped_sheet(browser, gateway, downloads):
    sign_in(browser, gateway, gateway.key("recipes"))
    browser.get(f"{gateway.url}/#recipes")
    wait_for(lambda: len(css(browser, "#recipe-name option")) >= 3, PAGE_WAIT, "the recipes")
    assert unlabelled(browser) == []
    browser.find_element("id", "recipe-name").send_keys("Social")
    assert browser.find_element("id", "recipe-name").get_attribute("value") == "social"
    fill(browser, "recipe-topics", "春天的咖啡馆\nautumn hiking")
    browser.find_element("css selector", "#recipe-form button[type=submit]").click()
    cards = cards_done(browser, "#recipe-sheet", 8)
    groups = css(browser, "#recipe-sheet .group")
    assert [g.get_attribute("data-topic") for g in groups] == ["春天的咖啡馆", "autumn hiking"]
    for group in groups:
        titles = [h.text for h in group.find_elements("css selector", "h4")]
        assert [t.split(" ")[0] for t in titles] == ["WeChat", "Weibo", "Douyin", "Xiaohongshu"]
        assert len(group.find_elements("css selector", ".card")) == 4
    tall = next(c for c in cards if "Douyin" in c.find_element("xpath", "..").text)
    width, height = image_size(browser, tall)
    assert height > width and width * height <= 64 * 64
    shot(browser, "04-recipes")
    shot(browser, "04-recipe-sheet", at="#recipe-sheet")
    for old in downloads.glob("*"):
        old.unlink()
    button = browser.find_element("id", "recipe-zip")
    wait_for(button.is_enabled, PAGE_WAIT, "the ZIP button")
    button.click()
    archive = wait_for(
        lambda: next(iter(downloads.glob("social.zip")), None), PAGE_WAIT, "social.zip"
    )
    with zipfile.ZipFile(archive) as z:
        assert z.testzip() is None
        names = sorted(z.namelist())
    assert len(names) == 8
    assert "春天的咖啡馆/wechat.png" in names and "autumn-hiking/douyin.png" in names


def _job(gateway: InProcess, secret: str, prompt: str) -> str:
    answer = httpx.post(
        f"{gateway.url}/v1/jobs",
        json={"workflow": "zimage-turbo", "params": {"prompt": prompt, "width": 32, "height": 32}},
        headers=auth(secret),
        timeout=30,
    )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def test_history_shows_only_the_keys_jobs(browser, gateway):
    mine, theirs = gateway.key("history"), gateway.key("someone-else")
    my_jobs = [_job(gateway, mine, f"history picture {n}") for n in range(2)]
    their_job = _job(gateway, theirs, "not yours")
    sign_in(browser, gateway, mine)
    browser.get(f"{gateway.url}/#history")

    def listed():
        ids = [c.get_attribute("data-job") for c in css(browser, "#history-list .card")]
        return ids if len(ids) == 2 else None

    assert wait_for(listed, PAGE_WAIT, "the history") == list(reversed(my_jobs))
    assert their_job not in browser.page_source
    assert unlabelled(browser) == []
    # the cards follow the jobs: the thumbnails appear once they are done
    cards_done(browser, "#history-list", 2)
    fill(browser, "history-text", "picture 1")
    browser.find_element("css selector", "#history-form button").click()
    wait_for(lambda: len(css(browser, "#history-list .card")) == 1, PAGE_WAIT, "the filter")
    shot(browser, "05-history")
    css(browser, "#history-list .card button")[-1].click()  # run again: back to Make, filled
    wait_for(lambda: visible(browser, "#make-prompt"), PAGE_WAIT, "Make after re-run")
    assert browser.find_element("id", "make-prompt").get_attribute("value") == "history picture 1"


def test_a_workflow_form_is_made_from_its_schema(browser, gateway):
    sign_in(browser, gateway, gateway.key("forms"))
    browser.get(f"{gateway.url}/#workflows")
    wait_for(lambda: css(browser, "#workflow-form [name=prompt]"), PAGE_WAIT, "the form")
    openapi = httpx.get(f"{gateway.url}/openapi.json").json()
    body = openapi["paths"]["/v1/workflows/zimage-turbo/jobs"]["post"]["requestBody"]
    ref = body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    documented = openapi["components"]["schemas"][ref]["properties"]
    names = [e.get_attribute("name") for e in css(browser, "#workflow-form [name]")]
    assert names == list(documented)
    assert unlabelled(browser) == []
    sampler = browser.find_element("css selector", "#workflow-form select[name=sampler]")
    assert "euler" in [o.text for o in sampler.find_elements("css selector", "option")]
    fill(browser, "wf-prompt", "a tiny lighthouse")
    fill(browser, "wf-width", "32")
    fill(browser, "wf-height", "32")
    browser.find_element("css selector", "#workflow-form button[type=submit]").click()
    card = cards_done(browser, "#workflow-gallery", 1)[0]
    assert image_size(browser, card) == (32, 32)
    shot(browser, "06-workflows")


def test_a_phone_sized_screen_needs_no_sideways_scrolling(browser, gateway):
    sign_in(browser, gateway, gateway.key("phone"))
    browser.set_window_size(390, 844)
    try:
        for section in ("make", "edit", "recipes", "history", "workflows"):
            browser.get(f"{gateway.url}/#{section}")
            wait_for(lambda: visible(browser, f"#{section}"), PAGE_WAIT, section)  # noqa: B023
            wide = browser.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth"
            )
            assert wide <= 0, f"{section} is {wide} px too wide: " + browser.execute_script(
                "return [...document.querySelectorAll('*')].filter(e => e.getBoundingClientRect()"
                ".right > window.innerWidth).map(e => e.tagName + '#' + e.id + '.' + e.className)"
                ".join(' ')"
            )
        browser.get(f"{gateway.url}/#make")
        wait_for(lambda: visible(browser, "#make"), PAGE_WAIT, "make")
        shot(browser, "07-phone")
    finally:
        browser.set_window_size(1280, 900)


@pytest.fixture
def zh_browser(downloads) -> Iterator[object]:
    driver = _driver(downloads, "zh-CN")
    try:
        yield driver
    finally:
        driver.quit()


def test_the_chinese_interface(zh_browser, gateway):
    """A browser asking for Chinese gets the Chinese interface; English is a choice away."""
    driver = zh_browser
    driver.get(f"{gateway.url}/")
    wait_for(lambda: visible(driver, "#signin-key"), PAGE_WAIT, "the sign-in form")
    assert driver.find_element("css selector", "#signin h2").text == "登录"
    sign_in(driver, gateway, gateway.key("zh"))
    assert driver.find_element("css selector", "#tabs a[href='#make']").text == "生成"
    assert driver.find_element("css selector", "html").get_attribute("lang") == "zh-CN"
    options = [o.text for o in css(driver, "#make-preset option")]
    assert "微信 1080×1080" in options and "小红书 1242×1660" in options
    fill(driver, "make-prompt", "雪山下的湖泊")
    fill(driver, "make-width", "32")
    fill(driver, "make-height", "32")
    driver.find_element("css selector", "#make-form button[type=submit]").click()
    card = cards_done(driver, "#make-gallery", 1)[0]
    assert "完成" in card.text and "同种子再来" in card.text
    shot(driver, "08-chinese")
    driver.find_element("id", "lang").send_keys("English")
    wait_for(
        lambda: driver.find_element("css selector", "#tabs a[href='#make']").text == "Make",
        PAGE_WAIT,
        "the English interface",
    )
    driver.refresh()  # the choice is kept
    wait_for(lambda: visible(driver, "#make-prompt"), PAGE_WAIT, "the page again")
    assert driver.find_element("css selector", "#tabs a[href='#make']").text == "Make"
