"""The pages in a real headless Chromium, driven by chromedriver: search, open an
entry, check a file with and without Web Crypto, the page's own SHA-256 against
known vectors, and every page at 1280 and 400 px without horizontal overflow.

Screenshots go to $FIRMLOG_TEST_ARTEFACTS (default: the test's tmp_path). The
browser runs in a thread: the log server answers it from this test's event loop.
Without Chromium these tests skip, except in CI (CI=true), where they fail.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from support.entries import IMAGE, release
from support.ledger import R1, R2, Client
from test_page import HOSTILE, hostile_release

from firmlog.client.entries import KeySet, Revocation, parse_entry, sign_entry

T = TypeVar("T")

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# A name for 127.0.0.1 that is not "localhost": plain HTTP there is not a secure
# context, so the browser offers no crypto.subtle (as on a log served over HTTP).
INSECURE_HOST = "firmlog-page.test"
WIDTHS = (1280, 400)
STEP = 15.0  # seconds any one wait in the browser may take


@pytest.fixture
def backend() -> str:
    """The browser tests run on SQLite only (test_page.py covers both backends)."""
    return "sqlite"


def _missing(what: str) -> None:
    message = f"{what}: install Debian's chromium and chromium-driver (as .ci/run does)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium that maps INSECURE_HOST to 127.0.0.1."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        _missing(
            f"no Chromium or chromedriver on PATH (chromium={chromium}, chromedriver={driver_path})"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--disable-extensions",
        "--no-first-run",
        "--window-size=1280,900",
        f"--host-resolver-rules=MAP {INSECURE_HOST} 127.0.0.1",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_page_load_timeout(STEP)
    driver.set_script_timeout(STEP)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def artefacts(tmp_path: Path) -> Path:
    where = os.environ.get("FIRMLOG_TEST_ARTEFACTS")
    folder = Path(where) if where else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def in_browser(fn: Callable[[], T]) -> T:
    """Run ``fn`` (blocking browser calls) off the event loop that serves the log."""
    return await asyncio.wait_for(asyncio.to_thread(fn), timeout=120)


class Page:
    """The browser, at one width, on one log."""

    def __init__(self, driver: Any, base: str, artefacts: Path, width: int) -> None:
        self.driver, self.base, self.artefacts, self.width = driver, base, artefacts, width
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False},
        )
        driver.get_log("browser")  # start with an empty console

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)
        self.wait(lambda d: d.execute_script("return document.readyState") == "complete")

    def wait(self, condition: Callable[[Any], Any], timeout: float = STEP) -> Any:
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout).until(condition)

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, css))

    def check_layout(self, name: str) -> None:
        """No horizontal overflow at this width, nothing refused by the policy or
        failing in the console, no attacker script ran; then a full-page screenshot."""
        inner, scroll = self.js("return [window.innerWidth, document.documentElement.scrollWidth]")
        assert inner == self.width
        assert scroll <= inner, f"{name}: {scroll} px of content in a {inner} px window"
        assert self.js("return window.pwned === undefined"), f"{name}: attacker script ran"
        errors = [e for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], f"{name}: {errors}"
        height = self.js("return document.documentElement.scrollHeight")
        shot = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": self.width, "height": height, "scale": 1},
            },
        )
        path = self.artefacts / f"{name}-{self.width}.png"
        path.write_bytes(base64.b64decode(shot["data"]))


async def a_log_with_releases(client: Client) -> dict[str, Any]:
    """acme.example with three releases, one hostile and one revoked, then a rotation
    of its keys to two keys of which both must sign."""
    await client.admit(R1)
    first = await client.ok(release("1.0"), R1)
    hostile = await client.ok(hostile_release(), R1)
    fixed = await client.ok(release("2.0", fixes=("CVE-2026-1234",)), R1)
    first_id = parse_entry(sign_entry(release("1.0"), [R1])).identity.hex()
    await client.ok(Revocation("acme.example", first_id, "bricks devices"), R1)
    await client.ok(KeySet("acme.example", (R1.verifier.vkey, R2.verifier.vkey), 2, 2), R1)
    return {"first": first, "hostile": hostile, "fixed": fixed, "first_id": first_id}


@pytest.mark.parametrize("width", WIDTHS)
async def test_search_then_open_an_entry(
    client: Client, browser: Any, artefacts: Path, width: int
) -> None:
    logged = await a_log_with_releases(client)

    def scenario() -> None:
        page = Page(browser, client.log.base, artefacts, width)
        page.open("/")
        page.check_layout("home")
        page.find("header nav a[href='search']").click()
        page.wait(lambda d: d.current_url.startswith(client.log.base + "/search"))
        page.find("input[name=vendor]").send_keys("acme.example")
        page.find("input[name=cve]").send_keys("cve-2026-1234")
        page.find("form.search button").click()
        page.wait(lambda d: "cve=cve-2026-1234" in d.current_url)
        assert "vendor=acme.example" in browser.current_url  # a URL to share
        indexes = [td.text for td in page.find_all("td[data-label=index]")]
        assert indexes == [str(logged["fixed"])]
        page.check_layout("search")
        # All of acme's releases: the hostile one is shown as text.
        page.open("/search?vendor=acme.example")
        products = [td.text.split(": ", 1)[-1] for td in page.find_all("td[data-label=product]")]
        assert HOSTILE["product"] in products
        status = [td.text for td in page.find_all("td[data-label=status]")]
        assert status[-1].endswith("revoked by 4")
        page.check_layout("search-all")
        page.find(f"td[data-label=index] a[href='entry/{logged['hostile']}']").click()
        page.wait(lambda d: d.current_url.endswith(f"/entry/{logged['hostile']}"))
        title = page.find("h1").text
        assert HOSTILE["product"] in title
        assert HOSTILE["version"] in title
        assert not page.find_all("main img")
        assert not page.find_all("main a[href^=javascript]")
        assert HOSTILE["changelog"].split("\n")[0] in page.find("dd pre").text
        text = page.find("main").text
        entry = parse_entry(sign_entry(hostile_release(), [R1]))
        for full in (entry.identity.hex(), entry.leaf_hash.hex()):
            assert full in text.replace("\n", "")
        page.check_layout("entry-hostile")
        # The revoked release: its revocation, and the way back.
        page.open(f"/entry/{logged['first']}")
        assert page.find("td[data-label=reason]").text.endswith("bricks devices")
        page.check_layout("entry-revoked")
        page.find("dd a[href^='../vendor/']").click()
        page.wait(lambda d: d.current_url.endswith("/vendor/acme.example"))
        events = [td.text.split(": ")[-1] for td in page.find_all("td[data-label=event]")]
        assert events == ["admission", "rotation"]
        serials = [td.text.split(": ")[-1] for td in page.find_all("td[data-label=serial]")]
        assert serials == ["1", "2"]
        assert R2.verifier.vkey in page.find("dl.fields").text.replace("\n", "")
        page.check_layout("vendor")
        page.open("/keys")
        assert client.log.verifier.vkey in page.find("#log-key").text
        page.check_layout("keys")
        page.open("/check")
        page.check_layout("check")

    await in_browser(scenario)


def choose_file(page: Page, path: Path) -> dict[str, str]:
    """Give ``path`` to the file check; wait for and return its verdict."""
    page.js("delete document.getElementById('file-result').dataset.state")
    page.find("#file").send_keys(str(path))
    page.wait(
        lambda d: d.execute_script(
            "const s = document.getElementById('file-result').dataset.state;"
            "return s && s !== 'hashing'"
        )
    )
    result = page.find("#file-result")
    return {
        "state": result.get_attribute("data-state"),
        "digest": result.get_attribute("data-digest"),
        "hasher": result.get_attribute("data-hasher"),
        "text": result.text,
    }


@pytest.mark.parametrize(("host", "hasher"), [("localhost", "subtle"), (INSECURE_HOST, "script")])
async def test_check_a_file(
    client: Client, browser: Any, artefacts: Path, tmp_path: Path, host: str, hasher: str
) -> None:
    """On localhost the browser hashes with Web Crypto; over plain HTTP on another
    name it has none, and the page's own SHA-256 does the work, with the same answer."""
    logged = await a_log_with_releases(client)
    firmware = tmp_path / "router-9000-1.0.bin"
    firmware.write_bytes(IMAGE)
    unknown = tmp_path / "unknown.bin"
    unknown.write_bytes(os.urandom(3 * (1 << 20) + 17))  # several chunks of sha256.js
    base = client.log.base.replace("127.0.0.1", host)

    def scenario() -> None:
        for width in WIDTHS:
            page = Page(browser, base, artefacts, width)
            page.open("/check")
            secure, subtle = page.js(
                "return [window.isSecureContext, !!(window.crypto && crypto.subtle)]"
            )
            assert (secure, subtle) == ((True, True) if hasher == "subtle" else (False, False))
            found = choose_file(page, firmware)
            assert found["state"] == "found", found
            assert found["hasher"] == hasher
            assert found["digest"] == hashlib.sha256(IMAGE).hexdigest()
            names = [a.text for a in page.find_all("#file-result li a")]
            assert len(names) == 3  # every release of this image: 1.0, the hostile one, 2.0
            assert HOSTILE["product"] in " ".join(names)
            assert "REVOKED" in page.find("#file-result").text
            page.check_layout(f"check-found-{hasher}")
            absent = choose_file(page, unknown)
            assert absent["state"] == "absent", absent
            assert absent["hasher"] == hasher
            assert absent["digest"] == hashlib.sha256(unknown.read_bytes()).hexdigest()
            page.check_layout(f"check-absent-{hasher}")
            page.find("#file-result a[href^='search?image_sha256=']").click()
            page.wait(lambda d: "/search?image_sha256=" in d.current_url)
            assert page.find_all("td[data-label=index]") == []
        # From the front page too, which links the answer to the entry.
        page.open("/")
        assert choose_file(page, firmware)["state"] == "found"
        page.find(f"#file-result a[href='entry/{logged['first']}']").click()
        page.wait(lambda d: d.current_url.endswith(f"/entry/{logged['first']}"))

    await in_browser(scenario)


