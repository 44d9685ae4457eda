"""A test run leaves nothing in the temporary directory (the bench's run is checked in test_bench)."""

import textwrap

from .support import sample_session

SAMPLE = '''
import pytest_twisted

from tests.support import Hub, eventually, free_ports, start_twistd


def test_a_file_in_tmp_path(tmp_path):
    (tmp_path / "file").write_text("kept until the end of the session")


@pytest_twisted.ensureDeferred
async def test_a_twistd_process_and_an_in_process_hub():
    frontend, backend = free_ports(2)
    process = start_twistd(["--roles", "broker", "--frontend", f"tcp://127.0.0.1:{frontend}",
                            "--backend", f"tcp://127.0.0.1:{backend}"])
    await eventually(lambda: "Broker frontend on" in process.output or process.ended.called, timeout=30)
    await process.stop()
    assert "Broker frontend on" in process.output
    hub = await Hub().start()
    await hub.stop()
'''


def test_a_session_of_the_test_helpers_leaves_nothing_in_tmpdir(tmp_path):
    """
    A pytest session of a sample of the suite (tmp_path, twistd through start_twistd, an
    in-process hub), in a subprocess whose TMPDIR is an empty directory: still empty after.
    """
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    sample = tmp_path / "test_sample.py"
    sample.write_text(textwrap.dedent(SAMPLE))
    run = sample_session(sample, TMPDIR=str(scratch))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "2 passed" in run.stdout
    assert list(scratch.iterdir()) == []
