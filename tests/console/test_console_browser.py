"""The console in a real browser: Debian's headless ``chromium`` driven by Selenium through
Debian's ``chromedriver`` (nothing is downloaded; ``.ci/run`` installs both with apt-get).
One browser session for the module; agents are real daemons driven through the ``ppz`` CLI.

Set ``PPZ_SCREENSHOTS=DIR`` to keep the screenshots (``docs/console.md`` shows them)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemonfixture import DaemonHome
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait
from serverfixture import ServerProcess

CHROMIUM = os.environ.get("PPZ_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("PPZ_CHROMEDRIVER", "/usr/bin/chromedriver")
WAIT = 15.0

XSS_PAYLOADS = [
    "<script>window.__xss = 'script'</script>",
    "<img src=x onerror=\"window.__xss = 'img'\">",
    "<svg onload=\"window.__xss = 'svg'\"></svg>",
    "</span></li></ol><iframe srcdoc=\"<script>parent.__xss='iframe'</script>\"></iframe>",
    "\x1b[31mred\x1b[0m and <b>bold</b>",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def server(console_server: ServerProcess) -> ServerProcess:
    return console_server


@pytest.fixture(scope="module")
def agents(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaemonHome, str]]:
    """A daemon logged in to account ``demo`` that created the sources ``alice`` and ``bob``."""
    key = server.add_key("demo")
    home = DaemonHome(Path(tmp_path_factory.mktemp("agents")) / "home")
    try:
        assert home.login(server.url, key).returncode == 0
        for handle in ("alice", "bob"):
            out = home.ppz("source", "create", handle)
            assert out.returncode == 0, out.stderr
        yield home, key
    finally:
        home.kill()


def shoot(driver: WebDriver, name: str) -> None:
    directory = os.environ.get("PPZ_SCREENSHOTS")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(directory) / f"{name}.png"))


def wait(driver: WebDriver) -> WebDriverWait:  # type: ignore[type-arg]
    return WebDriverWait(driver, WAIT)


def sign_in(driver: WebDriver, server: ServerProcess, key: str) -> None:
    driver.get(server.url + "/ui/")
    wait(driver).until(ec.url_to_be(server.url + "/ui/login"))
    driver.find_element(By.ID, "api_key").send_keys(key)
    shoot(driver, "console-sign-in")
    driver.find_element(By.ID, "sign-in").click()
    wait(driver).until(ec.url_to_be(server.url + "/ui/"))


def tail_texts(driver: WebDriver) -> list[str]:
    return [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#messages li")]


def no_alert(driver: WebDriver) -> bool:
    try:
        _ = driver.switch_to.alert
    except NoAlertPresentException:
        return True
    return False


def test_sign_in_watch_agents_talk_send_and_sign_out(
    browser: WebDriver, server: ServerProcess, agents: tuple[DaemonHome, str]
) -> None:
    home, key = agents
    sign_in(browser, server, key)
    sources = browser.find_element(By.ID, "sources").text
    assert "alice" in sources and "bob" in sources
    assert key not in browser.page_source and key not in browser.current_url

    # The overview follows the account live: the new message shows up without a reload.
    assert home.ppz("send", "bob", "first words", env={"PPZ_CURRENT_HANDLE": "alice"}).returncode == 0
    row = (By.CSS_SELECTOR, 'tr[data-pipe="bob.inbox"]')
    wait(browser).until(ec.text_to_be_present_in_element(row, "first words"))
    assert "alice" in browser.find_element(*row).text
    shoot(browser, "console-overview")

    browser.find_element(By.LINK_TEXT, "bob.inbox").click()
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "pipe-name"), "bob.inbox"))
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "live-state"), "live"))
    assert any("first words" in t for t in tail_texts(browser))

    # An agent sends with the CLI: the message shows up in the open page's live tail.
    sent = home.ppz("send", "bob", "hello over the live tail", "--subject", "status", "--priority", "high",
                    env={"PPZ_CURRENT_HANDLE": "alice"})
    assert sent.returncode == 0, sent.stderr
    shown_after = time.monotonic()
    wait(browser).until(lambda d: any("hello over the live tail" in t for t in tail_texts(d)))
    print(f"live tail: shown {time.monotonic() - shown_after:.3f}s after `ppz send` returned")
    last = browser.find_elements(By.CSS_SELECTOR, "#messages li")[-1]
    assert last.find_element(By.CLASS_NAME, "sender").text == "alice"
    assert last.find_element(By.CLASS_NAME, "badge").text == "P1"
    assert last.find_element(By.CLASS_NAME, "subject").text == "[status]"

    # A person sends from the page as alice; it appears in the tail and bob reads it with ppz.
    Select(browser.find_element(By.ID, "send-as")).select_by_value("alice")
    browser.find_element(By.ID, "send-subject").send_keys("from the web")
    browser.find_element(By.ID, "send-message").send_keys("hello bob, from a person")
    browser.find_element(By.ID, "send-button").click()
    wait(browser).until(lambda d: any("hello bob, from a person" in t for t in tail_texts(d)))
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "send-status"), "sent to bob.inbox"))
    assert browser.find_element(By.ID, "send-message").get_attribute("value") == ""
    shoot(browser, "console-pipe")
    read = home.ppz("read", "inbox", env={"PPZ_CURRENT_HANDLE": "bob"})
    assert read.returncode == 0, read.stderr
    lines = read.stdout.splitlines()
    # Watching the pipe moved no cursor: bob still has all three messages unread, in order.
    assert [i for i, line in enumerate(lines) for text in ("first words", "hello over the live tail",
            "hello bob, from a person") if text in line] == [0, 1, 2], lines
    assert "[from the web]" in lines[2] and "alice" in lines[2]

    browser.find_element(By.ID, "sign-out").click()
    wait(browser).until(ec.url_to_be(server.url + "/ui/login"))
    browser.get(server.url + "/ui/pipes/bob.inbox")
    wait(browser).until(ec.url_to_be(server.url + "/ui/login"))


def test_hostile_messages_render_as_text(
    browser: WebDriver, server: ServerProcess, agents: tuple[DaemonHome, str]
) -> None:
    home, key = agents
    for payload in XSS_PAYLOADS[:2]:
        assert home.ppz("send", "alice", payload, env={"PPZ_CURRENT_HANDLE": "bob"}).returncode == 0
    sign_in(browser, server, key)
    browser.get(server.url + "/ui/pipes/alice.inbox")
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "live-state"), "live"))
    # The rest arrive over the live tail (rendered by the page script, not the template).
    for payload in XSS_PAYLOADS[2:]:
        assert home.ppz("send", "alice", payload, "--subject", "<i>s</i>",
                        env={"PPZ_CURRENT_HANDLE": "bob"}).returncode == 0
    wait(browser).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#messages li")) == len(XSS_PAYLOADS))
    payloads = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#messages .payload")]
    assert payloads == [p.replace("\x1b", "␛") for p in XSS_PAYLOADS]
    assert browser.execute_script("return window.__xss === undefined && window.parent.__xss === undefined")
    injected = "#messages img, #messages script, #messages svg, #messages iframe, #messages b, #messages i"
    assert browser.find_elements(By.CSS_SELECTOR, injected) == []
    assert no_alert(browser)
    shoot(browser, "console-escaped")
