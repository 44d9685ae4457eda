"""
C{GET /jobs/{id}/events}: a job's outcomes as Server-Sent Events, one C{result} event per
device as it is answered (its C{id} its position in the stream, so a client that
reconnects with C{Last-Event-ID} gets the rest), then one C{done} event with the counts,
and the end of the response.
"""

from twisted.internet.defer import Deferred

from devicehub.api.jobs import Job
from devicehub.common.jsoncodec import dumps


def _event(kind: bytes, data: dict, id: int | None = None) -> bytes:
    head = b"" if id is None else b"id: %d\n" % id
    return head + b"event: " + kind + b"\ndata: " + dumps(data) + b"\n\n"


def streamJob(request, job: Job) -> "bytes | Deferred[bytes]":
    """Stream C{job}'s outcomes to C{request}; fires (with the last bytes) once the job is done."""
    request.setHeader(b"Content-Type", b"text/event-stream")
    request.setHeader(b"Cache-Control", b"no-cache")
    try:
        sent = int(request.getHeader(b"last-event-id") or b"-1") + 1
    except ValueError:
        sent = 0
    sent = max(0, sent)
    request.write(b": job " + job.id.encode() + b"\n\n")

    def catchUp() -> None:
        nonlocal sent
        while sent < len(job.order):
            request.write(_event(b"result", job.outcomes[job.order[sent]], sent))
            sent += 1

    catchUp()
    if job.finished is not None:
        return _event(b"done", job.summary())
    finished: Deferred[bytes] = Deferred(lambda _: job.listeners.discard(listener))  # cancelled: the client left

    def listener(index: int | None) -> None:
        catchUp()
        if index is None:
            job.listeners.discard(listener)
            finished.callback(_event(b"done", job.summary()))

    job.listeners.add(listener)
    return finished
