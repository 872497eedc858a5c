"""The pages for people over real HTTP, on SQLite and PostgreSQL: what each page
shows, that attacker-submitted fields stay text, the search's paging, the
headers, and that a page costs the same few queries whatever it lists.
(tests/server/test_page_browser.py drives them in a real browser.)

What a page shows is tested against the app in this process and against
``serve --workers 2`` (``http_client``); what a page costs in queries, on the
app's storage, in this process."""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession
from support.entries import IMAGE, image_of, release
from support.faults import StorageWrapper
from support.harness import LogUnderTest
from support.ledger import R1, R2, Client

from firmlog.client.entries import Build, KeySet, Revocation, parse_entry, sign_entry
from firmlog.server.page.layout import CONTENT_SECURITY_POLICY

HOSTILE = {
    "product": "<script>window.pwned=1</script>",
    "version": '1.0"><img src=x onerror="window.pwned=2">',
    "changelog": "</pre><script>window.pwned=3</script>\n<b>bold</b> & 'quoted'",
}
HOSTILE_URI = "javascript:window.pwned=4"


def hostile_release() -> Any:
    """A release whose free fields are markup and script, as an attacker would submit."""
    r = release(**HOSTILE)
    build = Build(r.build.time, HOSTILE_URI, "<i>c</i>", "<u>builder</u>", True)
    return replace(r, build=build)


async def get_html(client: Client, path: str, status: int = 200) -> str:
    async with client.session.get(f"{client.log.base}{path}") as resp:
        text = await resp.text()
        assert resp.status == status, (path, resp.status, text[:300])
        assert resp.content_type == "text/html", path
        assert resp.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY, path
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert_no_inline_code(text, path)
    return text


def assert_no_inline_code(text: str, where: str) -> None:
    """Script only from files (the policy forbids the rest; this keeps the pages honest)."""
    for tag in re.findall(r"<script\b[^>]*>", text, re.IGNORECASE):
        assert re.fullmatch(r'<script src="[^"]+">', tag), (where, tag)
    assert "<style" not in text.lower(), where
    assert not re.search(r"<[^>]*\s(style|on[a-z]+)\s*=", text, re.IGNORECASE), where


def cells(text: str, header: str) -> list[str]:
    """The text of the cells under ``header`` (data-label) in the page's tables."""
    found = re.findall(rf'<td data-label="{re.escape(header)}">(.*?)</td>', text, re.DOTALL)
    return [html.unescape(re.sub(r"<[^>]+>", "", c)) for c in found]


def identity_of(body: Any) -> tuple[str, str]:
    entry = parse_entry(sign_entry(body, [R1]))
    return entry.identity.hex(), entry.leaf_hash.hex()


async def test_every_page_answers_as_html_under_the_policy(http_client: Client) -> None:
    client = http_client
    await client.admit(R1)
    index = await client.ok(release(), R1)
    entry_id, leaf = identity_of(release())
    for path in (
        "/",
        "/search",
        "/search?vendor=acme.example",
        "/check",
        "/keys",
        f"/entry/{index}",
        f"/entry/{entry_id}",
        f"/entry/{leaf}",
        "/vendor/acme.example",
    ):
        text = await get_html(client, path)
        assert client.log.log_key.name in text, path
    for name, kind in (
        ("page.js", "text/javascript"),
        ("sha256.js", "text/javascript"),
        ("style.css", "text/css"),
    ):
        async with client.session.get(f"{client.log.base}/static/{name}") as resp:
            assert resp.status == 200
            assert resp.content_type == kind
            assert len(await resp.read()) > 500
    async with client.session.get(f"{client.log.base}/static/nothing.js") as resp:
        assert resp.status == 404


async def test_an_attackers_fields_are_shown_as_text(http_client: Client) -> None:
    client = http_client
    await client.admit(R1)
    body = hostile_release()
    index = await client.ok(body, R1)
    pages = [
        await get_html(client, "/"),
        await get_html(client, "/search?vendor=acme.example"),
        await get_html(client, "/vendor/acme.example"),
    ]
    entry = await get_html(client, f"/entry/{index}")
    for text in [*pages, entry]:
        assert "<script>window" not in text
        assert "<img" not in text
        assert html.escape(HOSTILE["product"]) in text
    assert html.escape(HOSTILE["version"]) in entry
    assert "&lt;/pre&gt;&lt;script&gt;window.pwned=3&lt;/script&gt;" in entry
    assert "&lt;u&gt;builder&lt;/u&gt;" in entry
    assert "<b>bold" not in entry
    assert "<i>c" not in entry
    assert 'href="javascript:' not in entry  # the URI is text, never a link
    assert html.escape(HOSTILE_URI) in entry
    # A search for the hostile text comes back as text in the form too.
    echoed = await get_html(client, "/search?product=%22%3E%3Cscript%3Ewindow.pwned%3D5")
    assert "<script>window" not in echoed
    assert 'value="&quot;&gt;&lt;script&gt;window.pwned=5"' in echoed


