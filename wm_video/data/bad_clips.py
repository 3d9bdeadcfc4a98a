"""Clips the loader could not read: the error that stops a run when too many are lost, and the per-worker account
of the losses (which shards, why), so the message names the worst shards instead of one traceback."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger("wm_video.data.loader")  # the loader's own log lines, where users look for them


class DataError(RuntimeError):
    """Too much of the data is unreadable to go on."""


@dataclass
class BadClips:
    """One worker's clips this epoch: ``seen`` delivered, ``bad`` lost, and the losses per shard."""

    seen: int = 0
    bad: int = 0
    by_shard: dict[str, list] = field(default_factory=dict)  # url -> [clips lost, last reason]

    def record(self, url: str, reason: str, clips: int = 1) -> None:
        self.bad += clips
        entry = self.by_shard.setdefault(url, [0, ""])
        entry[0] += clips
        entry[1] = reason
        log.warning("skipping %d clip%s of %s: %s", clips, "" if clips == 1 else "s", url, reason)

    def check(self, min_samples: int, max_fraction: float, final: bool = False) -> None:
        """Raise :class:`DataError` when more than ``max_fraction`` of the clips were lost (mid-epoch: once
        ``min_samples`` are accounted for; ``final``: at the end of the epoch, whatever the count)."""
        total = self.seen + self.bad
        if not total or (not final and total < min_samples):
            return
        if self.bad / total > max_fraction:
            worst = sorted(self.by_shard.items(), key=lambda kv: -kv[1][0])
            shards = "; ".join(f"{url}: {n} lost ({why})" for url, (n, why) in worst[:5])
            more = f"; and {len(worst) - 5} more shards" if len(worst) > 5 else ""
            raise DataError(f"{self.bad} of {total} clips unreadable (> max_bad_fraction={max_fraction}) "
                            f"in {len(worst)} shard{'' if len(worst) == 1 else 's'}: {shards}{more}")


def why_failed(e: Exception) -> str:
    """An exception in a line: webdataset appends `` @ <stream>`` and the stream and url to the arguments."""
    if isinstance(e, OSError) and e.strerror:
        return f"{type(e).__name__}: {e.strerror}"
    first = str(e.args[0]).split(" @ ")[0] if e.args else str(e)
    return f"{type(e).__name__}: {first}"


def worker_message(e: Exception) -> str | None:
    """The message a DataLoader worker raised ``e`` with, or None when ``e`` was raised here. DataLoader re-raises
    a worker's exception with the worker's traceback folded into the message, many lines where one is meant."""
    prefix, msg = f"{type(e).__module__}.{type(e).__qualname__}: ", str(e)
    if not msg.startswith("Caught ") or prefix not in msg:
        return None
    return msg.rsplit(prefix, 1)[1].strip()
