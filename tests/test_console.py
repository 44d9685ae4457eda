"""
The operator console (CONTRACT §7) in a real headless Chromium, against a real hub
with devices over loopback TCP.

The hub runs in this process's reactor; the browser is driven through selenium, whose
calls block: each runs in a thread (L{Page.run}) so the reactor goes on serving the page.
One browser serves the module. Screenshots go to each test's C{tmp_path}
(C{pytest --basetemp DIR} keeps them for a look).
"""

import json
import os
import re
import shutil
import tempfile

import pytest
import pytest_twisted
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait
from twisted.internet.threads import deferToThread

from devicehub import QUEUED, Demand

from .support import Hub, connect, eventually, online

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

DESKTOP = (1280, 900)
PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}
TOKEN = "s3cret-token"
# Chromium's words for an API answer that is not 2xx, e.g. 404 for a device that is offline.
ANSWERED = re.compile(r"^http://127\.0\.0\.1:\d+/(devices|events|commands)\S* - Failed to load resource: "
                      r"the server responded with a status of (401|404|409|504)")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """
    One headless Chromium for the module, its profile in a tmp_path. Its temporary files
    go to a directory of their own, removed after: not in the tmp_path, whose path may be
    too long for the unix socket Chromium makes there (108 bytes at most).
    """
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.fail("Chromium and its driver are not installed (Debian: apt-get install -y chromium chromium-driver)")
    home = tmp_path_factory.mktemp("chromium")
    scratch = tempfile.mkdtemp(prefix="chromium-")  # in the session's TMPDIR (tests/conftest.py)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--user-data-dir={home / 'profile'}", "--no-first-run", "--disable-extensions",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--lang=en-GB", f"--window-size={DESKTOP[0]},{DESKTOP[1]}"]:
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(CHROMEDRIVER, env={**os.environ, "TMPDIR": scratch}, log_output=os.devnull)
    try:
        driver = webdriver.Chrome(service=service, options=options)
        try:
            yield driver
        finally:
            driver.quit()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class Page:
    """The console of C{hub} in the module's browser; every call runs in a thread."""

    def __init__(self, driver, hub: Hub, shots) -> None:
        self.driver = driver
        self.hub = hub
        self.shots = shots

    async def run(self, function, *args):
        return await deferToThread(function, *args)

    async def open(self, fragment: str = "") -> None:
        await self.run(self.driver.get, self.hub.url + "/" + fragment)

    async def until(self, condition, timeout: float = 10.0, message: str = ""):
        """
        Wait for C{condition(driver)} to be true (explicitly: no sleeps); return its value. It
        is asked again when an element it found was redrawn meanwhile (a stale element).
        """
        wait = WebDriverWait(self.driver, timeout, ignored_exceptions=(StaleElementReferenceException,))
        return await self.run(lambda: wait.until(condition, message))

    async def text(self, id: str) -> str:
        def read():
            for _ in range(4):  # found again if the page redrew it between finding and reading
                try:
                    return self.driver.find_element(By.ID, id).text
                except StaleElementReferenceException:
                    pass
            return self.driver.find_element(By.ID, id).text

        return await self.run(read)

    async def shows(self, id: str, wanted, timeout: float = 10.0) -> str:
        """Wait until element C{id} is displayed with text matching C{wanted} (a string it contains, or a regex)."""

        def check(driver):
            element = driver.find_element(By.ID, id)
            text = element.text
            found = wanted.search(text) if isinstance(wanted, re.Pattern) else wanted in text
            return text if found and element.is_displayed() else False

        return await self.until(check, timeout, f"#{id} never showed {wanted!r}")

    async def type(self, id: str, text: str, clear: bool = True) -> None:
        def typing():
            element = self.driver.find_element(By.ID, id)
            if clear:  # as a person does (WebDriver's clear() fires no input event)
                element.send_keys(Keys.CONTROL, "a")
                element.send_keys(Keys.BACKSPACE)
            if text:
                element.send_keys(text)

        await self.run(typing)

    async def click(self, selector: str) -> None:
        """Click what C{selector} names (found again if the page redrew it: a stale element is not clicked)."""

        def clicked(driver):
            driver.find_element(By.CSS_SELECTOR, selector).click()
            return True

        await self.until(clicked, message=f"{selector} could not be clicked")

    async def phone(self, on: bool = True) -> None:
        if on:
            await self.run(self.driver.execute_cdp_cmd, "Emulation.setDeviceMetricsOverride", PHONE)
        else:
            await self.run(self.driver.execute_cdp_cmd, "Emulation.clearDeviceMetricsOverride", {})

    async def shot(self, name: str, full: bool = False) -> None:
        """A PNG of the viewport (or the C{full} page) in the test's tmp_path."""
        path = self.shots / f"{name}.png"
        if not full:
            await self.run(self.driver.save_screenshot, str(path))
            return

        def capture():
            import base64

            size = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
            image = self.driver.execute_cdp_cmd("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
            })
            path.write_bytes(base64.b64decode(image["data"]))

        await self.run(capture)

    async def errors(self) -> list[str]:
        """
        What the page logged as errors (exceptions, CSP refusals, files that did not load),
        but the API's answers that are not 2xx, which Chromium logs too and the page handles.
        """
        entries = await self.run(self.driver.get_log, "browser")
        return [entry["message"] for entry in entries
                if entry["level"] == "SEVERE" and not ANSWERED.search(entry["message"])]

    async def leave(self) -> None:
        """Drop the page (its polling and stream) before its hub stops."""
        await self.phone(False)
        await self.run(self.driver.get, "about:blank")


