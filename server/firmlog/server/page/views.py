"""The pages, as HTML text. Everything that comes from an entry (attacker
submitted) or from the request passes through :func:`layout.e`; links are
built from escaped parts, and a URI from an entry becomes a link only when it is
http(s)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from firmlog.client.entries import Entry, KeySet, Release, Revocation, VendorAdmission
from firmlog.server.page.data import Listed, LoggedEntry
from firmlog.server.page.layout import Site, code, e, fields, q, table
from firmlog.server.storage import KeySetRow

_ORDERS = {"desc": "newest first", "asc": "oldest first"}


@dataclass(frozen=True, slots=True)
class SearchForm:
    """The search as typed, tidied: surrounding spaces dropped, a digest's
    ``sha256:`` prefix and upper case forgiven, a CVE id upper-cased."""

    vendor: str = ""
    product: str = ""
    version: str = ""
    cve: str = ""
    image_sha256: str = ""
    order: str = "desc"
    limit: str = ""  # the page size, when not the default

    @classmethod
    def of(cls, query: Mapping[str, str]) -> SearchForm:
        def get(name: str) -> str:
            return query.get(name, "").strip()

        return cls(
            vendor=get("vendor"),
            product=get("product"),
            version=get("version"),
            cve=get("cve").upper(),
            image_sha256=get("image_sha256").lower().removeprefix("sha256:").strip(),
            order=get("order") or "desc",
            limit=get("limit"),
        )

    def filters(self) -> dict[str, str]:
        """The filters that are set, by query parameter name."""
        return {k: v for k, v in asdict(self).items() if k not in ("order", "limit") and v}


# -- pieces ------------------------------------------------------------------------


def _entry_link(site: Site, index: int) -> str:
    return f'<a href="{site.url(f"entry/{index}")}">{index}</a>'


def _vendor_link(site: Site, vendor: str) -> str:
    name = e(vendor).replace(".", ".<wbr>")  # a long name wraps between its labels
    return f'<a class="vendor" href="{site.url("vendor/" + q(vendor))}">{name}</a>'


def _search_link(site: Site, text: str, **query: str) -> str:
    return f'<a href="{site.url("search", **query)}">{e(text)}</a>'


def _uri(value: str | None) -> str:
    if value is None:
        return '<span class="muted">none</span>'
    if value.lower().startswith(("https://", "http://")):
        return f'<a href="{e(value)}" rel="nofollow noreferrer">{code(value)}</a>'
    return code(value)  # javascript:, data: and the like stay text


def _status(site: Site, revoked_by: Sequence[int]) -> str:
    if not revoked_by:
        return '<span class="muted">not revoked</span>'
    links = ", ".join(_entry_link(site, i) for i in revoked_by)
    return f'<span class="revoked">revoked</span> by {links}'


def _keys(keys: Sequence[str]) -> str:
    return "<br>".join(code(k) for k in keys)


def releases_table(site: Site, listed: Sequence[Listed], empty: str) -> str:
    rows = [
        (
            _entry_link(site, r.index),
            _vendor_link(site, r.release.vendor),
            e(r.release.product),
            e(r.release.version),
            str(r.release.security_version),
            e(r.release.channel),
            f'<code class="digest">{e(r.release.image.sha256)}</code>',
            _status(site, r.revoked_by),
        )
        for r in listed
    ]
    headers = (
        "index",
        "vendor",
        "product",
        "version",
        "security version",
        "channel",
        "image sha256",
        "status",
    )
    return table(headers, rows, empty)


def _file_check(site: Site) -> str:
    return f"""<form id="file-check" data-root="{e(site.root)}">
