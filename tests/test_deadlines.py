"""L{Deadlines} and L{Timeouts}: many timeouts on one timer, checked against task.Clock's own callLater."""

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.logger import Logger

from devicehub.common import deadlines as deadlinesModule
from devicehub.common.deadlines import Deadlines, Timeouts


def test_calls_fire_when_due_in_order_of_their_time_on_one_timer():
    clock, fired = Clock(), []
    deadlines = Deadlines(clock)
    deadlines.callLater(5, fired.append, "a5")
    deadlines.callLater(2, fired.append, "b2")
    clock.advance(1)
    deadlines.callLater(5, fired.append, "c5")  # due at 6
    deadlines.callLater(1, fired.append, "d1")  # due at 2, with b2
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(1)
    assert fired == ["b2", "d1"]
    clock.advance(3)
    assert fired == ["b2", "d1", "a5"]
    clock.advance(1)
    assert fired == ["b2", "d1", "a5", "c5"] and len(deadlines) == 0 and clock.getDelayedCalls() == []


def test_a_cancelled_deadline_never_fires_and_the_timer_follows_the_next():
    clock, fired = Clock(), []
    deadlines = Deadlines(clock)
    first = deadlines.callLater(1, fired.append, 1)
    clock.advance(0.5)
    second = deadlines.callLater(1, fired.append, 2)
    first.cancel()
    first.cancel()  # twice is harmless
    assert not first.active() and second.active()
    clock.advance(0.5)  # the timer wakes for the cancelled one and moves on
    assert fired == [] and [call.getTime() for call in clock.getDelayedCalls()] == [1.5]
    clock.advance(0.5)
    assert fired == [2] and not second.active()


def test_no_timer_is_left_once_every_deadline_is_cancelled():
    clock = Clock()
    deadlines = Deadlines(clock)
    calls = [deadlines.callLater(seconds, lambda: None) for seconds in (1, 1, 2)]
    for call in calls:
        assert clock.getDelayedCalls()
        call.cancel()
    assert clock.getDelayedCalls() == [] and len(deadlines) == 0
    deadlines.callLater(1, lambda: None)
    assert [call.getTime() for call in clock.getDelayedCalls()] == [1]


def test_a_reset_deadline_waits_its_whole_length_again_from_now():
    clock, fired = Clock(), []
    deadlines = Deadlines(clock)
    idle = deadlines.callLater(10, fired.append, "idle")
    other = deadlines.callLater(10, fired.append, "other")
    clock.advance(6)
    idle.reset()  # due at 16 now, after the other one of its length
    clock.advance(4)
    assert fired == ["other"] and idle.active()
    clock.advance(5.5)
    assert fired == ["other"]
    clock.advance(0.5)
    assert fired == ["other", "idle"] and clock.getDelayedCalls() == []
    idle.reset()
    other.cancel()
    clock.advance(20)
    assert fired == ["other", "idle"] and not idle.active()


def test_stop_cancels_everything():
    clock, fired = Clock(), []
    deadlines = Deadlines(clock)
    deadline = deadlines.callLater(1, fired.append, 1)
    deadlines.stop()
    clock.advance(2)
    assert fired == [] and not deadline.active() and clock.getDelayedCalls() == []


def test_a_failing_call_is_logged_and_the_others_still_fire(monkeypatch):
    logged: list[dict] = []
    monkeypatch.setattr(deadlinesModule, "log", Logger(namespace="devicehub.common.deadlines", observer=logged.append))
    clock, fired = Clock(), []
    deadlines = Deadlines(clock)
    deadlines.callLater(1, lambda: 1 / 0)
    deadlines.callLater(1, fired.append, "after")
    clock.advance(1)
    assert fired == ["after"]
    assert [event["log_failure"].check(ZeroDivisionError) for event in logged] == [ZeroDivisionError]


def test_a_call_may_set_new_deadlines():
    clock, fired = Clock(), []
    deadlines = Deadlines(clock)
    deadlines.callLater(1, lambda: deadlines.callLater(0.5, fired.append, "chained"))
    clock.advance(1)
    assert fired == []
    clock.advance(0.5)
    assert fired == ["chained"]


def test_a_call_that_stops_them_all_stops_the_rest_firing():
    clock, fired = Clock(), []
    deadlines = Deadlines(clock)
    deadlines.callLater(1, deadlines.stop)
    deadlines.callLater(1, fired.append, "same time, after the stop")
    deadlines.callLater(2, fired.append, "later")
    clock.advance(3)
    assert fired == [] and len(deadlines) == 0 and clock.getDelayedCalls() == []


