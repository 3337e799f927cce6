"""Shared fixtures of the Python suite (run by ctest's Python.Pytest against
the build tree's staged package, and by Python.PipInstall in a venv).

EPLB_CLI names the built `eplb` tool the policies are compared with and
EPLB_SOURCE_DIR the checkout (data/loads); both default to this checkout's
build/."""
import json
import os
import pathlib

import pytest

SOURCE_DIR = pathlib.Path(os.environ.get("EPLB_SOURCE_DIR", pathlib.Path(__file__).resolve().parents[2]))
LOADS_DIR = SOURCE_DIR / "data" / "loads"


def load_files():
    return sorted(LOADS_DIR.glob("*.json"))


def read_load(path):
    with open(path) as f:
        return json.load(f)["load"]


@pytest.fixture(scope="session")
def cli():
    path = pathlib.Path(os.environ.get("EPLB_CLI", SOURCE_DIR / "build" / "eplb"))
    if not path.exists():
        pytest.fail(f"the eplb tool is not at {path}: build it (scripts/build.sh) or set EPLB_CLI")
    return path
