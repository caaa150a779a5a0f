"""Loading a generated population (`lac-adapter fixtures generate`) into any FHIR R4 server.

Each child's transaction Bundles (in `children/<first>-<last>.zip`, `NNNNNN/fhir/NN-*.json`)
are POSTed in order, since later ones refer to what earlier ones created; children are
independent, so several load at once (`workers` threads, each with its own HTTP session).
At most a few children are read from the archives ahead of the senders: memory stays flat
whatever the size of the population.

Resumable: a child is written to the journal (`.load-<target hash>.done` in the population
folder, one child key a line) only when all its Bundles went through, and a later run skips
the children in it. A child interrupted half-way is sent again from its first Bundle: every
entry is a conditional create or update on business identifiers (and JSON Patches already
applied are not re-sent), so nothing is duplicated.
"""

from __future__ import annotations

import hashlib
import threading
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class LoadSummary:
    loaded: int = 0          # children with at least one change
    already: int = 0         # children whose Bundles changed nothing (all there before)
    skipped: int = 0         # children in the journal from an earlier run
    failed: list[tuple[str, str]] = field(default_factory=list)  # (child/bundle, reason)

    def reasons(self) -> Counter:
        return Counter(reason for _, reason in self.failed)


def is_population(folder: Path) -> bool:
    return (folder / "manifest.json").is_file() and (folder / "children").is_dir()


def journal_path(folder: Path, target: str) -> Path:
    return folder / f".load-{hashlib.sha256(target.rstrip('/').encode()).hexdigest()[:12]}.done"


def children(folder: Path) -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """(child key, its Bundles in load order) for every child, archive by archive."""
    for archive in sorted((folder / "children").glob("*.zip")):
        with zipfile.ZipFile(archive) as zf:
            by_child: dict[str, list[str]] = {}
            for name in zf.namelist():
                parts = name.split("/")
                if len(parts) == 3 and parts[1] == "fhir" and parts[2].endswith(".json"):
                    by_child.setdefault(parts[0], []).append(name)
            for key in sorted(by_child):
                yield key, [(name, zf.read(name)) for name in sorted(by_child[key])]


def count_children(folder: Path) -> int:
    total = 0
    for archive in sorted((folder / "children").glob("*.zip")):
        with zipfile.ZipFile(archive) as zf:
            total += len({n.split("/")[0] for n in zf.namelist() if "/fhir/" in n})
    return total


class PopulationLoader:
    def __init__(self, folder: Path, target: str, make_sender: Callable[[], object], workers: int = 4):
        """`make_sender()` gives one sender per thread, with `load_bytes(bundle) -> bool` that
        raises on failure (adapter/cli_fixtures.py _TargetLoader)."""
        self.folder = folder
        self.target = target
        self.make_sender = make_sender
        self.workers = max(1, workers)
        self.journal = journal_path(folder, target)
        self._local = threading.local()
        self._lock = threading.Lock()

    def done_before(self) -> set[str]:
        if not self.journal.exists():
            return set()
        return {line.strip() for line in self.journal.read_text().splitlines() if line.strip()}

    def run(self, on_child: Callable[[str], None] = lambda key: None) -> LoadSummary:
        summary = LoadSummary()
        done = self.done_before()
        with open(self.journal, "a", encoding="ascii") as journal, \
                ThreadPoolExecutor(self.workers, thread_name_prefix="load") as pool:
            pending: set[Future] = set()
            for key, bundles in children(self.folder):
                if key in done:
                    summary.skipped += 1
                    on_child(key)
                    continue
                if len(pending) >= self.workers * 2:  # read ahead a little, not the whole population
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    self._collect(finished, summary, journal, on_child)
                pending.add(pool.submit(self._load_child, key, bundles))
            finished, _ = wait(pending)
            self._collect(finished, summary, journal, on_child)
        return summary

    def _collect(self, finished, summary: LoadSummary, journal, on_child) -> None:
        for future in finished:
            key, changed, failure = future.result()
            if failure is None:
                journal.write(key + "\n")
                journal.flush()
                if changed:
                    summary.loaded += 1
                else:
                    summary.already += 1
            else:
                summary.failed.append(failure)
            on_child(key)

    def _load_child(self, key: str, bundles: list[tuple[str, bytes]]):
        sender = getattr(self._local, "sender", None)
        if sender is None:
            sender = self._local.sender = self.make_sender()
        changed = False
        for name, data in bundles:
            try:
                changed = sender.load_bytes(data) or changed
            except Exception as exc:  # noqa: BLE001 - reported per child; the others go on
                return key, changed, (name, _reason(exc))
        return key, changed, None


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
