"""The installed package (not this work tree) ships the twistd plugin."""

import os
import subprocess
import sys
import tempfile
from importlib.metadata import files
from pathlib import Path

TWISTD = str(Path(sys.executable).parent / "twistd")


def test_distribution_ships_the_plugin_file():
    shipped = {str(path) for path in files("devicehub")}
    assert "twisted/plugins/devicehub_plugin.py" in shipped
    assert "devicehub/tap.py" in shipped


def test_installed_twistd_lists_devicehub():
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    with tempfile.TemporaryDirectory() as elsewhere:  # away from this work tree
        listing = subprocess.run(
            [TWISTD, "--help"], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60
        )
        help = subprocess.run(
            [TWISTD, "devicehub", "--help"], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60
        )
    assert listing.returncode == 0
    assert "devicehub" in listing.stdout
    for option in ["--roles", "--devices", "--http", "--frontend", "--backend", "--command-timeout",
                   "--login-timeout", "--idle-timeout", "--max-line", "--node-id"]:
        assert option in help.stdout


def test_distribution_ships_every_module_of_the_package():
    shipped = {str(path) for path in files("devicehub")}
    root = Path(__file__).parent.parent
    modules = {str(path.relative_to(root)) for path in (root / "devicehub").rglob("*.py")}
    assert modules and modules <= shipped, sorted(modules - shipped)