<label>Firmware file: <input type="file" id="file"></label>
</form>
<p class="muted">The file is hashed (SHA-256) in your browser and only its digest is
looked up; the file is not uploaded.</p>
<div id="file-result" aria-live="polite"></div>"""


# -- pages -------------------------------------------------------------------------


def render_home(
    site: Site,
    checkpoint: bytes | None,
    tree_size: int,
    releases: Sequence[Listed],
    key_sets: Sequence[KeySetRow],
) -> str:
    """The front page: log state, the file check, recent releases, vendors."""
    vendors: dict[str, list[KeySetRow]] = {}
    for row in key_sets:
        vendors.setdefault(row.vendor, []).append(row)
    vendor_rows = [
        (
            _vendor_link(site, vendor),
            f"{rows[-1].threshold} of {len(rows[-1].keys)}",
            str(rows[-1].serial),
            ", ".join(_entry_link(site, r.index) for r in rows),
        )
        for vendor, rows in sorted(vendors.items())
    ]
    note = e(checkpoint.decode("utf-8", "replace")) if checkpoint else "(none yet)"
    body = f"""<h1>Firmware transparency log <code>{e(site.origin)}</code></h1>
<p>{tree_size} entries. Every firmware release here is signed by its vendor, appended to
an RFC 6962 Merkle tree, and provable with a <code>.tlog-proof</code> bundle.
Machine interfaces: <a href="{site.url("checkpoint")}">checkpoint</a>, tiles under
<code>/tile/</code>, JSON under <a href="{site.url("v1/releases")}">/v1/</a>,
<a href="{site.url("metrics")}">metrics</a>.</p>
<h2>Latest checkpoint</h2><pre>{note}</pre>
<h2>Is this firmware file in the log?</h2>
{_file_check(site)}
<h2>Recent releases</h2>
{releases_table(site, releases, "No release is logged yet.")}
<p><a href="{site.url("search")}">All releases…</a></p>
<h2>Vendors</h2>
{
        table(
            ("vendor", "threshold", "key set serial", "key sets at log index"),
            vendor_rows,
            "No vendor is admitted yet.",
        )
    }"""
    return site.frame("log", body, script=True)


def render_search(
    site: Site,
    form: SearchForm,
    results: Sequence[Listed] | None,
    next_cursor: int | None,
    error: str | None = None,
) -> str:
    """The search form (GET, so a search is a URL) and one page of its results."""

    def box(name: str, label: str, value: str, hint: str) -> str:
        return (
            f'<label>{e(label)}<input type="search" name="{name}" value="{e(value)}" '
            f'placeholder="{e(hint)}" autocomplete="off" spellcheck="false"></label>'
        )

    orders = "".join(
        f'<option value="{k}"{" selected" if form.order == k else ""}>{v}</option>'
        for k, v in _ORDERS.items()
    )
    limit = f'<input type="hidden" name="limit" value="{e(form.limit)}">' if form.limit else ""
    search = f"""<form class="search" method="get" action="{site.url("search")}">
{box("vendor", "Vendor", form.vendor, "acme.example")}
{box("product", "Product", form.product, "router-9000")}
{box("version", "Version", form.version, "1.2.3")}
{box("cve", "Fixes CVE", form.cve, "CVE-2026-12345")}
{box("image_sha256", "Image SHA-256", form.image_sha256, "64 hex digits")}
<label>Order<select name="order">{orders}</select></label>{limit}
<div><button type="submit">Search</button></div>
</form>"""
    parts = ["<h1>Search releases</h1>", search]
    if error is not None:
        parts.append(f'<p class="error" id="search-error">{e(error)}</p>')
    if results is not None:
        filters = form.filters()
        what = ", ".join(f"{k} = {code(v)}" for k, v in filters.items()) or "all releases"
        parts.append(f"<h2>Releases: {what}</h2>")
        parts.append(releases_table(site, results, "No release matches."))
        keep = {**filters, "order": form.order, "limit": form.limit}
        pager = [f'<a href="{site.url("search", **keep)}">First page</a>']
        if next_cursor is not None:
            after = site.url("search", **keep, cursor=next_cursor)
            pager.append(f'<a rel="next" id="next-page" href="{after}">Next page</a>')
        parts.append(f'<p class="pager">{"".join(pager)}</p>')
    return site.frame("search", "\n".join(parts))


def _release_fields(site: Site, r: Release) -> list[tuple[str, str]]:
    b = r.build
    fixes = ", ".join(_search_link(site, cve, cve=cve) for cve in r.fixes)
    return [
        ("vendor", _vendor_link(site, r.vendor)),
        ("product", _search_link(site, r.product, vendor=r.vendor, product=r.product)),
        ("hardware revisions", ", ".join(e(h) for h in r.hardware_revisions) or "any"),
        ("version", e(r.version)),
        ("security version", str(r.security_version)),
        ("channel", e(r.channel)),
        (
            "image sha256",
            f'<a href="{site.url("search", image_sha256=r.image.sha256)}">'
            f"{code(r.image.sha256)}</a>",
        ),
        ("image size", f"{r.image.size} bytes"),
        ("build time", e(b.time)),
        ("source", _uri(b.source_uri)),
        ("source commit", code(b.source_commit) if b.source_commit else "none"),
        ("builder", e(b.builder)),
        ("reproducible", "yes" if b.reproducible else "no"),
        ("SBOM sha256", code(r.sbom_sha256) if r.sbom_sha256 else "none"),
        ("fixes", fixes or "none"),
        ("changelog", f"<pre>{e(r.changelog)}</pre>" if r.changelog else "none"),
    ]


def _title(entry: Entry) -> str:
    body = entry.body
    if isinstance(body, Release):
        return f"Release {body.vendor} {body.product} {body.version}"
    if isinstance(body, Revocation):
        return f"Revocation by {body.vendor}"
    if isinstance(body, KeySet):
        return f"Key rotation of {body.vendor} (serial {body.serial})"
    return f"Admission of {body.vendor}"


def render_entry(site: Site, logged: LoggedEntry) -> str:
    """One entry: its hashes in full, its fields, its revocations, its downloads."""
    entry, index = logged.entry, logged.index
    body = entry.body
    items = [
        ("log index", str(index)),
        ("type", code(entry.type)),
        ("entry id", code(entry.identity.hex())),
        ("leaf hash", code(entry.leaf_hash.hex())),
    ]
    if isinstance(body, Release):
        items += _release_fields(site, body)
    elif isinstance(body, Revocation):
        at = f" (log index {logged.revoked_index})" if logged.revoked_index is not None else ""
        items += [
            ("vendor", _vendor_link(site, body.vendor)),
            (
                "revokes",
                f'<a href="{site.url("entry/" + body.release_id)}">'
                f"{code(body.release_id)}</a>{e(at)}",
            ),
            ("reason", e(body.reason)),
            ("advisory", _uri(body.advisory) if body.advisory else "none"),
        ]
    elif isinstance(body, KeySet | VendorAdmission):
        serial = body.serial if isinstance(body, KeySet) else 1
        items += [
            ("vendor", _vendor_link(site, body.vendor)),
            ("key set serial", str(serial)),
            ("threshold", f"{body.threshold} of {len(body.keys)}"),
            ("keys", _keys(body.keys)),
        ]
    items.append(("signed by", "<br>".join(code(s.key) for s in entry.signatures)))
    parts = [f"<h1>{e(_title(entry))}</h1>"]
    if logged.revocations:
        by = ", ".join(_entry_link(site, i) for i, _ in logged.revocations)
        parts.append(f'<p class="revoked" id="revoked">Revoked by its vendor: see {by}.</p>')
    parts.append(fields(items))
    if isinstance(body, Release):
        parts.append('<h2 id="revocations">Revocations</h2>')
        rows = [
            (
                _entry_link(site, i),
                e(r.body.reason) if isinstance(r.body, Revocation) else "",
                _uri(r.body.advisory) if isinstance(r.body, Revocation) and r.body.advisory else "",
            )
            for i, r in logged.revocations
        ]
        parts.append(
            table(
                ("log index", "reason", "advisory"),
                rows,
                "Not revoked: no revocation of this release is logged.",
            )
        )
    parts.append(f"""<h2>Download</h2><ul>
