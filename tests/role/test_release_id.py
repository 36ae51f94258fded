"""The release id names the environment: the wheels by content, the requirement set of the
host's Python. Runs the role's read_host.yml (the release id, then the host's state) on localhost; the hosts' interpreters are
stand-in scripts that report a version (as in test_platforms.py)."""
import re

from conftest import ROLE, VARS_PLAY, fake_python

PLAY = VARS_PLAY + """    - name: Work out the release id
      ansible.builtin.include_role:
        name: pytorch_backend
        tasks_from: steps/read_host.yml
    - name: Print it
      ansible.builtin.debug:
        msg: "RELEASE_ID={{ _pytorch_backend_release_id }} RUNTIME={{ _pytorch_backend_runtime_id }}"
""".replace("ROLE", str(ROLE))


def release_id(playbook, **extra):
    result = playbook(PLAY, extra_vars=extra)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    return re.search(r"RELEASE_ID=(\w+) RUNTIME=(\w+)", out).groups()


def one_python(tmp_path, version):
    """The stand-in interpreter at one path, whatever version it reports."""
    return fake_python(tmp_path, version, name="python3")


def test_a_wheel_rebuilt_under_the_same_name_and_size_makes_a_new_release(playbook, tmp_path):
    wheels = tmp_path / "wheelhouse"
    wheels.mkdir()
    (wheels / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"A" * 1000)
    (wheels / "numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"n" * 10)
    python = one_python(tmp_path, "3.11")
    first = release_id(playbook, pytorch_backend_wheelhouse=str(wheels), pytorch_backend_python=python)
    assert release_id(playbook, pytorch_backend_wheelhouse=str(wheels), pytorch_backend_python=python) == first
    (wheels / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"B" * 1000)
    second = release_id(playbook, pytorch_backend_wheelhouse=str(wheels), pytorch_backend_python=python)
    assert second[0] != first[0] and second[1] != first[1]


def test_hosts_with_other_pythons_get_their_own_sets_and_releases(playbook, tmp_path):
    ids = {version: release_id(playbook, pytorch_backend_wheelhouse="",
                               pytorch_backend_python=one_python(tmp_path, version))
           for version in ("3.10", "3.11", "3.13")}
    # 3.10's set differs (numpy, filelock, networkx): another runtime
    assert ids["3.10"][1] != ids["3.11"][1]
    # 3.11 and 3.13 share a set, at the same interpreter path, but a venv of one is not a
    # venv of the other: equal ids must mean equal environments
    assert ids["3.11"][0] != ids["3.13"][0] and ids["3.11"][1] != ids["3.13"][1]
    assert release_id(playbook, pytorch_backend_wheelhouse="",
                      pytorch_backend_python=one_python(tmp_path, "3.11")) == ids["3.11"]


def test_the_distributions_torch_is_named_by_its_packages_versions(playbook, tmp_path):
    """pytorch_backend_torch_source distribution: the id names the apt packages' versions (here
    this Debian 12 controller's apt stands in for the host's), not torch's wheel, which stays on
    the controller; another package list is another runtime."""
    wheels = tmp_path / "wheelhouse"
    wheels.mkdir()
    torch_wheel = wheels / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
    torch_wheel.write_bytes(b"A" * 1000)
    (wheels / "orjson-3.11.5-cp313-cp313-manylinux_2_17_x86_64.whl").write_bytes(b"o" * 10)
    common = {"pytorch_backend_wheelhouse": str(wheels), "pytorch_backend_python": one_python(tmp_path, "3.13"),
              "pytorch_backend_torch_source": "distribution"}
    venv_only = release_id(playbook, pytorch_backend_distribution_packages=["python3-venv"], **common)
    with_apt = release_id(playbook, pytorch_backend_distribution_packages=["python3-venv", "python3-apt"], **common)
    assert venv_only[1] != with_apt[1]
    # torch's wheel is not part of such a release: rebuilding it changes nothing
    torch_wheel.write_bytes(b"B" * 1000)
    assert release_id(playbook, pytorch_backend_distribution_packages=["python3-venv"], **common) == venv_only
    # and pip's torch is another runtime
    pip = release_id(playbook, **{**common, "pytorch_backend_torch_source": "pip"})
    assert pip[1] != venv_only[1]
