"""The page for people: log state, recent releases, vendors, and "is this file logged?".

One server-rendered HTML page at ``/``; everything on it is escaped. The
file check hashes the file in the browser (Web Crypto) and asks
``/v1/releases?image_sha256=``: the file never leaves the machine.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from firmlog.client.entries import Release
from firmlog.server.storage import KeySetRow

_STYLE = """
body{font:15px/1.5 system-ui,sans-serif;max-width:64rem;margin:2rem auto;padding:0 1rem;color:#222}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}
code,pre{font:13px ui-monospace,monospace;background:#f4f4f4;padding:.1rem .3rem}
pre{padding:.6rem;overflow-x:auto}table{border-collapse:collapse;width:100%}
td,th{text-align:left;padding:.25rem .5rem;border-bottom:1px solid #ddd;vertical-align:top}
.revoked{color:#b00020;font-weight:600}#result{margin-top:.5rem;font-weight:600}
"""

_SCRIPT = """
document.getElementById('file').addEventListener('change', async (ev) => {
  const out = document.getElementById('result');
  const file = ev.target.files[0];
  if (!file) return;
  out.textContent = 'hashing ' + file.name + '…';
  const digest = await crypto.subtle.digest('SHA-256', await file.arrayBuffer());
  const hex = Array.from(new Uint8Array(digest)).map(b => b.toString(16).padStart(2, '0')).join('');
  const resp = await fetch('v1/releases?image_sha256=' + hex);
  const body = await resp.json();
  if (!resp.ok) { out.textContent = 'error: ' + body.error; return; }
  if (body.releases.length === 0) {
    out.textContent = 'sha256:' + hex + ' is NOT in this log.';
    return;
  }
  out.textContent = body.releases.map(r => 'sha256:' + hex + ' is ' + r.release.vendor + ' ' +
    r.release.product + ' ' + r.release.version + ' (log index ' + r.index + ')' +
    (r.revoked_by.length ? ' — REVOKED' : '')).join('; ');
});
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def render_page(
    origin: str,
    checkpoint: bytes | None,
    tree_size: int,
    releases: Sequence[tuple[int, Release, bool]],
    key_sets: Sequence[KeySetRow],
) -> str:
    """The whole page; ``releases`` are (index, release, revoked), newest first."""
    rows = "".join(
        f"<tr><td>{index}</td><td>{_e(r.vendor)}</td><td>{_e(r.product)}</td>"
        f"<td>{_e(r.version)}</td><td>{r.security_version}</td><td>{_e(r.channel)}</td>"
        f"<td><code>{_e(r.image.sha256[:16])}…</code></td>"
        f"<td>{'<span class=revoked>revoked</span>' if revoked else ''}</td></tr>"
        for index, r, revoked in releases
    )
    vendors: dict[str, list[KeySetRow]] = {}
    for row in key_sets:
        vendors.setdefault(row.vendor, []).append(row)
    vendor_rows = "".join(
        f"<tr><td><a href='v1/vendors/{_e(v)}'>{_e(v)}</a></td>"
        f"<td>{rows_[-1].threshold} of {len(rows_[-1].keys)}</td>"
        f"<td>{', '.join(str(r.index) for r in rows_)}</td></tr>"
        for v, rows_ in sorted(vendors.items())
    )
    note = _e(checkpoint.decode("utf-8", "replace")) if checkpoint else "(none yet)"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>firmlog: {_e(origin)}</title><style>{_STYLE}</style></head>
<body>
<h1>firmlog transparency log <code>{_e(origin)}</code></h1>
<p>{tree_size} entries. Every firmware release here is signed by its vendor, appended to
an RFC 6962 Merkle tree, and provable with a <code>.tlog-proof</code> bundle.
Machine interfaces: <a href="checkpoint">checkpoint</a>, tiles under <code>/tile/</code>,
JSON under <a href="v1/releases">/v1/</a>, <a href="metrics">metrics</a>.</p>
<h2>Latest checkpoint</h2><pre>{note}</pre>
<h2>Is this firmware file in the log?</h2>
<p><input type="file" id="file"> (hashed in your browser; the file is not uploaded)</p>
<div id="result"></div>
<h2>Recent releases</h2>
<table><tr><th>index</th><th>vendor</th><th>product</th><th>version</th>
<th>security version</th><th>channel</th><th>image</th><th></th></tr>{rows}</table>
<h2>Vendors</h2>
<table><tr><th>vendor</th><th>threshold</th><th>key sets at log index</th></tr>{vendor_rows}
</table>
<script>{_SCRIPT}</script>
</body></html>
"""
