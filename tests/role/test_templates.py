"""Rendering of the environment file and the unit from the role's templates.

The NNPACK facts are given (not probed) here: these tests are about what the
templates and the decision write; the probe has its own tests in tests/module.
"""
import pytest

from conftest import ROLE, VARS_PLAY, decided

STATUSES = ["supported", "unsupported_hardware", "not_built", "cpuinfo_failed", "probe_failed", "torch_missing"]

TASKS = """    - name: Render
      ansible.builtin.template:
        src: "{role}/templates/{template}"
        dest: "{dest}"
        mode: "0600"
"""



def render(playbook, tmp_path, template, facts, **extra):
    dest = tmp_path / "out"
    # on a host with no record yet, probed with the release's interpreter
    result = playbook(VARS_PLAY + TASKS.format(role=ROLE, template=template, dest=dest),
                      extra_vars=dict(_pytorch_backend_probe=decided(facts), **extra))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return dest.read_text()


def facts(status):
    return {"status": status, "available": {"supported": True, "unsupported_hardware": False,
                                            "not_built": False, "cpuinfo_failed": False}.get(status),
            "predicted_available": status == "supported",
            "cpu_model": "Test CPU", "fingerprint": "abcd", "torch_cpu_capability": "AVX2", "reason": "test",
            "cpu_flags": {"avx2": status == "supported", "fma": status == "supported"}, "cache_enumerated": True}


@pytest.mark.parametrize("status", STATUSES)
def test_env_file_has_use_nnpack_0_exactly_when_not_supported(playbook, tmp_path, status):
    text = render(playbook, tmp_path, "torch-backend.env.j2", facts(status))
    lines = text.splitlines()
    assert ("USE_NNPACK=0" in lines) == (status != "supported")
    # a torch without NNPACK is named as such, not as a CPU that cannot run it
    assert any("has no NNPACK at all" in line for line in lines) == (status == "not_built")
    assert any("NNPACK cannot initialize here" in line for line in lines) == (status not in ("supported", "not_built"))
    assert not any(line.startswith("USE_NNPACK=1") for line in lines)
    assert lines[0].startswith("#") and "Ansible managed" in text
    assert "TORCH_BACKEND_PORT=8080" in lines and "TORCH_BACKEND_HOST=127.0.0.1" in lines


def test_env_file_quotes_extra_env(playbook, tmp_path):
    text = render(playbook, tmp_path, "torch-backend.env.j2", facts("supported"),
                  pytorch_backend_extra_env={"OMP_WAIT_POLICY": "passive", "QUOTE_ME": 'a "b" \\c'})
    assert 'OMP_WAIT_POLICY="passive"' in text.splitlines()
    assert 'QUOTE_ME="a \\"b\\" \\\\c"' in text.splitlines()


def test_env_file_threads_only_when_set(playbook, tmp_path):
    assert "INTRA_OP" not in render(playbook, tmp_path, "torch-backend.env.j2", facts("supported"))
    text = render(playbook, tmp_path, "torch-backend.env.j2", facts("supported"), pytorch_backend_intra_op_threads=2)
    assert "TORCH_BACKEND_INTRA_OP_THREADS=2" in text.splitlines()


def test_env_file_carries_the_http_limits(playbook, tmp_path):
    """Every HTTP limit the service reads has its role variable, written as given."""
    lines = render(playbook, tmp_path, "torch-backend.env.j2", facts("supported")).splitlines()
    for line in ["TORCH_BACKEND_MAX_RESPONSE_BYTES=67108864", "TORCH_BACKEND_HEADER_TIMEOUT=10",
                 "TORCH_BACKEND_BODY_TIMEOUT=60", "TORCH_BACKEND_IDLE_TIMEOUT=60",
                 "TORCH_BACKEND_MAX_CONNECTIONS=0"]:
        assert line in lines, line
    lines = render(playbook, tmp_path, "torch-backend.env.j2", facts("supported"),
                   pytorch_backend_max_response_bytes=2048, pytorch_backend_header_timeout=5,
                   pytorch_backend_body_timeout=30, pytorch_backend_idle_timeout=15,
                   pytorch_backend_max_connections=500).splitlines()
    for line in ["TORCH_BACKEND_MAX_RESPONSE_BYTES=2048", "TORCH_BACKEND_HEADER_TIMEOUT=5",
                 "TORCH_BACKEND_BODY_TIMEOUT=30", "TORCH_BACKEND_IDLE_TIMEOUT=15",
                 "TORCH_BACKEND_MAX_CONNECTIONS=500"]:
        assert line in lines, line


