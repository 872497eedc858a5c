"""An in-memory Merkle tree for tests: every complete subtree, built by pairing."""

from __future__ import annotations

from collections.abc import Sequence

from firmlog.client.merkle import node_hash


class LevelsReader:
    """In-memory HashReader over every complete subtree of a list of leaf hashes.

    Built level by level by pairing (independently of CompactRange). ``at(n)``
    gives a view of the tree of size ``n`` that refuses to read a subtree not
    complete at ``n``, so a prover that peeks beyond the tree fails loudly.
    """

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        self.levels: list[list[bytes]] = [list(leaf_hashes)]
        while len(self.levels[-1]) > 1:
            below = self.levels[-1]
            self.levels.append(
                [node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
            )

    def at(self, tree_size: int) -> SizedView:
        assert tree_size <= len(self.levels[0])
        return SizedView(self, tree_size)


class SizedView:
    def __init__(self, tree: LevelsReader, tree_size: int) -> None:
        self.tree = tree
        self.tree_size = tree_size
        self.calls = 0
        self.coords: list[tuple[int, int]] = []

    def read_hashes(self, coords: Sequence[tuple[int, int]]) -> list[bytes]:
        self.calls += 1
        self.coords.extend(coords)
        out = []
        for level, index in coords:
            if level < 0 or index < 0 or (index + 1) << level > self.tree_size:
                raise KeyError(f"({level}, {index}) is not complete at size {self.tree_size}")
            out.append(self.tree.levels[level][index])
        return out
