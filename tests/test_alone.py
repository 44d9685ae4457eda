"""A test marked C{alone} (tests/conftest.py) runs while the suite's other worker runs nothing."""

import json
import textwrap

from .support import sample_session

SAMPLE = '''
import json, os, time

import pytest


def record(name):
    started = time.time()
    time.sleep(0.5)
    with open(os.environ["SPANS"], "a") as spans:
        spans.write(json.dumps([name, started, time.time()]) + "\\n")


@pytest.mark.alone
def test_alone():
    record("alone")


@pytest.mark.parametrize("n", range(6))
def test_other(n):
    record(f"other{n}")
'''


def test_a_test_marked_alone_overlaps_no_other(tmp_path):
    sample = tmp_path / "test_sample.py"
    sample.write_text(textwrap.dedent(SAMPLE))
    spans = tmp_path / "spans"
    run = sample_session(sample, "-n", "2", SPANS=str(spans))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "7 passed" in run.stdout
    recorded = {name: (start, end) for name, start, end in map(json.loads, spans.read_text().splitlines())}
    alone = recorded.pop("alone")
    assert len(recorded) == 6
    assert all(end <= alone[0] or start >= alone[1] for start, end in recorded.values())
    # ... and the other tests did run two at a time (the workers are really in parallel)
    ordered = sorted(recorded.values())
    assert any(later[0] < earlier[1] for earlier, later in zip(ordered, ordered[1:]))
