"""The output folder is the run state: any number of processes (local runs, array jobs with ``--shard``, tasks
of a cluster) can work on one output folder at once, and a crashed one is taken over. docs/run-state.md
describes the layout and the protocol; in short:

- ``.state/settings.json``: the output-affecting settings and the model's fingerprint the folder's windows are
  made with. A run with other ones stops (``SettingsMismatch``), unless ``--overwrite``.
- ``.state/claims/<window id>.json``: a window being computed, and by whom. Claims are taken, checked and
  released under one lock (``.state/lock``, ``flock``), so no window is computed by two processes at once.
- ``.state/leases/<run id>.json``: each run's lease, renewed by a heartbeat thread. A claim whose run's lease has
  expired is stale; on the claimer's own machine, a claim of a process that is gone is stale at once.
- ``.state/outcomes/<window id>.json``: each window's latest outcome (``<sequence>/sequence.json`` for a
  sequence that cannot be read), with the window's fingerprint. A window is finished when its outcome is ok
  (and its folder exists) or dropped, with the fingerprint of this run's plan.
- ``runs/<run id>.jsonl``: each run's own log of outcomes, ``manifest.jsonl``: every window's latest outcome,
  rebuilt from ``.state/outcomes`` at the end of each run, and ``summary.json``.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from .export.window_folder import owner, pid_alive, remove_window_folder
from .jobs import (
    CLAIMED_ELSEWHERE,
    DROPPED,
    FAILED,
    FINISHED,
    OK,
    SKIPPED,
    Taken,
    WindowJob,
    WindowOutcome,
    iso_utc,
    window_folder,
)
from .storage import writing

STATE_FOLDER = ".state"
RUNS_FOLDER = "runs"
MANIFEST = "manifest.jsonl"
SUMMARY = "summary.json"
LEASE_S = 60.0
HEARTBEAT_S = 10.0
SEQUENCE_RECORD = "sequence.json"

log = logging.getLogger(__name__)


class SettingsMismatch(ValueError):
    """The output folder holds windows made with other output-affecting settings or another model."""


def new_run_id() -> str:
    """Time (to the microsecond: one process may run several times), host and process: unique among the runs
    that share an output folder, and sortable by start."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S.%fZ}-{socket.gethostname()}-{os.getpid()}"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old content or the new, never a part.

    Raises ``OutputError`` naming ``path`` if it cannot be written (a full disk, ...)."""
    partial = path.with_name(f".{path.name}.{threading.get_ident()}.partial-{owner()}")
    with writing(path, any_error=True):
        try:
            partial.write_text(text)
            os.replace(partial, path)
        except OSError:
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
            raise


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None  # being replaced, or left damaged by a crash: as good as absent


def outcome_from_record(record: dict[str, Any]) -> WindowOutcome:
    known = {f.name for f in fields(WindowOutcome)}
    return WindowOutcome(**{k: v for k, v in record.items() if k in known})


@dataclass(frozen=True)
class Claim:
    """Who computes a window: a run (process ``pid`` on ``host``)."""

    run_id: str
    host: str
    pid: int

    def describe(self) -> str:
        return f"run {self.run_id} (pid {self.pid} on {self.host})"


@dataclass
class ClaimResult:
    """What ``RunState.claim`` found: ``claimed`` (this run computes it), ``finished`` (with the outcome), or
    ``elsewhere`` (with the claim of the process computing it)."""

    status: str
    outcome: WindowOutcome | None = None
    holder: Claim | None = None


@dataclass
class FolderCounts:
    """The output folder's windows by their latest outcome, as ``summary.json`` reports them."""

    windows: int = 0
    written: int = 0
    failed: int = 0
    dropped: int = 0
    pending: int = 0
    sequences_failed: int = 0


