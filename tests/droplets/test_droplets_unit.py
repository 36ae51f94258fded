"""scripts/droplets and scripts/build-image without booting a guest: arguments, inventory, ports,
state handling, accelerator choice."""
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_INVENTORY = Path(sys.executable).parent / "ansible-inventory"
needs_qemu = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                                reason="qemu-system-x86_64 not installed")


# ---- droplet specs and names --------------------------------------------------------------

@pytest.mark.parametrize("spec, expected", [
    ("haswell", ("haswell", None, None, None)),
    ("nehalem:Nehalem", ("nehalem", "Nehalem", None, None)),
    ("big:Haswell:8192", ("big", "Haswell", 8192, None)),
    ("big::4096", ("big", None, 4096, None)),
    ("x-1:Haswell,-fma", ("x-1", "Haswell,-fma", None, None)),
    ("t:Haswell:3072:trixie", ("t", "Haswell", 3072, "trixie")),
    ("t:::bookworm", ("t", None, None, "bookworm")),
])
def test_parse_spec(droplets_mod, spec, expected):
    assert droplets_mod.parse_spec(spec) == expected


@pytest.mark.parametrize("spec", ["", "Upper", "-x", "x-", "a_b", "a.b", "x" * 33, "a:b:c:d", "a:b:512:sid",
                                  "a:b:512:trixie:x",
                                  "a:Haswell:lots", "a:Haswell:12", "../etc"])
def test_parse_spec_rejects(droplets_mod, spec):
    with pytest.raises(droplets_mod.DropletError) as e:
        droplets_mod.parse_spec(spec)
    assert e.value.code == 2


@needs_qemu
def test_cpu_model_names_are_checked_against_qemu(droplets_mod):
    assert droplets_mod.normalize_cpu("haswell") == "Haswell"
    assert droplets_mod.normalize_cpu("NEHALEM") == "Nehalem"
    assert droplets_mod.normalize_cpu("haswell,-fma,l3-cache=off") == "Haswell,-fma,l3-cache=off"
    with pytest.raises(droplets_mod.DropletError, match="unknown CPU model 'Haswel'.*Haswell"):
        droplets_mod.normalize_cpu("Haswel")


# ---- command line ---------------------------------------------------------------------------

def test_state_dir_and_inventory_from_env_and_options(droplets_mod, monkeypatch, tmp_path):
    monkeypatch.setenv("DROPLETS_STATE_DIR", str(tmp_path / "env-state"))
    monkeypatch.setenv("DROPLETS_INVENTORY", str(tmp_path / "env.yml"))
    a = droplets_mod.parse_args(["status"])
    assert (a.state_dir, a.inventory) == (tmp_path / "env-state", tmp_path / "env.yml")
    # options win over the environment, before or after the subcommand
    a = droplets_mod.parse_args(["--state-dir", str(tmp_path / "s1"), "up", "x",
                                 "--inventory", str(tmp_path / "i1.yml")])
    assert (a.state_dir, a.inventory) == (tmp_path / "s1", tmp_path / "i1.yml")
    monkeypatch.delenv("DROPLETS_STATE_DIR")
    monkeypatch.delenv("DROPLETS_INVENTORY")
    a = droplets_mod.parse_args(["status"])
    assert a.state_dir == ROOT / ".cache" / "droplets"
    assert a.inventory == ROOT / "inventories" / "local" / "hosts.yml"


def test_up_options(droplets_mod, monkeypatch):
    monkeypatch.delenv("DROPLETS_TIMEOUT", raising=False)
    a = droplets_mod.parse_args(["up", "haswell:Haswell", "nehalem:Nehalem"])
    assert a.specs == ["haswell:Haswell", "nehalem:Nehalem"]
    assert (a.timeout, a.accel, a.port, a.append, a.keep_failed) == (300.0, None, None, None, False)
    a = droplets_mod.parse_args(["up", "x", "--accel", "tcg", "--timeout", "9", "--port", "2222",
                                 "--append", "quiet"])
    assert (a.timeout, a.accel, a.port, a.append) == (9.0, "tcg", 2222, "quiet")
    monkeypatch.setenv("DROPLETS_TIMEOUT", "42")
    assert droplets_mod.parse_args(["up", "x"]).timeout == 42.0
    a = droplets_mod.parse_args(["restart", "x", "--cpu", "Haswell"])
    assert (a.names, a.cpu) == (["x"], "Haswell")
    a = droplets_mod.parse_args(["ssh", "x", "grep", "-c", "avx2", "/proc/cpuinfo"])
    assert (a.name, a.command) == ("x", ["grep", "-c", "avx2", "/proc/cpuinfo"])
    assert droplets_mod.parse_args(["down"]).names == []
    with pytest.raises(SystemExit):
        droplets_mod.parse_args(["up"])
    with pytest.raises(SystemExit):
        droplets_mod.parse_args(["up", "x", "--accel", "hvf"])


