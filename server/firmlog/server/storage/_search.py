"""Release search SQL shared by both backends, composed only from fixed clauses.

No caller text ever reaches the SQL: filters choose among constant clauses,
values are bound parameters. ``placeholder(n)`` renders the n-th (1-based)
parameter in the backend's style (``?`` or ``$n``).
"""

from __future__ import annotations

from collections.abc import Callable

from firmlog.server.storage import ReleaseQuery

_FILTERS = (
    ("vendor", "r.vendor = {}"),
    ("product", "r.product = {}"),
    ("version", "r.version = {}"),
    ("image_sha256", "r.image_sha256 = {}"),
    ("cve", "r.idx IN (SELECT f.idx FROM release_fixes AS f WHERE f.cve = {})"),
)


def release_search(
    query: ReleaseQuery,
    cursor: int,
    limit: int,
    placeholder: Callable[[int], str],
    newest_first: bool = False,
) -> tuple[str, list[object]]:
    """SQL and parameters selecting ``(idx, data)`` of matching releases.

    Oldest first: indexes above ``cursor``; newest first: indexes below it.
    """
    params: list[object] = [cursor]
    clauses = [f"r.idx {'<' if newest_first else '>'} {placeholder(1)}"]
    for field, clause in _FILTERS:
        value = getattr(query, field)
        if value is not None:
            params.append(value)
            clauses.append(clause.format(placeholder(len(params))))
    params.append(limit)
    # Constant clauses only; every value is a bound parameter.
    sql = (
        "SELECT r.idx, e.data FROM releases AS r JOIN entries AS e ON e.idx = r.idx"  # noqa: S608
        f" WHERE {' AND '.join(clauses)} ORDER BY r.idx {'DESC' if newest_first else 'ASC'}"
        f" LIMIT {placeholder(len(params))}"
    )
    return sql, params


def join_keys(keys: tuple[str, ...]) -> str:
    """Key sets are stored as newline-separated vkeys (a vkey has no newline)."""
    return "\n".join(keys)


def split_keys(text: str) -> tuple[str, ...]:
    return tuple(text.split("\n"))