class RunState:
    """One run's view of the shared run state in ``output_dir`` (see the module docstring).

    Use as a context manager: entering starts the lease's heartbeat and clears what crashed runs left; leaving
    releases this run's claims and lease. Every method that writes the run state raises ``OutputError`` naming
    the file when it cannot (a full disk, a read-only file system, ...): the run cannot go on without it.
    """

    def __init__(self, output_dir: Path, run_id: str | None = None, lease_s: float = LEASE_S):
        self.output_dir = Path(output_dir)
        self.run_id = run_id or new_run_id()
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.lease_s = lease_s
        self.started = time.time()
        self.state_dir = self.output_dir / STATE_FOLDER
        self._held: set[str] = set()
        self._held_lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._log = None

    # -- life of a run -------------------------------------------------------------------------------------

    @writing(any_error=True)
    def __enter__(self) -> "RunState":
        try:
            for folder in ("claims", "leases", "outcomes"):
                (self.state_dir / folder).mkdir(parents=True, exist_ok=True)
            (self.output_dir / RUNS_FOLDER).mkdir(exist_ok=True)
            self._renew_lease()
            self._log = open(self.output_dir / RUNS_FOLDER / f"{self.run_id}.jsonl", "a")
            self._heartbeat = threading.Thread(target=self._beat, name="run-state-heartbeat", daemon=True)
            self._heartbeat.start()
            with self.locked():
                self._remove_stale_claims_and_leases()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Release this run's claims and lease, as far as the storage allows: whatever stays behind is stale once
        this process is gone, and an error here must not hide the one that stopped the run."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        with self._held_lock:
            held, self._held = set(self._held), set()
        if held:
            with contextlib.suppress(OSError), self.locked():
                for window_id in held:
                    self._claim_path(window_id).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            (self.state_dir / "leases" / f"{self.run_id}.json").unlink(missing_ok=True)
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive access to the run state among every process sharing the output folder."""
        with open(self.state_dir / "lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _renew_lease(self) -> None:
        lease = {"run_id": self.run_id, "host": self.host, "pid": self.pid, "expires_at": time.time() + self.lease_s}
        write_atomic(self.state_dir / "leases" / f"{self.run_id}.json", json.dumps(lease) + "\n")

    def _beat(self) -> None:
        warned = False
        while not self._stop.wait(min(HEARTBEAT_S, self.lease_s / 3)):
            try:
                self._renew_lease()
            except OSError as exc:  # the run's own next write stops it; until then, keep trying
                if not warned:
                    log.warning("this run's lease cannot be renewed (%s); other runs may take over its windows once "
                                "it expires", exc)
                    warned = True

    # -- settings ------------------------------------------------------------------------------------------

    @writing(any_error=True)
    def adopt_settings(self, settings: dict[str, Any], model_source: str, overwrite: bool,
                       describe: Callable[[str, Any], str]) -> None:
        """Check this run's output-affecting ``settings`` against those the folder's windows were made with.

        A difference stops the run with ``SettingsMismatch`` naming it (``describe(name, value)`` writes a setting
        as a flag), unless ``overwrite`` or nothing was made yet; then these settings become the folder's.
        """
        path = self.state_dir / "settings.json"
        with self.locked():
            recorded = _read_json(path)
            if recorded is not None and recorded["settings"] != settings and not overwrite and self._anything_made():
                raise SettingsMismatch(self._difference(recorded, settings, model_source, describe))
            if recorded is None or recorded["settings"] != settings or recorded["model_source"] != model_source:
                record = {"settings": settings, "model_source": model_source, "recorded_by": self.run_id}
                write_atomic(path, json.dumps(record, indent=2) + "\n")

    def _anything_made(self) -> bool:
        """Whether some window has an outcome, or another live run may be making one."""
        if next((self.state_dir / "outcomes").rglob("*.json"), None) is not None:
            return True
        return any(
            lease.get("run_id") != self.run_id and self._lease_alive(lease)
            for lease in map(_read_json, (self.state_dir / "leases").glob("*.json")) if lease
        )

    def _difference(self, recorded: dict[str, Any], settings: dict[str, Any], model_source: str,
                    describe: Callable[[str, Any], str]) -> str:
        old = recorded["settings"]
        name = next(name for name in [*settings, *old] if settings.get(name) != old.get(name))
        if name == "model":
            ours = f"--model {model_source} (weights {settings.get('model')})"
            theirs = f"{recorded['model_source']} (weights {old.get('model')})"
        else:
            ours, theirs = describe(name, settings.get(name)), describe(name, old.get(name))
            flag = ours.split(" ")[0]
            theirs = theirs.removeprefix(flag + " ")  # "--window-size 4 differs from 8"
        return (f"{ours} differs from {theirs} used for {self.output_dir}; pass --overwrite to redo the windows, or "
                "choose another --output-dir")

    # -- claims --------------------------------------------------------------------------------------------

    @writing(any_error=True)
    def claim(self, job: WindowJob, redo_finished_before: float | None = None) -> ClaimResult:
        """Claim ``job`` for this run unless it is finished with its fingerprint or another live process holds it.

        ``redo_finished_before`` (``--overwrite``: this run's start) makes windows finished before that time count
        as not finished, while those that concurrent runs finished since are kept.
        """
        with self.locked():
            finished = self.finished(job, redo_finished_before)
            if finished is not None:
                return ClaimResult("finished", outcome=finished)
            holder = self._live_claim(job.window_id)
            if holder is not None and holder.run_id != self.run_id:
                return ClaimResult("elsewhere", holder=holder)
            claim = {"run_id": self.run_id, "host": self.host, "pid": self.pid, "claimed_at": time.time()}
            path = self._claim_path(job.window_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, json.dumps(claim) + "\n")
        with self._held_lock:
            self._held.add(job.window_id)
        return ClaimResult("claimed")

    @writing(any_error=True)
    def release(self, window_id: str) -> None:
        """Give up this run's claim of a window it will not finish."""
        with self._held_lock:
            if window_id not in self._held:
                return
            self._held.discard(window_id)
        with self.locked():
            self._drop_own_claim(window_id)

    def _claim_path(self, window_id: str) -> Path:
        return self.state_dir / "claims" / f"{window_id}.json"

    def _drop_own_claim(self, window_id: str) -> None:
        path = self._claim_path(window_id)
        claim = _read_json(path)
        if claim is not None and claim.get("run_id") == self.run_id:
            path.unlink(missing_ok=True)

    def _live_claim(self, window_id: str) -> Claim | None:
        claim = _read_json(self._claim_path(window_id))
        if claim is None:
            return None
        holder = Claim(claim["run_id"], claim["host"], int(claim["pid"]))
        return holder if self._claim_alive(holder) else None

    def _claim_alive(self, holder: Claim) -> bool:
        if holder.run_id == self.run_id:
            return True
        if holder.host == self.host and not pid_alive(holder.pid):
            return False
        lease = _read_json(self.state_dir / "leases" / f"{holder.run_id}.json")
        return lease is not None and self._lease_alive(lease)

    def _lease_alive(self, lease: dict[str, Any]) -> bool:
        if lease.get("host") == self.host and not pid_alive(int(lease.get("pid", 0))):
            return False
        return float(lease.get("expires_at", 0)) > time.time()

    def _remove_stale_claims_and_leases(self) -> None:
        for path in (self.state_dir / "leases").glob("*.json"):
            lease = _read_json(path)
            if lease is not None and not self._lease_alive(lease):
                path.unlink(missing_ok=True)
        for path in (self.state_dir / "claims").rglob("*.json"):
            claim = _read_json(path)
            if claim is not None and not self._claim_alive(Claim(claim["run_id"], claim["host"], int(claim["pid"]))):
                path.unlink(missing_ok=True)

    # -- outcomes ------------------------------------------------------------------------------------------

    def _outcome_path(self, window_id: str, is_sequence: bool = False) -> Path:
        if is_sequence:
            return self.state_dir / "outcomes" / window_id / SEQUENCE_RECORD
        return self.state_dir / "outcomes" / f"{window_id}.json"

    @writing(any_error=True)
    def finished(self, job: WindowJob, redo_finished_before: float | None = None) -> WindowOutcome | None:
        """The outcome that finished ``job`` with its fingerprint (ok with its folder on disk, or dropped), if any.

        A folder whose ``window.json`` has the fingerprint counts too: its run stopped between writing the folder
        and recording the outcome, which is recorded now from ``window.json``.
        """
        outcome = self._read_outcome(job.window_id)
        if outcome is not None and outcome.fingerprint == job.fingerprint and outcome.status in FINISHED:
            if outcome.status != OK or job.folder(self.output_dir).is_dir():
                return outcome if self._kept(outcome, redo_finished_before) else None
        window_json_path = job.folder(self.output_dir) / "window.json"
        window_json = _read_json(window_json_path)
        if window_json is not None and window_json.get("fingerprint") == job.fingerprint:
            outcome = WindowOutcome.for_job(
                job, OK,
                ba=window_json.get("ba"), ba_reason=window_json.get("ba_reason"),
                verdict=window_json.get("verdict"), verdict_reason=window_json.get("verdict_reason"),
                metrics=window_json.get("metrics") or {},
                finished_at=iso_utc(window_json_path.stat().st_mtime),
            )
            if not self._kept(outcome, redo_finished_before):
                return None
            # Not under the lock: callers may hold it, and any process repairing this record writes the same.
            path = self._outcome_path(job.window_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, json.dumps(asdict(outcome)) + "\n")
            return outcome
        return None

    @staticmethod
    def _kept(outcome: WindowOutcome, redo_finished_before: float | None) -> bool:
        if redo_finished_before is None:
            return True
        finished_at = datetime.fromisoformat(outcome.finished_at.replace("Z", "+00:00")).timestamp()
        return finished_at >= redo_finished_before

    def _read_outcome(self, window_id: str, is_sequence: bool = False) -> WindowOutcome | None:
        record = _read_json(self._outcome_path(window_id, is_sequence))
        return outcome_from_record(record) if record is not None else None

    @writing(any_error=True)
    def record(self, outcome: WindowOutcome) -> WindowOutcome:
        """Note what happened to a window in this run's log and, unless it was skipped or claimed elsewhere, as
        its latest outcome; a failed or dropped window keeps no folder from an earlier run. Releases this run's
        claim of it.

        A failure never replaces an outcome that finished the window with the same fingerprint: that happens
        only if this run lost its claim (its lease ran out while it was stopped) and another run finished the
        window meanwhile.
        """
        outcome.run_id = outcome.run_id or self.run_id
        if outcome.status not in (SKIPPED, CLAIMED_ELSEWHERE):
            is_sequence = outcome.window is None
            with self.locked():
                latest = self._read_outcome(outcome.window_id, is_sequence)
                superseded = (outcome.status == FAILED and latest is not None and latest.status in FINISHED
                              and latest.fingerprint == outcome.fingerprint and latest.run_id != self.run_id)
                if not superseded:
                    if not is_sequence and outcome.status != OK:
                        remove_window_folder(
                            self.output_dir / window_folder(outcome.sequence, outcome.batch, outcome.window))
                    path = self._outcome_path(outcome.window_id, is_sequence)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    write_atomic(path, json.dumps(asdict(outcome)) + "\n")
                self._drop_own_claim(outcome.window_id)
            with self._held_lock:
                self._held.discard(outcome.window_id)
        with writing(self._log.name, any_error=True):
            self._log.write(json.dumps(asdict(outcome)) + "\n")
            self._log.flush()
        return outcome

    @writing(any_error=True)
    def forget_sequence_failures(self, failing: set[str]) -> None:
        """Remove the failure lines of sequences that are no longer failing (readable now, or gone)."""
        outcomes = self.state_dir / "outcomes"
        with self.locked():
            for path in outcomes.rglob(SEQUENCE_RECORD):
                if path.parent.relative_to(outcomes).as_posix() not in failing:
                    path.unlink(missing_ok=True)

    @writing(any_error=True)
    def remove_unplanned(self, planned: list[WindowJob]) -> list[str]:
        """``--overwrite``: remove window folders and outcomes of windows the new plan does not have (another
        window size, a removed input). Returns the removed folders, relative to the output folder."""
        planned_folders = {job.relative_folder for job in planned}
        planned_ids = {job.window_id for job in planned}
        removed = []
        with self.locked():
            for folder in _window_folders(self.output_dir):
                relative = folder.relative_to(self.output_dir).as_posix()
                if relative not in planned_folders:
                    remove_window_folder(folder)
                    removed.append(relative)
                    with contextlib.suppress(OSError):
                        folder.parent.rmdir()  # its batch folder, once empty
            outcomes = self.state_dir / "outcomes"
            for path in outcomes.rglob("*.json"):
                if path.name == SEQUENCE_RECORD:
                    continue
                window_id = path.relative_to(outcomes).with_suffix("").as_posix()
                if window_id not in planned_ids:
                    path.unlink(missing_ok=True)
        return removed

    # -- manifest and summary ------------------------------------------------------------------------------

    def outcomes(self) -> list[WindowOutcome]:
        """Every window's (and unreadable sequence's) latest outcome, by sequence and window."""
        found = [outcome_from_record(r) for r in map(_read_json, (self.state_dir / "outcomes").rglob("*.json")) if r]
        return sorted(found, key=lambda o: (o.sequence, -1 if o.window is None else o.window))

    @writing(any_error=True)
    def write_manifest(self, planned: list[WindowJob],
                       summarize: Callable[[FolderCounts], dict[str, Any]]) -> FolderCounts:
        """Rebuild ``manifest.jsonl`` from every window's latest outcome and write ``summary.json`` as
        ``summarize`` makes it from the folder's counts (over ``planned``, every shard's windows, and the outcomes
        on disk). Under the lock, so the run that finishes last writes both from everything on disk."""
        with self.locked():
            recorded = {o.window_id: o.fingerprint for o in self.outcomes()}
            for job in planned:
                if recorded.get(job.window_id, "") != job.fingerprint:
                    self.finished(job)  # records a folder whose run stopped before recording it
            outcomes = self.outcomes()
            write_atomic(self.output_dir / MANIFEST, "".join(json.dumps(asdict(o)) + "\n" for o in outcomes))
            counts = self._count(planned, outcomes)
            write_atomic(self.output_dir / SUMMARY, json.dumps(summarize(counts), indent=2) + "\n")
        return counts

    def _count(self, planned: list[WindowJob], outcomes: list[WindowOutcome]) -> FolderCounts:
        """Each window once: by its latest outcome when that is current (made with the window's fingerprint in
        ``planned``, or a failure), else pending."""
        latest = {o.window_id: o for o in outcomes if o.window is not None}
        expected = {job.window_id: job.fingerprint for job in planned}
        counts = FolderCounts(sequences_failed=sum(o.window is None and o.status == FAILED for o in outcomes))
        for window_id in expected.keys() | latest.keys():
            counts.windows += 1
            outcome = latest.get(window_id)
            fingerprint = expected.get(window_id)
            if outcome is None or (fingerprint is not None and outcome.fingerprint != fingerprint
                                   and outcome.status != FAILED):
                counts.pending += 1
            elif outcome.status == FAILED:
                counts.failed += 1
            elif outcome.status == DROPPED:
                counts.dropped += 1
            elif (self.output_dir / outcome.folder).is_dir():
                counts.written += 1
            else:
                counts.pending += 1
        return counts


def _window_folders(output_dir: Path) -> Iterator[Path]:
    """Every finished window folder (``<sequence>/batch_NNN/window_NNN``) under ``output_dir``."""
    for folder, subfolders, _ in os.walk(output_dir):
        here = Path(folder)
        descend = []
        for name in subfolders:
            if name.startswith(".") or (here == output_dir and name == RUNS_FOLDER):
                continue
            if name.startswith("window_") and here.name.startswith("batch_"):
                yield here / name
            else:
                descend.append(name)
        subfolders[:] = descend


class ClaimedJobs:
    """This run's windows, claimed a batch at a time (a ``JobSource``).

    ``take(count)`` claims the next windows in plan order, up to ``count`` of one sequence: a batch never spans two
    sequences, so every executor forms the same batches from the same claims (the local one claims each batch
    just before loading it, the Ray one a pass at a time) and a sequence's frames are decoded in one place.
    Windows finished meanwhile (by a concurrent run) are passed over as skipped. A window another live process
    holds is passed over too, and looked at once more after all the others (the second pass): if its claimer
    has died or finished it meanwhile, this run takes it or skips it; else it is logged as claimed elsewhere.
    """

    def __init__(self, state: RunState, jobs: list[WindowJob], redo_finished_before: float | None = None):
        self.jobs = list(jobs)
        self._state = state
        self._redo = redo_finished_before
        self._queue = collections.deque(self.jobs)
        self._deferred: list[WindowJob] = []
        self._revisiting = False

    @property
    def pass_ended(self) -> bool:
        """Whether every window of the current pass has been handed out (the next ``take`` starts the second
        pass, or finds nothing)."""
        return not self._queue

    def take(self, count: int) -> Taken:
        taken = Taken([])
        if not self._queue and not self._revisiting and self._deferred:
            self._queue.extend(self._deferred)
            self._deferred, self._revisiting = [], True
        while self._queue and len(taken.claimed) < count:
            job = self._queue[0]
            if taken.claimed and job.sequence.name != taken.claimed[0].sequence.name:
                break
            self._queue.popleft()
            result = self._state.claim(job, self._redo)
            if result.status == "claimed":
                taken.claimed.append(job)
            elif result.status == "finished":
                if not self._revisiting:
                    taken.passed.append(job)
                reason = f"finished by run {result.outcome.run_id}" if result.outcome.run_id else "finished earlier"
                taken.outcomes.append(WindowOutcome.for_job(job, SKIPPED, reason=reason))
            elif not self._revisiting:
                taken.passed.append(job)
                self._deferred.append(job)
            else:
                reason = f"claimed by {result.holder.describe()}"
                taken.outcomes.append(WindowOutcome.for_job(job, CLAIMED_ELSEWHERE, reason=reason))
        return taken