# What one Deadlines does is what task.Clock does with a callLater each.
_ACTIONS = st.lists(st.one_of(
    st.tuples(st.just("add"), st.sampled_from([0, 0.5, 1, 2.5, 30])),
    st.tuples(st.just("cancel"), st.integers(0, 50)),
    st.tuples(st.just("reset"), st.integers(0, 50)),
    st.tuples(st.just("advance"), st.sampled_from([0, 0.25, 0.5, 1, 3, 40])),
), max_size=60)


@given(_ACTIONS)
def test_deadlines_fire_what_callLater_would_fire_at_the_same_times(actions):
    clock = Clock()
    deadlines = Deadlines(clock)
    fired, expected = [], []
    ours, theirs, lengths = [], [], []
    for action, value in actions:
        if action == "add":
            n = len(ours)
            lengths.append(value)
            ours.append(deadlines.callLater(value, lambda n=n: fired.append((n, clock.seconds()))))
            theirs.append(clock.callLater(value, lambda n=n: expected.append((n, clock.seconds()))))
        elif action == "cancel" and value < len(ours):
            assert ours[value].active() == theirs[value].active()
            if theirs[value].active():
                ours[value].cancel()
                theirs[value].cancel()
        elif action == "reset" and value < len(ours):
            ours[value].reset()  # nothing once it fired or was cancelled
            if theirs[value].active():
                theirs[value].reset(lengths[value])
        elif action == "advance":
            clock.advance(value)
            # Clock fires due calls in time order; Deadlines too, but several due at once may be in
            # another order (by length first): the same calls at the same times.
            assert sorted(fired) == sorted(expected)
        if not any(call.active() for call in theirs):
            assert clock.getDelayedCalls() == []  # none left: no timer either
    clock.advance(100)
    assert sorted(fired) == sorted(expected) and len(deadlines) == 0
    assert clock.getDelayedCalls() == []


def test_timeouts_keep_one_per_key_and_call_back_with_the_key():
    clock, expired = Clock(), []
    timeouts = Timeouts(clock, expired.append)
    timeouts.set("a", 30)
    timeouts.set("b", 30)
    timeouts.set("a", 300)  # a key's new timeout replaces its old one
    assert len(timeouts) == 2 and len(clock.getDelayedCalls()) == 1
    clock.advance(20)
    timeouts.reset("b")  # 30 s again, from now
    timeouts.reset("nobody")
    clock.advance(29)
    assert expired == [] and timeouts.active("b")
    clock.advance(1)
    assert expired == ["b"] and not timeouts.active("b") and timeouts.active("a")
    timeouts.cancel("a")
    timeouts.cancel("a")  # twice is harmless
    assert len(timeouts) == 0 and clock.getDelayedCalls() == []
    clock.advance(1000)
    assert expired == ["b"]


# What one Timeouts does is what task.Clock does with a callLater (reset to its length) per key.
_TIMEOUT_ACTIONS = st.lists(st.one_of(
    st.tuples(st.just("set"), st.tuples(st.integers(0, 5), st.sampled_from([0.5, 1, 30]))),
    st.tuples(st.just("cancel"), st.integers(0, 5)),
    st.tuples(st.just("reset"), st.integers(0, 5)),
    st.tuples(st.just("advance"), st.sampled_from([0, 0.25, 0.5, 1, 3, 40])),
), max_size=60)


@given(_TIMEOUT_ACTIONS)
def test_timeouts_fire_what_a_callLater_per_key_would_fire_at_the_same_times(actions):
    clock = Clock()
    fired, expected = [], []
    timeouts = Timeouts(clock, lambda key: fired.append((key, clock.seconds())))
    theirs, lengths = {}, {}
    for action, value in actions:
        if action == "set":
            key, seconds = value
            if key in theirs and theirs[key].active():
                theirs[key].cancel()
            timeouts.set(key, seconds)
            theirs[key] = clock.callLater(seconds, lambda key=key: expected.append((key, clock.seconds())))
            lengths[key] = seconds
        elif action == "cancel":
            timeouts.cancel(value)
            if value in theirs and theirs[value].active():
                theirs[value].cancel()
        elif action == "reset":
            timeouts.reset(value)
            if value in theirs and theirs[value].active():
                theirs[value].reset(lengths[value])
        else:
            clock.advance(value)
            assert sorted(fired) == sorted(expected)
        assert {key for key in range(6) if timeouts.active(key)} == {key for key, call in theirs.items() if call.active()}
        if not any(call.active() for call in theirs.values()):
            assert clock.getDelayedCalls() == []
    clock.advance(100)
    assert sorted(fired) == sorted(expected) and len(timeouts) == 0 and clock.getDelayedCalls() == []