def test_max_connections_limit_is_the_units_descriptor_limit_less_the_reserve(playbook, tmp_path):
    """Preflight's upper bound for pytorch_backend_max_connections is what the service can hold
    under the unit's LimitNOFILE (FD_RESERVE below it): a larger value would be capped silently."""
    import re

    import yaml

    lines = render(playbook, tmp_path, "torch-backend.service.j2", facts("supported")).splitlines()
    nofile = int(next(ln for ln in lines if ln.startswith("LimitNOFILE=")).split("=", 1)[1])
    reserve = int(re.search(r"^FD_RESERVE = (\d+)$", (ROLE / "files" / "torch-backend" / "torch_backend"
                                                       / "limits.py").read_text(), re.M).group(1))
    table = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())["_pytorch_backend_whole_numbers"]
    assert table["pytorch_backend_max_connections"]["max"] == nofile - reserve


def test_unit_is_notify_hardened_and_points_at_current(playbook, tmp_path):
    text = render(playbook, tmp_path, "torch-backend.service.j2", facts("supported"))
    lines = text.splitlines()
    for expected in ["Type=notify", "User=torch-backend", "Restart=on-failure", "NoNewPrivileges=true",
                     "ProtectSystem=strict", "EnvironmentFile=/etc/torch-backend/torch-backend.env",
                     "ExecStart=/opt/torch-backend/current/venv/bin/python -m torch_backend serve",
                     "IPAddressDeny=any"]:
        assert expected in lines, expected
    # oneDNN JIT-compiles kernels and NNPACK's cpuinfo needs /proc/cpuinfo
    assert "MemoryDenyWriteExecute=true" not in lines and "ProcSubset=pid" not in lines


def test_unit_opens_ip_access_when_listening_beyond_loopback(playbook, tmp_path):
    text = render(playbook, tmp_path, "torch-backend.service.j2", facts("supported"), pytorch_backend_host="0.0.0.0")
    assert "IPAddressDeny=any" not in text


@pytest.mark.parametrize("host,loopback", [("::1", True), ("0:0:0:0:0:0:0:1", True), ("127.0.0.2", True),
                                           ("::", False), ("2001:db8::5", False)])
def test_unit_ip_access_follows_the_listen_address_family_aware(playbook, tmp_path, host, loopback):
    lines = render(playbook, tmp_path, "torch-backend.service.j2", facts("supported"),
                   pytorch_backend_host=host).splitlines()
    assert ("IPAddressDeny=any" in lines) is loopback
    assert "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6" in lines


HARDENING_PREFIXES = ("NoNewPrivileges=", "CapabilityBoundingSet=", "Private", "Protect", "Restrict", "SystemCall",
                      "IPAddress", "User=", "Group=", "UMask=", "LockPersonality=", "RemoveIPC=", "DevicePolicy=")


def test_candidate_unit_is_as_hardened_runs_the_release_on_loopback_and_never_restarts(playbook, tmp_path):
    main = render(playbook, tmp_path, "torch-backend.service.j2", facts("supported"), pytorch_backend_host="0.0.0.0")
    candidate = render(playbook, tmp_path, "torch-backend.service.j2", facts("supported"), pytorch_backend_host="0.0.0.0",
                       _pb_candidate=True, _pytorch_backend_release="/opt/torch-backend/releases/r1",
                       _pytorch_backend_release_id="r1")
    main_lines, lines = main.splitlines(), candidate.splitlines()
    exec_start = [line for line in lines if line.startswith("ExecStart=")]
    assert exec_start == ["ExecStart=/usr/bin/env TORCH_BACKEND_HOST=127.0.0.1 TORCH_BACKEND_PORT=8081 "
                          "TORCH_BACKEND_MODEL_DIR=/opt/torch-backend/releases/r1/models "
                          "TORCH_BACKEND_CPU_RECORD=/run/torch-backend-candidate/cpu-record.json "
                          "/opt/torch-backend/releases/r1/venv/bin/python -m torch_backend serve"]
    assert "EnvironmentFile=/run/torch-backend-candidate/env" in lines
    assert "Restart=no" in lines and "[Install]" not in lines and "Type=notify" in lines
    # loopback only even when the serving unit listens beyond it
    assert "IPAddressDeny=any" in lines and "IPAddressDeny=any" not in main_lines
    hardening = {line for line in main_lines if line.startswith(HARDENING_PREFIXES)}
    assert hardening and hardening <= set(lines)