@pytest_twisted.async_yield_fixture
async def console(browser, tmp_path):
    """C{await console(**hubOptions)}: a started hub and its console page (both ended after the test)."""
    opened: list[Page] = []

    async def start(**options) -> Page:
        hub = await Hub(commandTimeout=3.0, **options).start()
        page = Page(browser, hub, tmp_path)
        opened.append(page)
        await page.run(browser.get_log, "browser")  # what earlier tests left
        return page

    yield start
    for page in opened:
        try:
            await page.shot("at-the-end")  # for a look when a test fails
            await page.leave()
        finally:
            await page.hub.stop()


def device_link(imei: str):
    return lambda driver: driver.find_element(By.CSS_SELECTOR, f'#device-list a[href="#/devices/{imei}"]')


@pytest_twisted.ensureDeferred
async def test_the_list_shows_devices_as_they_log_in_and_searches_by_prefix(console):
    page = await console()
    await page.open()
    await page.shows("devices-empty", "No device is online")
    await page.shows("hub-status", "hub ok")
    devices = [await online(page.hub, "861234567890123")]
    await page.until(device_link("861234567890123"), message="the device that logged in is not listed")
    assert await page.text("devices-total") == "1"
    # enough devices for pages: 55 with the prefix 8620, 2 more
    devices += [await online(page.hub, f"8620000000000{i:02}") for i in range(55)]
    devices += [await online(page.hub, "870000000000001")]
    await page.shows("devices-total", re.compile(r"^57$"))
    await page.shows("t-devices", "57")
    await page.shows("page-of", "page 1 of 2")
    await page.type("prefix", "8620")
    await page.shows("devices-total", "55 of 57")
    assert await page.text("page-of") == "page 1 of 2"
    await page.click("#next")
    await page.shows("page-of", "page 2 of 2")
    # Read in one script: the list may be drawn again between finding its links and reading each one.
    listed = await page.run(page.driver.execute_script,
                            "return [...document.querySelectorAll('#device-list a')].map(a => a.innerText)")
    assert listed == [f"8620000000000{i:02}" for i in range(50, 55)]
    await page.type("prefix", "86123")
    await page.shows("devices-total", "1 of 57")
    await page.until(device_link("861234567890123"))
    await page.type("prefix", "8699")
    await page.shows("devices-empty", "No device online starts with 8699")
    await page.type("prefix", "869900000000001")  # a whole imei, not online: it can be opened anyway
    await page.shows("open-typed", "Open 869900000000001 anyway")
    await page.type("prefix", "86 12")
    await page.shows("devices-empty", "only letters, digits")
    await page.type("prefix", "")
    await page.shows("devices-total", re.compile(r"^57$"))
    # the cluster: devices per node
    second = await page.hub.addNode("node-2")
    for imei in ["880000000000001", "880000000000002"]:
        devices.append(await connect(second.listener.port.getHost().port, imei))
        await eventually(lambda: page.hub.directory.owner(imei) is not None)
    await page.shows("nodes", re.compile(r"node-1\s+57\s+node-2\s+2"))
    await page.shows("t-nodes", "2")
    await page.shows("devices-total", re.compile(r"^59$"))
    await page.shot("list-desktop")
    assert await page.errors() == []
    for device in devices:
        await device.close()