async def test_the_entry_page_shows_everything_in_full(http_client: Client) -> None:
    client = http_client
    await client.admit(R1)
    body = release("2.0", fixes=("CVE-2026-1234",), changelog="fixes the boot loop")
    index = await client.ok(body, R1)
    entry_id, leaf = identity_of(body)
    text = await get_html(client, f"/entry/{index}")
    for value in (
        entry_id,
        leaf,
        image_of(IMAGE).sha256,
        "router-9000",
        "CVE-2026-1234",
        "fixes the boot loop",
        "https://git.acme.example/router.git",
        "9f1c2e7",
        "acme-ci",
        R1.verifier.vkey.split("+")[0],
    ):
        assert value in text, value
    assert "…" not in text  # no hash is cut short
    assert "Not revoked" in text
    assert 'id="revoked"' not in text
    # Its downloads: the signed note as logged, and its proof bundle.
    note_href = re.search(r'id="download-note"[^>]*href="([^"]+)"', text, re.DOTALL)
    bundle_href = re.search(r'id="download-bundle"[^>]*href="([^"]+)"', text, re.DOTALL)
    assert note_href
    assert bundle_href
    base = f"{client.log.base}/entry/"
    async with client.session.get(base + html.unescape(note_href.group(1))) as resp:
        assert resp.status == 200
        assert "attachment" in resp.headers["Content-Disposition"]
        note = await resp.read()
    assert note == sign_entry(body, [R1])
    async with client.session.get(base + html.unescape(bundle_href.group(1))) as resp:
        assert resp.status == 200
        client.log.check_bundle(await resp.read(), note)
    # Revoked: the release's page names the revocation, which links back.
    revocation = Revocation(
        "acme.example", entry_id, "bricks <devices>", "https://acme.example/sa-1"
    )
    rev_index = await client.ok(revocation, R1)
    text = await get_html(client, f"/entry/{index}")
    assert f'Revoked by its vendor: see <a href="../entry/{rev_index}">' in text
    assert cells(text, "log index") == [str(rev_index)]
    assert cells(text, "reason") == ["bricks <devices>"]
    assert "https://acme.example/sa-1" in text
    text = await get_html(client, f"/entry/{rev_index}")
    assert f'href="../entry/{entry_id}"' in text
    assert f"(log index {index})" in text
    search = await get_html(client, "/search?vendor=acme.example")
    assert cells(search, "status") == [f"revoked by {rev_index}"]


async def test_the_search_filters_and_pages(http_client: Client) -> None:
    client = http_client
    await client.admit(R1)
    other_image = b"another image"
    indexes = [await client.ok(release(f"{v}.0"), R1) for v in range(1, 8)]
    fixed = await client.ok(release("9.0", fixes=("CVE-2026-4242",), image=other_image), R1)
    # Page by page with the next-page links, newest first then oldest first.
    for order, expected in (("desc", [fixed, *indexes[::-1]]), ("asc", [*indexes, fixed])):
        seen: list[int] = []
        path: str | None = f"/search?vendor=acme.example&order={order}&limit=3"
        while path is not None:
            text = await get_html(client, path)
            seen += [int(i) for i in cells(text, "index")]
            link = re.search(r'id="next-page" href="([^"]+)"', text)
            path = "/" + html.unescape(link.group(1)) if link else None
            if path is not None:
                assert "vendor=acme.example" in path
                assert "limit=3" in path
        assert seen == expected, order
    # Every filter, as typed by people: spaces, upper case, a sha256: prefix.
    digest = image_of(other_image).sha256
    for query in (
        f"image_sha256=+SHA256:{digest.upper()}+",
        "cve=cve-2026-4242",
        "version=9.0",
        "product=router-9000&version=9.0",
    ):
        text = await get_html(client, f"/search?{query}")
        assert cells(text, "index") == [str(fixed)], query
    assert cells(await get_html(client, "/search?vendor=nobody.example"), "index") == []
    # Bad input: a 400 page saying what was wrong, the form kept as typed.
    text = await get_html(client, "/search?image_sha256=abc%3Cb%3E", status=400)
    assert "the image SHA-256 must be" in html.unescape(text)
    assert 'value="abc&lt;b&gt;"' in text
    await get_html(client, "/search?cve=CVE-1", status=400)
    await get_html(client, "/search?cursor=x", status=400)