VECTORS = [  # FIPS 180-4 examples (NIST CSRC), and the empty message
    (b"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    (b"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
    (
        b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
    ),
    (
        b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopq"
        b"klmnopqrlmnopqrsmnopqrstnopqrstu",
        "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1",
    ),
]
MILLION_A = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"


async def test_the_pages_sha256_against_known_vectors(client: Client, browser: Any) -> None:
    """sha256.js, run by the browser: the published vectors, a million 'a', every
    length around the padding boundaries, and any split of the input into updates."""
    lengths = [*range(0, 200), 447, 448, 511, 512, 1000, 4095, 4096, 65537]
    messages = [os.urandom(n) for n in lengths]
    cases = [*VECTORS, *((m, hashlib.sha256(m).hexdigest()) for m in messages)]
    assert hashlib.sha256(b"a" * 1_000_000).hexdigest() == MILLION_A

    def scenario() -> None:
        page = Page(browser, client.log.base.replace("127.0.0.1", INSECURE_HOST), Path(), 1280)
        page.open("/check")
        assert page.js("return window.crypto.subtle === undefined")  # the fallback's home
        got = page.js(
            """
            const cases = JSON.parse(arguments[0]);
            const bytes = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const whole = cases.map(([m]) => FirmlogSHA256.digestHex(bytes(m)));
            // The same messages, given in pieces of 1, 7, 63, 64 and 65 bytes.
            const pieces = [1, 7, 63, 64, 65].map((step) => cases.map(([m]) => {
              const b = bytes(m), h = new FirmlogSHA256.SHA256();
              for (let i = 0; i < b.length; i += step) h.update(b.subarray(i, i + step));
              return FirmlogSHA256.hex(h.digest());
            }));
            const million = FirmlogSHA256.digestHex(new Uint8Array(1000000).fill(97));
            return JSON.stringify({whole, pieces, million});
            """,
            json.dumps([[base64.b64encode(m).decode(), d] for m, d in cases]),
        )
        result = json.loads(got)
        expected = [d for _, d in cases]
        assert result["whole"] == expected
        for split in result["pieces"]:
            assert split == expected
        assert result["million"] == MILLION_A

    await in_browser(scenario)