def test_guest_kernel_args_come_before_the_users(droplets_mod, tmp_path):
    d = _fake_droplet(droplets_mod, tmp_path, "k", 2222)
    assert argv_append(droplets_mod.qemu_argv(d)).split()[-1] == "mitigations=off"
    d.state["append"] = "mitigations=auto quiet"
    # the kernel keeps the last value: what the user appends wins
    assert argv_append(droplets_mod.qemu_argv(d)).endswith("mitigations=off mitigations=auto quiet")


def argv_append(argv):
    return argv[argv.index("-append") + 1]


def test_cli_rejects_bad_names_and_duplicates(run_cli):
    r = run_cli("up", "Bad_Name", check=2)
    assert "bad droplet name" in r.stderr
    r = run_cli("up", "a", "a:Nehalem", check=2)
    assert "named twice" in r.stderr
    r = run_cli("up", "a", "b", "--port", "2222", check=2)
    assert "--port needs exactly one droplet" in r.stderr


def test_cli_on_an_empty_state_dir(run_cli):
    r = run_cli("status", check=0)
    assert "no droplets" in r.stdout
    r = run_cli("status", "--json", check=0)
    assert json.loads(r.stdout) == []
    run_cli("down", check=0)
    assert yaml.safe_load(run_cli.inventory.read_text()) == {
        "all": {"children": {"droplets": {"hosts": {}}}}}
    r = run_cli("ssh", "ghost", "true", check=2)
    assert "no such droplet: ghost" in r.stderr
    r = run_cli("restart", "ghost", "--cpu", "Haswell", check=2)
    assert "no such droplet" in r.stderr


# ---- inventory --------------------------------------------------------------------------------

def _fake_droplet(mod, state_dir, name, port, cpu="Nehalem"):
    d = mod.Droplet(state_dir, name)
    d.state = {"name": name, "cpu": cpu, "mem_mb": 3072, "port": port, "accel": "tcg",
               "image": "/nonexistent/disk.raw", "kernel": "/k", "initrd": "/i"}
    d.save()
    return d


def test_inventory_lists_live_droplets(droplets_mod, monkeypatch, tmp_path):
    state = tmp_path / "state"
    _fake_droplet(droplets_mod, state, "nehalem", 40001)
    _fake_droplet(droplets_mod, state, "haswell", 40002, cpu="Haswell")
    _fake_droplet(droplets_mod, state, "stopped", 40003)
    monkeypatch.setattr(droplets_mod.Droplet, "alive", lambda self: self.name != "stopped")
    inv = tmp_path / "inv" / "hosts.yml"
    droplets_mod.write_inventory(state, inv)
    data = yaml.safe_load(inv.read_text())
    hosts = data["all"]["children"]["droplets"]["hosts"]
    assert sorted(hosts) == ["haswell", "nehalem"]
    assert hosts["nehalem"] == {
        "ansible_host": "127.0.0.1",
        "ansible_port": 40001,
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(droplets_mod.ssh_key().resolve()),
        "ansible_ssh_common_args":
            "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
        "ansible_python_interpreter": "/usr/bin/python3",
        "droplet_cpu": "Nehalem",
        "droplet_mem_mb": 3072,
        "droplet_accel": "tcg",
    }
    assert os.path.isabs(hosts["haswell"]["ansible_ssh_private_key_file"])
    assert hosts["haswell"]["droplet_cpu"] == "Haswell"
    # atomic: no temp files left beside it
    assert [p.name for p in inv.parent.iterdir()] == ["hosts.yml"]


def test_inventory_quotes_yaml_specials(droplets_mod):
    text = droplets_mod.render_inventory({"no": {"droplet_cpu": "Haswell,-fma", "x": "it's"},
                                          "on": {"ansible_port": 1}})
    hosts = yaml.safe_load(text)["all"]["children"]["droplets"]["hosts"]
    assert hosts == {"no": {"droplet_cpu": "Haswell,-fma", "x": "it's"}, "on": {"ansible_port": 1}}


