"""The in-process pipe between roles, with a reactor stand-in that runs one turn at a time."""

from devicehub.wire.pipe import Pipe


class Call:
    def __init__(self, function):
        self.function = function
        self.called = self.cancelled = False

    def active(self):
        return not (self.called or self.cancelled)

    def cancel(self):
        self.cancelled = True


class Turns:
    """callLater(0, ...) calls run at the next advance(0), not the calls they schedule (task.Clock would)."""

    def __init__(self):
        self.calls = []

    def callLater(self, delay, function, *args):
        call = Call(lambda: function(*args))
        self.calls.append(call)
        return call

    def advance(self, seconds):
        due, self.calls = self.calls, []
        for call in due:
            if call.active():
                call.called = True
                call.function()

    def getDelayedCalls(self):
        return [call for call in self.calls if call.active()]


def make():
    clock, received = Turns(), []
    return Pipe(clock, received.append), clock, received


def test_messages_arrive_in_order_on_a_later_turn_never_inside_send():
    pipe, clock, received = make()
    pipe.send(1)
    pipe.send(2)
    assert received == []
    clock.advance(0)
    assert received == [1, 2]
    assert clock.getDelayedCalls() == []


def test_a_turn_delivers_at_most_a_batch():
    pipe, clock, received = make()
    for i in range(pipe.maxBatch + 3):
        pipe.send(i)
    clock.advance(0)
    assert received == list(range(pipe.maxBatch))
    clock.advance(0)
    assert received == list(range(pipe.maxBatch + 3))


def test_a_message_sent_while_handling_waits_for_the_next_turn():
    clock, received = Turns(), []

    def handler(message):
        received.append(message)
        if message == "ping":
            pipe.send("pong")

    pipe = Pipe(clock, handler)
    pipe.send("ping")
    clock.advance(0)
    assert received == ["ping"]
    clock.advance(0)
    assert received == ["ping", "pong"]


def test_close_drops_what_is_undelivered_and_later_sends():
    pipe, clock, received = make()
    pipe.send(1)
    closed = pipe.close()
    assert closed.called
    pipe.send(2)
    clock.advance(0)
    assert received == [] and clock.getDelayedCalls() == []


def test_close_with_deliver_lingers_until_what_was_sent_is_delivered():
    pipe, clock, received = make()
    for i in range(pipe.maxBatch + 1):
        pipe.send(i)
    closed = pipe.close(deliver=True)
    pipe.send("late")
    clock.advance(0)
    assert not closed.called
    clock.advance(0)
    assert closed.called and received == list(range(pipe.maxBatch + 1))
    assert pipe.close(deliver=True).called  # nothing left: at once
