"""Fixtures for scripts/droplets: the script loaded as a module (it imports the names of its package,
scripts/droplets_lib/), and a runner for its CLI."""
import importlib.machinery
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "droplets"


def _load():
    loader = importlib.machinery.SourceFileLoader("droplets_cli", str(SCRIPT))
    spec = importlib.util.spec_from_loader("droplets_cli", loader)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["droplets_cli"] = mod
    loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def droplets_mod():
    return _load()


@pytest.fixture
def run_cli(tmp_path):
    """Run scripts/droplets with a private state dir and inventory under tmp_path."""
    state, inventory = tmp_path / "state", tmp_path / "hosts.yml"

    def run(*args, timeout=120, env=None, check=None):
        full_env = {**os.environ, "DROPLETS_STATE_DIR": str(state),
                    "DROPLETS_INVENTORY": str(inventory), **(env or {})}
        r = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                           timeout=timeout, env=full_env, stdin=subprocess.DEVNULL)
        if check is not None:
            assert r.returncode == check, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
        return r

    run.state, run.inventory = state, inventory
    return run
