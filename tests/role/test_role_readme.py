"""The role README's variables table is generated from meta/argument_specs.yml and must not drift."""
import subprocess
import sys

from conftest import ROOT


def test_variables_reference_is_up_to_date():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen-role-docs"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
