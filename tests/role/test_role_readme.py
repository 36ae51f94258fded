"""The role README: its variables table is generated from meta/argument_specs.yml and must not drift,
it shows Ansible's documentation markup as Markdown, and it has the sections users look for."""
import re
import runpy
import subprocess
import sys

import yaml

from conftest import ROOT, ROLE

README = ROLE / "README.md"
# Ansible markup left as typed in the specs: C(...), O(...), RV(...)... (not "NNPACK(" or "default(")
RAW_MARKUP = re.compile(r"(?<![A-Za-z0-9_])(RV|[CIOVBUMLEP])\([^)]*\)")


def test_variables_reference_is_up_to_date():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen-role-docs"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_specs_use_markup_and_readme_shows_it_as_markdown():
    specs = (ROLE / "meta" / "argument_specs.yml").read_text()
    assert RAW_MARKUP.search(specs), "the specs use no markup: this test would prove nothing"
    text = README.read_text()
    assert not RAW_MARKUP.findall(text), "raw Ansible markup in %s: %s" % (README, RAW_MARKUP.findall(text))
    assert "`releases/<id>/`" in text
    assert "`pytorch_backend_torch_index_url`" in text


def test_every_markup_kind_becomes_markdown():
    gen = runpy.run_path(str(ROOT / "scripts" / "gen-role-docs"), run_name="gen_role_docs")
    typed = ("C(a/b) O(x=1) V(75%) RV(stat.exists) E(PATH) M(ansible.builtin.pip) I(it) B(bold) "
             "U(https://a.b/) L(the docs,https://c.d/e) P(ns.col.f#filter) C(x\\)y) NNPACK(z)")
    assert gen["markdown"](typed) == ("`a/b` `x=1` `75%` `stat.exists` `PATH` `ansible.builtin.pip` *it* **bold** "
                                      "<https://a.b/> [the docs](https://c.d/e) `ns.col.f` `x)y` NNPACK(z)")


def test_readme_has_the_sections_users_look_for():
    headings = re.findall(r"^## (.+)$", README.read_text(), re.M)
    for section in ("Requirements", "Example playbook", "Variables", "Licence"):
        assert section in headings, headings
    example = README.read_text().split("## Example playbook", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    play = yaml.safe_load(example)
    assert play[0]["roles"][0]["role"] == "pytorch_backend"
    assert "Apache-2.0" in README.read_text().split("## Licence", 1)[1]
