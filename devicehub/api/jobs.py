"""
Jobs: one command to many devices over HTTP (CONTRACT §7, C{POST /commands}).

A job resolves its devices when it starts (a list, or the devices online then whose imei
has a prefix, or all of them), sends each the command through the api's L{Demand} with at
most C{inflight} unanswered at a time (L{devicehub.client.many.each}), and keeps each
device's outcome in the order of its devices. Jobs live in the api process that runs them:
at most L{MAX_RUNNING} at once; a finished job is kept for L{KEEP_FINISHED} seconds (the
newest L{MAX_FINISHED}); an api restart forgets every job, and the commands of a job that
was running are answered to nobody (docs/operations.md).
"""

import secrets
from collections import Counter
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from devicehub.client.many import DEFAULT_INFLIGHT, ERROR, Outcome, Pace, each, online
from devicehub.common.results import NO, OK, QUEUED, TIMEOUT

log = Logger()

MAX_DEVICES = 100_000
"""Most devices of one job (an C{imeis} list, or what a prefix or C{all} finds)."""
MAX_RUNNING = 16
"""Jobs running at once in one api process; one more is refused (429)."""
KEEP_FINISHED = 3600.0
"""Seconds a finished job is kept for C{GET /jobs/{id}}."""
MAX_FINISHED = 100
"""Finished jobs kept at most (the oldest go first)."""
RESULTS = (OK, NO, TIMEOUT, QUEUED, ERROR)
"""The results a job counts."""


class TooManyJobs(Exception):
    """L{MAX_RUNNING} jobs run already."""


class Job:
    """One command to many devices, and each device's outcome as it comes."""

    def __init__(self, id: str, imeis: list[str], command: dict[str, Any], started: float) -> None:
        self.id = id
        self.imeis = imeis
        self.command = command
        self.started = started
        self.finished: float | None = None
        self.outcomes: list[Outcome | None] = [None] * len(imeis)
        self.counts: Counter[str] = Counter()
        self.order: list[int] = []
        """Indexes of the devices in the order their outcomes came: the event stream's order."""
        self.listeners: set[Callable[[int | None], None]] = set()
        """Called with the index of each new outcome, then with None when the job is done."""

    @property
    def state(self) -> str:
        return "running" if self.finished is None else "done"

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state, "devices": len(self.imeis),
                "results": {result: self.counts[result] for result in RESULTS}}

    def page(self, num: int, page: int) -> list[dict[str, Any]]:
        """Page C{page} of the devices' outcomes, in the order of the devices (C{result} null: not yet)."""
        start = num * page
        return [outcome if outcome is not None else {"imei": imei, "result": None}
                for imei, outcome in zip(self.imeis[start:start + num], self.outcomes[start:start + num])]

    def record(self, index: int, outcome: Outcome) -> None:
        self.outcomes[index] = outcome
        self.counts[outcome["result"]] += 1
        self.order.append(index)
        for listener in list(self.listeners):
            listener(index)

    def finish(self, now: float) -> None:
        self.finished = now
        for listener in list(self.listeners):
            listener(None)


class Jobs:
    """The jobs of one api process."""

    def __init__(self, clock, demand: Callable[[], Any], inflight: int = DEFAULT_INFLIGHT) -> None:
        """@param demand: gives the api's L{devicehub.client.demand.Demand} (made when the service starts)."""
        self.clock = clock
        self.demand = demand
        self.inflight = inflight
        self.jobs: dict[str, Job] = {}
        self.running: set[Deferred] = set()

    def get(self, id: str) -> Job | None:
        self._forgetOld()
        return self.jobs.get(id)

    async def start(self, targets: dict[str, Any], command: dict[str, Any], queryTimeout: float) -> Job:
        """
        Resolve C{targets} (C{imeis}, C{prefix} or C{all}) and start the job.

        @raise TooManyJobs: L{MAX_RUNNING} jobs run already.
        @raise ValueError: more than L{MAX_DEVICES} devices.
        """
        if len(self.running) >= MAX_RUNNING:
            raise TooManyJobs(f"{MAX_RUNNING} jobs are running already")
        if "imeis" in targets:
            imeis = list(dict.fromkeys(targets["imeis"]))  # each device once
        else:
            imeis = await online(self.demand(), targets.get("prefix", ""), MAX_DEVICES, queryTimeout)
        if len(self.running) >= MAX_RUNNING:  # others started while the directory was read
            raise TooManyJobs(f"{MAX_RUNNING} jobs are running already")
        self._forgetOld()
        job = Job(secrets.token_hex(8), imeis, command, self.clock.seconds())
        self.jobs[job.id] = job
        run = Deferred.fromCoroutine(self._run(job))
        self.running.add(run)
        run.addBoth(self._ended, run)
        return job

    async def _run(self, job: Job) -> None:
        command, demand = job.command, self.demand()

        def send(imei: str):
            return demand.request(imei, command["instruct"], command["data"], command["timeout"],
                                  queue=command["queue"])

        pace = Pace(self.clock, lambda: demand.gettotal(timeout=5.0), self.inflight)
        try:
            await each(job.imeis, send, job.record, self.inflight, pace)
        except Exception as e:
            log.failure("A job failed half-way")
            for index, imei in enumerate(job.imeis):  # every device gets its one outcome, counts add up
                if job.outcomes[index] is None:
                    job.record(index, {"imei": imei, "result": ERROR, "error": f"the job failed: {e}"})
        finally:
            job.finish(self.clock.seconds())

    def _ended(self, result, run: Deferred) -> None:
        self.running.discard(run)

    def _forgetOld(self) -> None:
        now = self.clock.seconds()
        finished = sorted((job.finished, id) for id, job in self.jobs.items() if job.finished is not None)
        for index, (at, id) in enumerate(finished):
            if now - at > KEEP_FINISHED or index < len(finished) - MAX_FINISHED:
                del self.jobs[id]