<li><a id="download-note" download="firmlog-entry-{index}.note"
 href="{site.url(f"entry/{index}/note")}">the entry (signed note)</a></li>
<li><a id="download-bundle" download="firmlog-entry-{index}.tlog-proof"
 href="{site.url(f"v1/bundle/{index}")}">its proof bundle (.tlog-proof)</a>, against the
 latest checkpoint</li>
<li><a href="{site.url("v1/entries", start=index, end=index + 1)}">the entry as JSON</a></li>
</ul>
<h2>Signed text</h2><pre>{e(entry.text)}</pre>""")
    return site.frame(_title(entry), "\n".join(parts))


def render_vendor(
    site: Site, vendor: str, history: Sequence[KeySetRow], releases: Sequence[Listed]
) -> str:
    """A vendor: its key history (admission, then rotations) and its latest releases."""
    current = history[-1]
    rows = [
        (
            _entry_link(site, r.index),
            "admission" if i == 0 else "rotation",
            str(r.serial),
            f"{r.threshold} of {len(r.keys)}",
            _keys(r.keys),
        )
        for i, r in enumerate(history)
    ]
    body = f"""<h1>Vendor {e(vendor)}</h1>
{
        fields(
            [
                (
                    "current key set",
                    f"serial {current.serial}, since log index {_entry_link(site, current.index)}",
                ),
                ("threshold", f"{current.threshold} of {len(current.keys)} keys must sign"),
                ("keys", _keys(current.keys)),
            ]
        )
    }