def test_serving_unit_carries_a_memory_limit_and_the_candidate_goes_first_under_oom(playbook, tmp_path):
    main = render(playbook, tmp_path, "torch-backend.service.j2", facts("supported")).splitlines()
    candidate = render(playbook, tmp_path, "torch-backend.service.j2", facts("supported"),
                       _pb_candidate=True, _pytorch_backend_release="/opt/torch-backend/releases/r1",
                       _pytorch_backend_release_id="r1").splitlines()
    assert "MemoryMax=75%" in main and "OOMScoreAdjust=1000" not in main
    # the candidate is a second copy beside the serving one: the OOM killer's first choice
    assert "OOMScoreAdjust=1000" in candidate and not any(line.startswith("MemoryMax=") for line in candidate)
    unlimited = render(playbook, tmp_path, "torch-backend.service.j2", facts("supported"), pytorch_backend_memory_max="")
    assert not any(line.startswith("MemoryMax=") for line in unlimited.splitlines())
    sized = render(playbook, tmp_path, "torch-backend.service.j2", facts("supported"), pytorch_backend_memory_max="1536M")
    assert "MemoryMax=1536M" in sized.splitlines()


def test_unit_descriptor_limit_leaves_room_for_a_connection_flood(playbook, tmp_path):
    """The service caps its connections FD_RESERVE below the soft descriptor limit
    (torch_backend/limits.py): the unit's LimitNOFILE must leave thousands, and with no
    thread per connection a fixed TasksMax bounds workers, codec and torch threads."""
    import re

    lines = render(playbook, tmp_path, "torch-backend.service.j2", facts("supported")).splitlines()
    limits = dict(ln.split("=", 1) for ln in lines if ln.startswith(("LimitNOFILE=", "TasksMax=")))
    reserve = int(re.search(r"^FD_RESERVE = (\d+)$", (ROLE / "files" / "torch-backend" / "torch_backend"
                                                       / "limits.py").read_text(), re.M).group(1))
    assert int(limits["LimitNOFILE"]) - reserve >= 4096, limits
    assert 256 <= int(limits["TasksMax"]) <= 4096, limits


def test_secret_env_is_a_second_environment_file_only_when_given_and_stays_out_of_the_plain_one(playbook, tmp_path):
    plain = render(playbook, tmp_path, "torch-backend.service.j2", facts("supported")).splitlines()
    assert not any("secret" in line for line in plain if line.startswith("EnvironmentFile="))
    secret = {"pytorch_backend_secret_env": {"API_TOKEN": "t0ken"}}
    main = render(playbook, tmp_path, "torch-backend.service.j2", facts("supported"), **secret).splitlines()
    files = [line for line in main if line.startswith("EnvironmentFile=")]
    # the secret file comes second: systemd reads it after the plain one
    assert files == ["EnvironmentFile=/etc/torch-backend/torch-backend.env", "EnvironmentFile=/etc/torch-backend/secret.env"]
    candidate = render(playbook, tmp_path, "torch-backend.service.j2", facts("supported"), _pb_candidate=True,
                       _pytorch_backend_release="/opt/torch-backend/releases/r1", _pytorch_backend_release_id="r1", **secret)
    assert "EnvironmentFile=/run/torch-backend-candidate/secret.env" in candidate.splitlines()
    env = render(playbook, tmp_path, "torch-backend.env.j2", facts("supported"), **secret)
    assert "t0ken" not in env and "API_TOKEN" not in env
    text = render(playbook, tmp_path, "torch-backend.secret.env.j2", facts("supported"),
                  pytorch_backend_secret_env={"API_TOKEN": "t0ken", "QUOTED": 'a "b" \\c'})
    assert 'API_TOKEN="t0ken"' in text.splitlines() and 'QUOTED="a \\"b\\" \\\\c"' in text.splitlines()


@pytest.mark.parametrize("host,stream,dual", [("127.0.0.1", "127.0.0.1:8080", False), ("::1", "[::1]:8080", False),
                                              ("0.0.0.0", "0.0.0.0:8080", False), ("::", "[::]:8080", True),
                                              ("localhost", "127.0.0.1:8080", False)])