@pytest_twisted.ensureDeferred
async def test_a_device_its_commands_and_its_live_events(console):
    page = await console()
    imei = "861234567890123"
    await page.open(f"#/devices/{imei}")  # opened before it logs in: its login shows live
    await page.shows("device-imei", imei)
    await page.shows("device-online", "offline")
    await page.shows("e-state", "live")
    device = await online(page.hub, imei, reply={"battery": 87, "firmware": "v2.1"})
    await page.shows("device-online", "online")
    await page.shows("f-node", "node-1")
    await page.shows("f-protocol", "jsonl")
    await page.shows("f-since", "s ago")
    await page.shows("events", "online")

    await page.type("c-instruct", "0x10")
    await page.type("c-data", '{"interval": 60}')
    await page.click("#c-send")
    assert await page.shows("r-result", "ok") == "ok"
    await page.shows("r-reply", '"battery": 87')
    assert re.fullmatch(r"\d+(\.\d)? ms", await page.text("r-took"))
    assert await page.text("r-status") == "200"
    assert device.commands[-1]["instruct"] == "0x10" and device.commands[-1]["data"] == {"interval": 60}

    device.send({"type": "location", "lat": 52.3702, "lon": 4.8952, "speed": 12.5, "battery": 87})
    await page.shows("events", "location")
    await page.shows("events", '"lat":52.3702')
    await page.shows("t-commands", "1")
    await page.shows("t-commands-sub", "ok 1")
    await page.shot("device-desktop")
    await page.phone()
    await page.shows("back", "Devices")
    await page.shot("device-phone")
    await page.shot("device-phone-full", full=True)
    await page.phone(False)

    await page.type("c-data", "{interval: 60}")  # not JSON: said so, nothing sent
    await page.click("#c-send")
    await page.shows("r-words", "Data must be JSON")
    assert len(device.commands) == 1
    await page.type("c-data", '"text"')
    await page.run(lambda: page.driver.find_element(By.ID, "c-wait").click())  # do not wait for the ack
    await page.click("#c-send")
    await page.shows("r-result", "sent")
    await page.shows("r-status", "202")
    await page.run(lambda: page.driver.find_element(By.ID, "c-wait").click())  # wait again
    device.silent = True
    await page.type("c-timeout", "0.3")
    await page.click("#c-send")
    await page.shows("r-result", "timeout")
    await page.shows("r-words", "did not acknowledge it in time (0.3 s)")
    await page.shows("r-status", "504")
    await device.close()
    await page.shows("device-online", "offline")
    await page.click("#c-send")
    await page.shows("r-result", "no")
    await page.shows("r-words", "not online")
    await page.shows("r-status", "404")
    assert await page.errors() == []