async def test_the_vendor_page_shows_the_key_history(http_client: Client) -> None:
    client = http_client
    admitted = await client.admit(R1)
    rotated = await client.ok(
        KeySet("acme.example", (R1.verifier.vkey, R2.verifier.vkey), 2, 2), R1
    )
    await client.ok(release(), R1, R2)
    text = await get_html(client, "/vendor/acme.example")
    assert cells(text, "log index")[:2] == [str(admitted), str(rotated)]
    assert cells(text, "event") == ["admission", "rotation"]
    assert cells(text, "serial") == ["1", "2"]
    assert cells(text, "threshold") == ["1 of 1", "2 of 2"]
    keys = cells(text, "keys")
    assert keys[0] == R1.verifier.vkey
    assert R1.verifier.vkey in keys[1]
    assert R2.verifier.vkey in keys[1]
    assert cells(text, "product") == ["router-9000"]  # its latest releases
    rotation = await get_html(client, f"/entry/{rotated}")
    assert "2 of 2" in rotation
    assert R2.verifier.vkey in rotation


async def test_the_keys_page_names_the_logs_keys(http_client: Client) -> None:
    client = http_client
    text = html.unescape(await get_html(client, "/keys"))
    assert client.log.log_key.name in text
    assert client.log.verifier.vkey in text
    assert client.log.operator.verifier.vkey in text
    assert "without witnesses" in text


async def test_missing_things_are_html_pages(http_client: Client) -> None:
    client = http_client
    await client.admit(R1)
    await get_html(client, "/entry/5", status=404)
    await get_html(client, f"/entry/{'ab' * 32}", status=404)
    await get_html(client, "/entry/-1", status=400)
    await get_html(client, "/entry/5/note", status=404)
    text = await get_html(client, "/vendor/nobody.example", status=404)
    assert "not admitted" in text
    await get_html(client, "/vendor/%3Cscript%3E", status=404)
    # The JSON API is as it was.
    status, got = await client.get("/v1/releases?vendor=acme.example")
    assert status == 200
    assert got == {"releases": [], "next_cursor": None}


class CountingStorage(StorageWrapper):
    """Counts the read calls the pages make on the real storage."""

    def __init__(self, storage: Any) -> None:
        super().__init__(storage)
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.storage, name)
        if not callable(attr) or name.startswith(("integration", "open", "close")):
            return attr
        counted: Callable[..., Any] = attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return counted(*args, **kwargs)

        return call


@pytest.fixture
async def counted(database_url: str, tmp_path: Path) -> AsyncIterator[LogUnderTest]:
    server = LogUnderTest(database_url, tmp_path, storage=CountingStorage)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_a_page_costs_the_same_queries_for_any_number_of_rows(
    counted: LogUnderTest, session: ClientSession
) -> None:
    client = Client(counted, session)
    storage = counted.services.storage
    assert isinstance(storage, CountingStorage)
    await client.admit(R1)

    async def cost(path: str) -> Counter[str]:
        storage.calls.clear()
        await get_html(client, path)
        calls = Counter(storage.calls)
        del calls["latest_checkpoint"]  # the reader's cache decides, not the rows
        return calls

    index = await client.ok(release("1.0"), R1)
    entry_id, _ = identity_of(release("1.0"))
    await client.ok(Revocation("acme.example", entry_id, "withdrawn"), R1)
    paths = ("/", "/search?vendor=acme.example", "/vendor/acme.example")
    few = {p: await cost(p) for p in paths}
    for v in range(2, 13):
        await client.ok(release(f"{v}.0"), R1)
    many = {p: await cost(p) for p in paths}
    assert many == few
    for p in paths:
        assert few[p]["search_releases"] == 1, few[p]
        assert few[p]["revocations_of"] == 1, few[p]
        assert few[p]["read_entries"] == 0, few[p]
    assert sum((await cost(f"/entry/{index}")).values()) <= 4