def test_socket_unit_listens_where_the_service_would_bind(playbook, tmp_path, host, stream, dual):
    """systemd holds the listening socket: the address the service would bind, its backlog, Nagle off."""
    lines = render(playbook, tmp_path, "torch-backend.socket.j2", facts("supported"), pytorch_backend_host=host,
                   pytorch_backend_listen_backlog=4096).splitlines()
    assert f"ListenStream={stream}" in lines
    assert ("BindIPv6Only=both" in lines) == dual
    assert "Backlog=4096" in lines and "NoDelay=true" in lines and "Service=torch-backend.service" in lines
    assert "WantedBy=sockets.target" in lines


def test_serving_unit_takes_the_socket_drains_within_its_stop_timeout_and_reloads_warm(playbook, tmp_path):
    lines = render(playbook, tmp_path, "torch-backend.service.j2", facts("supported"),
                   pytorch_backend_drain_seconds=45).splitlines()
    assert {"Requires=torch-backend.socket", "After=torch-backend.socket", "Sockets=torch-backend.socket"} <= set(lines)
    # the stop timeout follows the drain, with room for the 503s and the exit after it
    assert "TimeoutStopSec=55" in lines
    assert "ExecReload=+/usr/bin/systemctl --no-block start torch-backend-reload.service" in lines
    env = render(playbook, tmp_path, "torch-backend.env.j2", facts("supported"), pytorch_backend_drain_seconds=45,
                 pytorch_backend_request_deadline=12, pytorch_backend_access_log=True).splitlines()
    assert {"TORCH_BACKEND_DRAIN_SECONDS=45", "TORCH_BACKEND_REQUEST_DEADLINE_SECONDS=12",
            "TORCH_BACKEND_ACCESS_LOG=1"} <= set(env)
    assert "TORCH_BACKEND_ACCESS_LOG=0" in render(playbook, tmp_path, "torch-backend.env.j2", facts("supported")).splitlines()


def test_handover_unit_is_the_serving_unit_on_the_same_socket_without_restart_or_install(playbook, tmp_path):
    main = render(playbook, tmp_path, "torch-backend.service.j2", facts("supported")).splitlines()
    handover = render(playbook, tmp_path, "torch-backend.service.j2", facts("supported"), _pb_handover=True).splitlines()
    assert "Sockets=torch-backend.socket" in handover and "Restart=no" in handover
    # each start of either unit leaves the shared socket non-blocking for the process serving it
    assert "NonBlocking=true" in main and "NonBlocking=true" in handover
    assert "[Install]" not in handover and not any(line.startswith("ExecReload=") for line in handover)
    # what it runs, and how hardened, is the serving unit's
    same = [line for line in main if line.startswith(("ExecStart=", "EnvironmentFile=", "User=", "MemoryMax=",
                                                       "SystemCallFilter=", "ProtectSystem=", "TimeoutStopSec="))]
    assert same and all(line in handover for line in same)


def test_reload_unit_starts_the_second_process_before_it_restarts_the_service_and_always_stops_it(playbook, tmp_path):
    lines = render(playbook, tmp_path, "torch-backend-reload.service.j2", facts("supported")).splitlines()
    starts = [line for line in lines if line.startswith("ExecStart=")]
    # a handover is not counted against the crash-loop start limit (whose hit fails the socket too)
    assert starts == ["ExecStart=-/usr/bin/systemctl reset-failed torch-backend.service",
                      "ExecStart=-/usr/bin/systemctl reset-failed torch-backend-handover.service",
                      "ExecStart=/usr/bin/systemctl start torch-backend-handover.service",
                      "ExecStart=/usr/bin/systemctl restart torch-backend.service"]
    assert "ExecStopPost=/usr/bin/systemctl stop torch-backend-handover.service" in lines
    assert "Type=oneshot" in lines


def test_cpu_quota_limits_the_serving_and_handover_units_only_when_given(playbook, tmp_path):
    assert not any(line.startswith("CPUQuota=")
                   for line in render(playbook, tmp_path, "torch-backend.service.j2", facts("supported")).splitlines())
    for handover in (False, True):
        lines = render(playbook, tmp_path, "torch-backend.service.j2", facts("supported"), pytorch_backend_cpu_quota="150%",
                       _pb_handover=handover).splitlines()
        assert "CPUQuota=150%" in lines
