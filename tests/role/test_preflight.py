"""Bad variables fail the play before any task touches the host, naming the variable.

Runs the real role against localhost in check mode (so even a preflight bug could not
change this machine) and checks that no install task was reached.
"""
import pytest

PLAY = """
- hosts: localhost
  gather_facts: false
  roles:
    - role: pytorch_backend
"""

FIRST_INSTALL_TASK = "Create the service group"

BAD = [
    ("pytorch_backend_port", 80, "pytorch_backend_port"),
    ("pytorch_backend_port", "eighty", "pytorch_backend_port"),
    ("pytorch_backend_candidate_port", 8080, "pytorch_backend_candidate_port"),
    ("pytorch_backend_candidate_port", 70000, "pytorch_backend_candidate_port"),
    ("pytorch_backend_workers", 0, "pytorch_backend_workers"),
    ("pytorch_backend_intra_op_threads", -1, "pytorch_backend_intra_op_threads"),
    ("pytorch_backend_inter_op_threads", 0, "pytorch_backend_inter_op_threads"),
    ("pytorch_backend_queue_size", 0, "pytorch_backend_queue_size"),
    ("pytorch_backend_max_body_bytes", 10, "pytorch_backend_max_body_bytes"),
    ("pytorch_backend_log_level", "LOUD", "pytorch_backend_log_level"),
    ("pytorch_backend_releases_keep", 1, "pytorch_backend_releases_keep"),
    ("pytorch_backend_base_dir", "opt/torch", "pytorch_backend_base_dir"),
    ("pytorch_backend_base_dir", "/opt/torch backend", "pytorch_backend_base_dir"),
    ("pytorch_backend_env_file", "/etc/torch-backend/", "pytorch_backend_env_file"),
    ("pytorch_backend_state_file", "/etc/torch-backend/torch-backend.env", "pytorch_backend_state_file"),
    ("pytorch_backend_user", "root", "pytorch_backend_user"),
    ("pytorch_backend_group", "Bad Group", "pytorch_backend_group"),
    ("pytorch_backend_host", "127.0.0.1; rm -rf /", "pytorch_backend_host"),
    ("pytorch_backend_host", "1::2::3", "pytorch_backend_host '1::2::3' is not a valid IPv6 address"),
    ("pytorch_backend_host", "[::1]", "pytorch_backend_host '[::1]' has brackets"),
    ("pytorch_backend_host", "256.0.0.1", "pytorch_backend_host '256.0.0.1' is not a valid IPv4 address"),
    ("pytorch_backend_requirements", ["numpy==2.4.6"], "pytorch_backend_requirements"),
    ("pytorch_backend_requirements", ["torch==2.13.0", "torch==2.12.0"], "pytorch_backend_requirements"),
    ("pytorch_backend_requirements", "torch==2.13.0", "pytorch_backend_requirements"),
    ("pytorch_backend_extra_env", {"lower": "x"}, "pytorch_backend_extra_env"),
    ("pytorch_backend_extra_env", {"USE_NNPACK": "1"}, "pytorch_backend_extra_env"),
    ("pytorch_backend_extra_env", {"OMP_PROC_BIND": "a\nUSE_NNPACK=1"}, "pytorch_backend_extra_env"),
    ("pytorch_backend_extra_env", ["A=1"], "pytorch_backend_extra_env"),
    ("pytorch_backend_wheelhouse", "/nonexistent/wheelhouse", "pytorch_backend_wheelhouse"),
    ("pytorch_backend_environment", {"bad-name": "x"}, "pytorch_backend_environment"),
    ("pytorch_backend_environment", {"https_proxy": "http://p\nx"}, "pytorch_backend_environment"),
    ("pytorch_backend_secret_env", {"lower": "x"}, "pytorch_backend_secret_env"),
    ("pytorch_backend_secret_env", {"USE_NNPACK": "1"}, "pytorch_backend_secret_env"),
    ("pytorch_backend_secret_env_file", "/etc/torch-backend/torch-backend.env", "pytorch_backend_secret_env_file"),
    ("pytorch_backend_secret_env_file", "relative/secret.env", "pytorch_backend_secret_env_file"),
    ("pytorch_backend_probe_timeout", 0, "pytorch_backend_probe_timeout"),
    ("pytorch_backend_memory_max", "lots", "pytorch_backend_memory_max"),
    ("pytorch_backend_memory_max", "150%", "pytorch_backend_memory_max"),
    ("pytorch_backend_memory_max", "2G\nMemoryMax=infinity", "pytorch_backend_memory_max"),
    ("pytorch_backend_candidate_min_available_mb", -1, "pytorch_backend_candidate_min_available_mb"),
    ("pytorch_backend_candidate_low_memory", "maybe", "pytorch_backend_candidate_low_memory"),
    ("pytorch_backend_verify", "perhaps", "pytorch_backend_verify"),
    ("pytorch_backend_models", [{"name": "m", "file": "/etc/hostname", "sha256": "xyz",
                                 "inputs": [], "outputs": []}], "pytorch_backend_models"),
    ("pytorch_backend_models", [{"name": "conv2d-selftest", "file": "/etc/hostname", "sha256": "0" * 64,
                                 "inputs": [], "outputs": []}], "pytorch_backend_models"),
    ("pytorch_backend_models", [{"name": "m", "file": "/nonexistent.pt", "sha256": "0" * 64,
                                 "inputs": [], "outputs": []}], "pytorch_backend_models"),
    ("pytorch_backend_models", [{"name": "m", "sha256": "0" * 64}], "pytorch_backend_models"),
]


@pytest.mark.parametrize("name,value,named", BAD, ids=[f"{n}={v!r}"[:60] for n, v, _ in BAD])
def test_bad_value_fails_before_any_change(playbook, name, value, named):
    result = playbook(PLAY, extra_vars={name: value}, check=True)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out[-3000:]
    assert named in out, out[-3000:]
    assert FIRST_INSTALL_TASK not in out, out[-3000:]


def test_good_values_pass_preflight(playbook):
    """The same play with the defaults gets past preflight (proves the checks above can pass)."""
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
