"""Preflight lets good values through, and keeps secrets and credentials out of its messages.

Runs the real role against localhost in check mode (so even a preflight bug could not
change this machine). The hand-written bad values (bad_values.py) run with the generated
ones in test_preflight_generated.py's single ansible-playbook run: one run per value
took 6-12 s each (pytest --durations), for 46 values.
"""
import pytest

PLAY = """
- hosts: localhost
  gather_facts: false
  roles:
    - role: pytorch_backend
"""

def test_good_values_pass_preflight(playbook):
    """The same play with the defaults gets past preflight (the checks can pass)."""
    result = playbook(PLAY.replace("roles:\n    - role: pytorch_backend",
                                   "tasks:\n    - ansible.builtin.include_role:\n        name: pytorch_backend\n"
                                   "        tasks_from: steps/preflight.yml"), check=True)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]


def test_a_bad_secret_env_names_its_keys_never_its_values(playbook):
    result = playbook(PLAY, extra_vars={"pytorch_backend_secret_env": {"API_TOKEN": "t0ken-4711\nX=1"}}, check=True)
    out = result.stdout + result.stderr
    assert result.returncode != 0 and "pytorch_backend_secret_env" in out and "API_TOKEN" in out, out[-3000:]
    assert "t0ken-4711" not in out, out[-3000:]


def test_a_bad_index_url_is_named_without_its_credentials(playbook):
    result = playbook(PLAY, extra_vars={"pytorch_backend_torch_index_url": "ftp://ci:t0ken-4711@example.org/simple"}, check=True)
    out = result.stdout + result.stderr
    assert result.returncode != 0 and "pytorch_backend_torch_index_url" in out and "ftp://***@example.org" in out, out[-3000:]
    assert "t0ken-4711" not in out, out[-3000:]


@pytest.mark.parametrize("host", ["::1", "::", "2001:db8::5"])
def test_ipv6_listen_addresses_pass_preflight(playbook, host):
    result = playbook(PLAY.replace("roles:\n    - role: pytorch_backend",
                                   "tasks:\n    - ansible.builtin.include_role:\n        name: pytorch_backend\n"
                                   "        tasks_from: steps/preflight.yml"),
                      extra_vars={"pytorch_backend_host": host}, check=True)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]


PREFLIGHT_ONLY = PLAY.replace("roles:\n    - role: pytorch_backend",
                              "tasks:\n    - ansible.builtin.include_role:\n        name: pytorch_backend\n"
                              "        tasks_from: steps/preflight.yml")


@pytest.mark.parametrize("proxy,passes", [("http://u:pr0xy-PW-4711@proxy.example.org:3128", True),
                                          ("http://u:pr0xy-PW-4711@proxy.example.org:3128\nX=1", False)],
                         ids=["good", "multi-line"])
def test_proxy_credentials_stay_out_of_verbose_output_and_errors(playbook, proxy, passes):
    """-v prints every checked item; a proxy's password is in none of them, nor in the error."""
    result = playbook(PREFLIGHT_ONLY, extra_vars={"pytorch_backend_environment": {"https_proxy": proxy}},
                      check=True, args=["-v"])
    out = result.stdout + result.stderr
    assert (result.returncode == 0) == passes, out[-3000:]
    assert "pytorch_backend_environment" in out and "proxy.example.org" in out, out[-3000:]
    assert "pr0xy-PW-4711" not in out, [line for line in out.splitlines() if "pr0xy-PW-4711" in line]