@pytest.mark.skipif(not ANSIBLE_INVENTORY.exists(), reason="ansible-inventory not in this venv")
@pytest.mark.parametrize("hosts", [0, 2])
def test_ansible_reads_the_inventory(droplets_mod, tmp_path, hosts):
    names = ["haswell", "nehalem"][:hosts]
    text = droplets_mod.render_inventory(
        {n: {"ansible_host": "127.0.0.1", "ansible_port": 40000 + i, "droplet_cpu": "Haswell"}
         for i, n in enumerate(names)})
    inv = tmp_path / "hosts.yml"
    inv.write_text(text)
    cfg = tmp_path / "ansible.cfg"
    cfg.write_text("[defaults]\n")
    r = subprocess.run([str(ANSIBLE_INVENTORY), "-i", str(inv), "--list"], capture_output=True,
                       text=True, timeout=120, env={**os.environ, "ANSIBLE_CONFIG": str(cfg)})
    assert r.returncode == 0, r.stderr
    assert "Unable to parse" not in r.stderr and "Skipping" not in r.stderr
    data = json.loads(r.stdout)
    assert "droplets" in data["all"]["children"]
    assert sorted(data.get("droplets", {}).get("hosts", [])) == names
    for i, n in enumerate(names):
        assert data["_meta"]["hostvars"][n]["ansible_port"] == 40000 + i


# ---- ports, processes, state ------------------------------------------------------------------

def test_pick_port_is_free_and_avoids_excluded(droplets_mod):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        busy = s.getsockname()[1]
        assert not droplets_mod.port_free(busy)
        seen = set()
        for _ in range(5):
            p = droplets_mod.pick_port(exclude=seen | {busy})
            assert p not in seen and p != busy and droplets_mod.port_free(p)
            seen.add(p)


def test_process_check_needs_qemu_and_the_disk(droplets_mod, tmp_path):
    disk = tmp_path / "disk.qcow2"
    # this very process is not QEMU, whatever its arguments
    assert not droplets_mod.is_our_qemu(os.getpid(), disk)
    assert droplets_mod.find_qemu_by_disk(disk) == []
    assert not droplets_mod.is_our_qemu(2 ** 22 + 1, disk)  # no such pid


def test_stale_pidfile_is_not_trusted(droplets_mod, tmp_path):
    d = _fake_droplet(droplets_mod, tmp_path / "state", "x", 40001)
    d.pidfile.write_text(f"{os.getpid()}\n")  # a live process, but not our QEMU
    assert d.pid() is None and not d.alive()
    # state round-trips through state.json
    again = droplets_mod.Droplet(tmp_path / "state", "x")
    assert again.exists and again.state["port"] == 40001
    assert [x.name for x in droplets_mod.list_droplets(tmp_path / "state")] == ["x"]


def test_state_lock_is_exclusive(droplets_mod, tmp_path):
    import fcntl
    with droplets_mod.state_lock(tmp_path):
        with open(tmp_path / ".lock") as f:
            with pytest.raises(BlockingIOError):
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(tmp_path / ".lock") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_console_tail_strips_colour(droplets_mod, tmp_path):
    log = tmp_path / "console.log"
    log.write_bytes(b"a\r\n\x1b[0;32m  OK  \x1b[0m] Reached target\r\n" + b"x\n" * 5)
    assert droplets_mod.tail(log, 6) == "  OK  ] Reached target\nx\nx\nx\nx\nx"
    assert droplets_mod.tail(tmp_path / "missing", 3) == "(no console log)"


# ---- accelerator ----------------------------------------------------------------------------

