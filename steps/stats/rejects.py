"""Rejected inputs at any scale: a count per reason and the first few examples of each.

A shard sends the join its counts by reason and at most ``EXAMPLES_PER_REASON`` examples of each,
so a run of 10^4 shards still carries a small table; every reject stays in the shard manifests.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

EXAMPLES_PER_REASON = 3

# Reasons carry details after a colon, in parentheses or after a semicolon ("corrupt or truncated
# image data: broken data stream ..."); names of objects inside the text differ per key.
_DETAIL = re.compile(r"[:(;].*$")
_NAME = re.compile(r"\S*[/.]\S*")


def reason_kind(reason: str) -> str:
    """What a reason says without its per-key details: rejects are counted by this."""
    kind = _NAME.sub("…", _DETAIL.sub("", reason)).strip()
    return kind or reason or "unknown"


def count_reasons(reasons: Iterable[str]) -> tuple[tuple[str, int], ...]:
    """(kind, count), most frequent first, then by kind."""
    counts = Counter(reason_kind(r) for r in reasons)
    return tuple(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def first_examples(
    rejects: Iterable[tuple[str, str]], per_reason: int = EXAMPLES_PER_REASON
) -> tuple[tuple[str, str], ...]:
    """The first ``per_reason`` (key, reason) pairs of each kind, in input order."""
    seen: Counter[str] = Counter()
    kept = []
    for key, reason in rejects:
        kind = reason_kind(reason)
        if seen[kind] < per_reason:
            seen[kind] += 1
            kept.append((key, reason))
    return tuple(kept)


def merge_counts(parts: Sequence[Sequence[tuple[str, int]]]) -> tuple[tuple[str, int], ...]:
    total: Counter[str] = Counter()
    for part in parts:
        for kind, count in part:
            total[kind] += count
    return tuple(sorted(total.items(), key=lambda item: (-item[1], item[0])))