@pytest_twisted.ensureDeferred
async def test_queued_commands_are_shown_and_cancelled(console, tmp_path):
    page = await console(brokerOptions={"store": str(tmp_path / "q.sqlite3")})
    demand = Demand(page.hub.frontend)
    try:
        queued = await demand.request("sleeper", "reboot", {"delay": 5}, queue=True)
        assert queued.result == QUEUED
        await page.open()
        await page.shows("store", "store ok")
        await page.type("prefix", "sleeper\n")  # not online: Enter opens it
        await page.shows("device-imei", "sleeper")
        await page.shows("device-online", "offline")
        await page.shows("q-rows", "reboot")
        await page.shows("q-rows", '{"delay":5}')
        await page.type("c-instruct", "interval")
        await page.type("c-data", "30")
        await page.run(lambda: page.driver.find_element(By.ID, "c-queue").click())
        await page.click("#c-send")
        await page.shows("r-result", "queued")
        await page.shows("r-words", "when it logs in")
        await page.shows("q-count", "2")
        await page.shows("q-rows", "interval")
        await page.shot("queue-desktop")
        await page.phone()
        await page.shot("queue-phone", full=True)
        await page.phone(False)
        await page.click(f'#q-rows tr[data-id="{queued.id}"] button.cancel')
        await page.until(lambda d: not d.find_elements(By.CSS_SELECTOR, f'#q-rows tr[data-id="{queued.id}"]'),
                         message="the cancelled command is still listed")
        assert await page.text("q-count") == "1"
        assert (await demand.status(queued.id))["state"] == "cancelled"
        assert [c["instruct"] for c in await demand.queued("sleeper")] == ["interval"]
        # delivered at login: the queue empties as the page looks on
        device = await online(page.hub, "sleeper", reply="done")
        await eventually(lambda: device.commands)
        await page.shows("q-empty", "nothing waits")
        await page.shows("device-online", "online")
        await page.shows("events", re.compile(r"command\s+\{[^}]*\"state\":\"acked\""))  # the outcomes, pushed
        assert await page.errors() == []
        await device.close()
    finally:
        demand.close()


@pytest_twisted.ensureDeferred
async def test_with_an_api_token_the_page_asks_for_it(console, http):
    page = await console(apiToken=TOKEN)
    device = await online(page.hub, "861234567890123")
    # the page's files hold no data and are open; the data are not
    for path in ["/", "/console/console.js", "/console/console.css", "/console/icon.svg"]:
        assert (await http.get(page.hub.url + path)).code == 200, path
    assert (await http.get(page.hub.url + "/devices")).code == 401
    assert (await http.get(page.hub.url + "/events")).code == 401
    await page.open()
    await page.shows("login-title", "API token")
    assert not await page.run(lambda: page.driver.find_element(By.ID, "main").is_displayed())
    await page.type("token", "wrong\n")
    await page.shows("login-error", "That token was not accepted")
    await page.shot("token-prompt")
    await page.type("token", TOKEN + "\n")
    await page.until(device_link("861234567890123"), message="the list did not show after the token")
    await page.shows("sign-out", "Forget token")
    await page.click('#device-list a[href="#/devices/861234567890123"]')
    # online before the page opened it: what GET /devices/{imei}/session says
    await page.shows("f-node", "node-1")
    await page.shows("f-protocol", "jsonl")
    await page.shows("f-since", "ago")
    await page.shows("e-state", "live")  # the event stream takes the token too
    device.send({"type": "heartbeat", "battery": 50})
    await page.shows("events", "heartbeat")
    await page.click("#sign-out")
    await page.shows("login-title", "API token")
    assert await page.errors() == []
    await device.close()


@pytest_twisted.ensureDeferred
async def test_the_files_are_the_package_s_and_load_nothing_from_elsewhere(http):
    hub = await Hub().start()
    try:
        answers = {}
        for path in ["/", "/console/console.js", "/console/console.css", "/console/icon.svg"]:
            response = await http.get(hub.url + path)
            answers[path] = response.code, response.headers, await response.content()
        for path, (code, headers, body) in answers.items():
            assert code == 200, path
            assert b"default-src 'none'" in headers.getRawHeaders(b"content-security-policy")[0]
            assert not re.search(rb"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", body.replace(b"http://www.w3.org/2000/svg", b"")), path
        assert answers["/"][1].getRawHeaders(b"content-type") == [b"text/html; charset=utf-8"]
        etag = answers["/console/console.js"][1].getRawHeaders(b"etag")[0]
        again = await http.get(hub.url + "/console/console.js", headers={b"If-None-Match": etag})
        assert again.code == 304
        await again.content()
        head = await http.head(hub.url + "/")
        assert head.code == 200 and await head.content() == b""
        missing = await http.get(hub.url + "/console/nothing.js")
        assert missing.code == 404 and json.loads(await missing.content()) == {"error": "not found"}
        posted = await http.post(hub.url + "/", data=b"{}")
        assert posted.code == 405 and posted.headers.getRawHeaders(b"allow") == [b"GET, HEAD"]
        await posted.content()
    finally:
        await hub.stop()
