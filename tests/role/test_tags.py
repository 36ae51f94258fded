"""Tags: every stage of the role is tagged, and `--tags X` runs a sensible set of tasks.

install, probe, configure, verify on the deploy's stages (README.md, "Tags"); preflight and the
fleet table's target list are `always`; the other playbooks tag their entry point. Checked with
`ansible-playbook --list-tasks` (needs no host) and by walking the task files as Ansible
inherits tags (an import passes its tags on; an include only through `apply`).
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROLE, ROOT

BIN = Path(sys.executable).parent
TASKS = ROLE / "tasks"
STAGES = {"install", "probe", "configure", "verify"}
# each tag with the role's prefix, the unprefixed one kept as an alias
PLAYBOOK_TAGS = {"verify.yml": ["pytorch_backend_verify", "verify"], "rollback.yml": ["pytorch_backend_configure", "configure"],
                 "audit.yml": ["pytorch_backend_probe", "probe"], "remove.yml": ["pytorch_backend_remove", "remove"]}

ALWAYS = ["Check the ansible-core version", "Check cross-variable rules",
          "Name the hosts this run targets, for the fleet table"]
HOST_READ = ["Read the deployment state on the host", "Work out the release identity"]
INSTALL = ["Check the host's Python against the requirement sets and the wheels", "Create the service group",
           "Create the directories", "Announce the build", "Mark the release complete"]
PROBE = ["Probe NNPACK with the release's interpreter and decide USE_NNPACK", "Say what the decision rests on", "Report the decision"]
CONFIGURE = ["Require the release to switch to", "Render the managed files", "Start the candidate",
             "Write the environment file, the CPU record and the unit", "Restart torch-backend",
             "Remove releases beyond the newest"]
SERVED = ["Take the serving release, its CPU record and configuration digest"]
VERIFY = ["Send the self-test input through the running service", "Require a verified service"]


def env():
    e = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "MOLECULE_"))}
    e.update(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    return e


def listed(*args, playbook="deploy.yml"):
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "--list-tasks", *args,
                           str(ROOT / "playbooks" / playbook)], capture_output=True, text=True, cwd=ROOT,
                          env=env(), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [line.split(" : ", 1)[1].split("\tTAGS:")[0] for line in proc.stdout.splitlines()
            if "pytorch_backend : " in line]


def has(names, task):
    return any(n.startswith(task) for n in names)


EXPECTED = {
    # tag: (task groups that run, task groups that must not)
    "install": (ALWAYS + HOST_READ + INSTALL, PROBE + CONFIGURE + SERVED + VERIFY),
    "probe": (ALWAYS + HOST_READ + PROBE, INSTALL + CONFIGURE + SERVED + VERIFY),
    "configure": (ALWAYS + HOST_READ + PROBE + CONFIGURE + VERIFY, INSTALL),
    "verify": (ALWAYS + HOST_READ + SERVED + VERIFY, INSTALL + PROBE + CONFIGURE),
}


@pytest.mark.parametrize("tag", sorted(EXPECTED) + ["pytorch_backend_" + t for t in sorted(EXPECTED)])
def test_deploy_tag_runs_its_stage_and_what_it_needs(tag):
    """Each stage's tag, prefixed with the role's name or by its old alias, lists the same tasks."""
    names = listed("--tags", tag)
    tag = tag.removeprefix("pytorch_backend_")
    runs, not_runs = EXPECTED[tag]
    assert [t for t in runs if not has(names, t)] == [], names
    assert [t for t in not_runs if has(names, t)] == [], names


def test_untagged_deploy_runs_every_stage():
    names = listed()
    every = ALWAYS + HOST_READ + INSTALL + PROBE + CONFIGURE + SERVED + VERIFY
    assert [t for t in every if not has(names, t)] == [], names


def load(path):
    return yaml.safe_load(path.read_text()) or []


def as_list(tags):
    return [tags] if isinstance(tags, str) else list(tags or [])


def walk(path, inherited, seen, untagged):
    """Every task in `path` and what it imports or includes, with the tags Ansible gives it."""
    seen.add(path)
    walk_tasks(load(path), path, inherited, seen, untagged)


def walk_tasks(tasks, path, inherited, seen, untagged):
    for task in tasks:
        own = set(as_list(task.get("tags")))
        if any(k in task for k in ("block", "rescue", "always")):
            for key in ("block", "rescue", "always"):
                walk_tasks(task.get(key) or [], path, inherited | own, seen, untagged)
            continue
        imp = task.get("ansible.builtin.import_tasks")
        inc = task.get("ansible.builtin.include_tasks")
        # an import is not a task of its own: what it imports is checked
        if not imp and not (inherited | own):
            untagged.append(f"{path.name}: {task.get('name')}")
        if imp:
            walk(TASKS / imp, inherited | own, seen, untagged)
        elif inc:
            inc = inc if isinstance(inc, dict) else {"file": inc}
            if "{{" in inc["file"]:
                # an operator's hook file (pytorch_backend_pre/post_switch_tasks): not the role's
                continue
            applied = set(as_list((inc.get("apply") or {}).get("tags")))
            walk(TASKS / inc["file"], inherited | applied, seen, untagged)


def entry_points():
    """Each role entry point and the tags its playbook gives it."""
    points = {"main.yml": set()}
    for name, tags in PLAYBOOK_TAGS.items():
        for play in load(ROOT / "playbooks" / name):
            for task in play.get("tasks", []):
                inc = task.get("ansible.builtin.include_role")
                if inc:
                    assert as_list(task.get("tags")) == tags, (name, task)
                    assert as_list(inc.get("apply", {}).get("tags")) == tags, (name, task)
                    points[inc["tasks_from"]] = set(tags)
    return points


def test_every_task_carries_or_inherits_a_tag():
    seen, untagged = set(), []
    for entry, tags in entry_points().items():
        walk(TASKS / entry, tags, seen, untagged)
    assert untagged == []
    every_file = set(TASKS.rglob("*.yml"))
    assert every_file - seen == set(), "task files no entry point reaches"


def test_deploy_stages_and_playbooks_use_only_the_documented_tags():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Tags", 1)[1].split("\n## ", 1)[0]
    documented = STAGES | {"remove"}
    documented |= {"pytorch_backend_" + tag for tag in documented}
    for tag in sorted(documented | {"always"}):
        assert f"`{tag}`" in section, tag
    used = set()
    for path in list(TASKS.rglob("*.yml")) + list((ROOT / "playbooks").glob("*.yml")):
        text = path.read_text()
        for line in text.splitlines():
            if line.strip().startswith("tags:"):
                used |= set(as_list(yaml.safe_load(line.strip())["tags"]))
    assert used == documented | {"always"}, used


FLAGS_PLAY = """
- hosts: localhost
  gather_facts: false
  vars_files:
    - ROLE/vars/main.yml
  tasks:
    - name: Say which stages run
      ansible.builtin.debug:
        msg: "configures={{ _pytorch_backend_run_configures | bool }} verifies={{ _pytorch_backend_run_verifies | bool }}"
      tags: [always]
""".replace("ROLE", str(ROLE))


@pytest.mark.parametrize("args,configures,verifies", [
    ((), True, True),
    (("--tags", "verify"), False, True),
    (("--tags", "probe"), False, False),
    (("--tags", "install"), False, False),
    (("--tags", "configure"), True, True),
    (("--tags", "install,probe"), False, False),
    (("--skip-tags", "verify"), True, False),
    (("--tags", "pytorch_backend_verify"), False, True),
    (("--tags", "pytorch_backend_configure"), True, True),
    (("--skip-tags", "pytorch_backend_verify"), True, False),
])
def test_run_flags_follow_the_tags(tmp_path, args, configures, verifies):
    """Whether the fleet table is printed (verifies) and the probe reports its verdict (not configures)."""
    play = tmp_path / "flags.yml"
    play.write_text(FLAGS_PLAY)
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(play), *args],
                          capture_output=True, text=True, cwd=tmp_path, env=env(), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"configures={configures} verifies={verifies}" in proc.stdout, proc.stdout
