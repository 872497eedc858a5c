"""A service's ``/metrics`` exposition, parsed with prometheus_client's own parser.

:class:`Samples` maps ``name`` or ``name{label="value",...}`` to the sample's
value, whatever the order of the labels in the key or in the exposition.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

_KEY = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?')

_Key = tuple[str, frozenset[tuple[str, str]]]


def _parse_key(key: str) -> _Key:
    found = _KEY.fullmatch(key)
    if found is None:
        raise KeyError(key)
    labels = frozenset(_LABEL.findall(found.group(2) or ""))
    return found.group(1), labels


class Samples(Mapping[str, float]):
    """Every sample of an exposition, by name and labels; ``families`` by family name."""

    def __init__(self, text: str) -> None:
        self.families: dict[str, Metric] = {}
        self._values: dict[_Key, float] = {}
        for family in text_string_to_metric_families(text):
            self.families[family.name] = family
            for sample in family.samples:
                self._values[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def __getitem__(self, key: str) -> float:
        return self._values[_parse_key(key)]

    def __iter__(self) -> Iterator[str]:
        for name, labels in self._values:
            pairs = ",".join(f'{k}="{v}"' for k, v in sorted(labels))
            yield f"{name}{{{pairs}}}" if pairs else name

    def __len__(self) -> int:
        return len(self._values)
