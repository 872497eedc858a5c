"""The pages for people: server-rendered HTML, a little script, no build step and
nothing loaded from elsewhere (the script and style are package data in
``static/``, served by the log).

- ``/`` log state, the file check, recent releases, vendors;
- ``/search`` releases by vendor, product, version, CVE and image digest (a GET
  form, so a search is a URL to share), paged with the ``/v1/releases`` cursor;
- ``/entry/{index or id or leaf hash}`` one entry in full, its revocations,
  its downloads (``/entry/{ref}/note`` and ``/v1/bundle/{index}``);
- ``/vendor/{vendor}`` a vendor's key history and latest releases;
- ``/keys`` the log's origin, log key, operator keys and witness policy;
- ``/check`` is this file logged? The browser hashes the file (Web Crypto, or
  ``static/sha256.js`` where there is none, as over plain HTTP) and looks the
  digest up in ``/v1/releases``: the file never leaves the machine.

Everything an entry or a request holds is escaped (:mod:`.views`); the pages
carry a Content-Security-Policy that runs script only from the log itself and
no inline script or style at all (:data:`.layout.HEADERS`). A page costs a
fixed number of storage queries, whatever it lists (:mod:`.data`).
"""

from firmlog.server.page.data import (
    Listed,
    LoggedEntry,
    key_history,
    list_releases,
    read_entry,
)
from firmlog.server.page.layout import HEADERS, Site, static_assets
from firmlog.server.page.views import (
    SearchForm,
    render_check,
    render_entry,
    render_error,
    render_home,
    render_keys,
    render_search,
    render_vendor,
)

__all__ = [
    "HEADERS",
    "Listed",
    "LoggedEntry",
    "SearchForm",
    "Site",
    "key_history",
    "list_releases",
    "read_entry",
    "render_check",
    "render_entry",
    "render_error",
    "render_home",
    "render_keys",
    "render_search",
    "render_vendor",
    "static_assets",
]
