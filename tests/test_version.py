"""The version is written once, in the package; the distribution's metadata reads it from there."""

import configparser
from importlib.metadata import version

import devicehub

from .support import ROOT


def test_the_package_and_its_distribution_have_one_version():
    assert devicehub.__version__ == version("devicehub")
    metadata = configparser.ConfigParser()
    metadata.read(ROOT / "setup.cfg")
    assert metadata["metadata"]["version"] == "attr: devicehub.__version__"