<h2>Key history</h2>
{table(("log index", "event", "serial", "threshold", "keys"), rows, "")}
<h2>Latest releases</h2>
{releases_table(site, releases, "This vendor has logged no release yet.")}
<p>{_search_link(site, "All releases of " + vendor + "…", vendor=vendor)}</p>"""
    return site.frame(vendor, body)


def render_keys(site: Site, info: Mapping[str, object], checkpoint: bytes | None) -> str:
    """Who this log is (GET /v1/log): origin, log key, operator keys, witness policy."""
    operators = info.get("operator_keys")
    policy = info.get("witness_policy")
    note = e(checkpoint.decode("utf-8", "replace")) if checkpoint else "(none yet)"
    log_key = str(info.get("log_key", ""))
    body = f"""<h1>The log's keys</h1>
{
        fields(
            [
                ("origin", code(info.get("origin", ""))),
                ("log key", f'<span id="log-key">{code(log_key)}</span>'),
                (
                    "operator keys",
                    _keys([str(k) for k in operators]) if isinstance(operators, list) else "",
                ),
            ]
        )
    }
<p>The log key signs every checkpoint; operator keys admit vendors. For a trust policy
(<code>firmlog verify --policy</code>): <code>log {e(log_key)}</code></p>
<h2>Witness policy</h2>
{
        f"<pre>{e(policy)}</pre>"
        if isinstance(policy, str)
        else '<p class="muted">None: this log publishes checkpoints without witnesses.</p>'
    }
<h2>Latest checkpoint</h2><pre>{note}</pre>
<p>As JSON: <a href="{site.url("v1/log")}">/v1/log</a>.</p>"""
    return site.frame("keys", body)


def render_check(site: Site) -> str:
    """Is this file logged? By file (hashed in the browser) or by a digest typed in."""
    body = f"""<h1>Is this file logged?</h1>
{_file_check(site)}
<h2>Or give its digest</h2>
<form class="search" method="get" action="{site.url("search")}">
<label>Image SHA-256<input type="search" name="image_sha256" placeholder="64 hex digits"
 autocomplete="off" spellcheck="false"></label>
<div><button type="submit">Search</button></div></form>"""
    return site.frame("is this file logged?", body, script=True)


def render_error(site: Site, status: int, message: str) -> str:
    body = f'<h1>{status}</h1><p class="error">{e(message)}</p>'
    return site.frame(f"error {status}", body)