def test_accel_forced_and_cached(droplets_mod, monkeypatch, tmp_path):
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"kernel-1")
    calls = []
    # patched where choose_accel looks them up (loading droplets_mod put droplets_lib on sys.path)
    from droplets_lib import accel
    monkeypatch.setattr(accel, "probe_kvm",
                        lambda k: calls.append(k) or (False, "KVM internal error"))
    monkeypatch.setattr(accel, "qemu_version", lambda: "QEMU emulator version 7.2")
    monkeypatch.delenv("DROPLETS_ACCEL", raising=False)
    assert droplets_mod.choose_accel(tmp_path, "kvm", str(kernel)) == ("kvm", "forced")
    monkeypatch.setenv("DROPLETS_ACCEL", "tcg")
    assert droplets_mod.choose_accel(tmp_path, None, str(kernel)) == ("tcg", "forced")
    monkeypatch.delenv("DROPLETS_ACCEL")
    assert calls == []
    accel, why = droplets_mod.choose_accel(tmp_path, None, str(kernel))
    assert (accel, why, len(calls)) == ("tcg", "KVM internal error", 1)
    assert json.loads((tmp_path / "accel").read_text())["accel"] == "tcg"
    accel, why = droplets_mod.choose_accel(tmp_path, "auto", str(kernel))
    assert accel == "tcg" and why.startswith("cached") and len(calls) == 1
    kernel.write_bytes(b"kernel-2")  # another kernel: probe again
    droplets_mod.choose_accel(tmp_path, None, str(kernel))
    assert len(calls) == 2
    with pytest.raises(droplets_mod.DropletError):
        droplets_mod.choose_accel(tmp_path, "hvf", str(kernel))


def test_kvm_probe_without_dev_kvm(droplets_mod, monkeypatch):
    real_exists = os.path.exists
    monkeypatch.setattr(os.path, "exists", lambda p: False if p == "/dev/kvm" else real_exists(p))
    assert droplets_mod.probe_kvm("/nonexistent") == (False, "no /dev/kvm")


# ---- build-image ------------------------------------------------------------------------------

def test_build_image_check_builds_nothing(tmp_path):
    env = {**os.environ, "DROPLETS_IMAGE_DIR": str(tmp_path / "image"),
           "DROPLETS_SSH_DIR": str(tmp_path / "ssh")}
    r = subprocess.run([str(ROOT / "scripts" / "build-image"), "--check"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert not (tmp_path / "ssh" / "id_ed25519").exists()
    assert sorted(p.name for p in (tmp_path / "image" / "bookworm").iterdir()) == [".lock"]


def test_build_image_refuses_an_unknown_suite(tmp_path):
    env = {**os.environ, "DROPLETS_IMAGE_DIR": str(tmp_path / "image"),
           "DROPLETS_SSH_DIR": str(tmp_path / "ssh")}
    r = subprocess.run([str(ROOT / "scripts" / "build-image"), "--suite", "sid", "--check"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "--suite takes bookworm or trixie, not 'sid'" in r.stderr
    assert not (tmp_path / "image").exists()


def test_ssh_try_says_why_it_failed(droplets_mod):
    """The SSH wait reports ssh's own reason: a port that accepts and never speaks (an sshd too
    slow to send its banner) and a closed port read differently."""
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(1)
        why = droplets_mod.ssh_try(mute.getsockname()[1], connect_timeout=1)
    assert why is not None and why.startswith("ssh exit 255: ") and "banner exchange" in why
    closed = droplets_mod.pick_port()
    why = droplets_mod.ssh_try(closed, connect_timeout=1)
    assert why is not None and "Connection refused" in why


def test_builds_of_both_images_at_once_make_one_ssh_key(tmp_path):
    """scripts/bootstrap builds the two images side by side, and each build makes the SSH key
    when there is none: they must not both make it (one build's ssh-keygen refused to overwrite
    the other's half-made key, and a key pair made of two runs' halves locks every guest out).
    mmdebstrap is stood in for by a script that fails at once: only the key step runs for real."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "mmdebstrap").write_text("#!/bin/sh\nexit 1\n")
    (fake / "mmdebstrap").chmod(0o755)
    for attempt in range(4):
        env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}",
               "DROPLETS_IMAGE_DIR": str(tmp_path / f"image{attempt}"),
               "DROPLETS_SSH_DIR": str(tmp_path / f"ssh{attempt}")}
        builds = [subprocess.Popen([str(ROOT / "scripts" / "build-image"), "--suite", suite], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                  for suite in ("bookworm", "trixie")]
        errors = [b.communicate(timeout=120)[1] for b in builds]
        for err in errors:
            assert "already exists" not in err and "mmdebstrap failed" in err, err
        key = tmp_path / f"ssh{attempt}" / "id_ed25519"
        public = subprocess.run(["ssh-keygen", "-y", "-f", str(key)], capture_output=True, text=True, check=True)
        assert public.stdout.split()[:2] == (key.with_suffix(".pub")).read_text().split()[:2]
