"""The shipped inventories: the production example lists without warnings, and the DigitalOcean
dynamic inventory puts each droplet tag in a group of its own, so `group_vars/torch_backend` applies.

The DigitalOcean API cannot be reached here, so its plugin is stood in for by
`ansible.builtin.constructed` with the same `keyed_groups` and `compose` (read from
inventories/digitalocean/digitalocean.yml) over droplets given as static hosts with the `do_`
variables the plugin sets. Both plugins apply `keyed_groups` through the same
ansible-core code (Constructable), so what groups the stand-in builds is what the plugin builds.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import ROOT

BIN = Path(sys.executable).parent
DO = ROOT / "inventories" / "digitalocean" / "digitalocean.yml"
# Droplets as the plugin returns them (do_ prefix, the attributes digitalocean.yml asks for).
DROPLETS = {
    "inference-fra1-01": {"do_tags": ["torch_backend", "web"], "do_region": {"slug": "fra1"},
                          "do_networks": {"v4": [{"type": "private", "ip_address": "10.0.0.5"},
                                                 {"type": "public", "ip_address": "203.0.113.11"}]}},
    "inference-ams3-01": {"do_tags": ["Torch_Backend"], "do_region": {"slug": "ams3"},
                          "do_networks": {"v4": [{"type": "public", "ip_address": "203.0.113.21"}]}},
}


def _env(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-local"))
    return env


def inventory_list(tmp_path, *sources):
    cmd = [str(BIN / "ansible-inventory"), "--list"]
    for source in sources:
        cmd += ["-i", str(source)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=_env(tmp_path), timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc.stderr


def test_digitalocean_tags_each_become_a_group_that_gets_the_group_vars(tmp_path):
    config = yaml.safe_load(DO.read_text())
    assert config["plugin"] == "community.digitalocean.digitalocean"
    (tmp_path / "droplets.yml").write_text(yaml.safe_dump({"all": {"hosts": DROPLETS}}))
    (tmp_path / "constructed.yml").write_text(yaml.safe_dump({
        "plugin": "ansible.builtin.constructed", "strict": True,
        "keyed_groups": config["keyed_groups"], "compose": config["compose"]}))
    # the group_vars the DigitalOcean inventory directory carries, beside the stand-in's sources
    (tmp_path / "group_vars").symlink_to((DO.parent / "group_vars").resolve())

    listed, _ = inventory_list(tmp_path, tmp_path / "droplets.yml", tmp_path / "constructed.yml")
    groups = {name: set(data.get("hosts", [])) for name, data in listed.items() if name != "_meta"}
    assert groups.get("torch_backend") == set(DROPLETS), groups
    assert groups.get("web") == {"inference-fra1-01"}, groups
    assert not [name for name in groups if "__" in name], groups  # no group named after a whole list
    group_vars = yaml.safe_load((DO.parent / "group_vars" / "torch_backend" / "main.yml").read_text())
    hostvars = listed["_meta"]["hostvars"]
    for host in DROPLETS:
        assert hostvars[host]["pytorch_backend_port"] == group_vars["pytorch_backend_port"], hostvars[host]
        assert hostvars[host]["ansible_user"] == group_vars["ansible_user"]
    assert hostvars["inference-fra1-01"]["ansible_host"] == "203.0.113.11"


def test_digitalocean_inventory_shares_the_production_group_vars():
    assert (DO.parent / "group_vars").resolve() == (ROOT / "inventories" / "production" / "group_vars").resolve()


def test_production_inventory_lists_without_a_warning(tmp_path):
    listed, stderr = inventory_list(tmp_path, ROOT / "inventories" / "production")
    assert "WARNING" not in stderr, stderr
    assert set(listed["torch_backend"]["hosts"]) == {"inference-fra1-01", "inference-fra1-02", "inference-ams3-01"}
    assert not list((ROOT / "inventories" / "production").glob("*.example"))


def test_requirements_pin_the_collection_the_inventory_needs():
    collections = {c["name"]: c for c in yaml.safe_load((ROOT / "requirements.yml").read_text())["collections"]}
    plugin = yaml.safe_load(DO.read_text())["plugin"]
    pinned = collections[plugin.rsplit(".", 1)[0]]["version"]
    assert all(part.isdigit() for part in str(pinned).split(".")), "not an exact version: %s" % pinned


def test_molecule_does_not_fetch_the_inventory_collection_from_galaxy():
    # Molecule's prerun installs requirements.yml from Galaxy: offline, every scenario would fail there.
    config = yaml.safe_load((ROOT / ".config" / "molecule" / "config.yml").read_text())
    assert config.get("prerun") is False
    assert "ansible-lint --offline" in (ROOT / "scripts" / "test").read_text()
