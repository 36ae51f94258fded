"""Configuration: defaults, clamping, and bad values failing fast by name."""

import pytest

from conftest import run_service
from torch_backend import config


def test_defaults():
    cfg = config.load({}, cores=4)
    assert (cfg.host, cfg.port) == ("127.0.0.1", 8080)
    assert cfg.model_dir == "/var/lib/torch-backend/models"
    assert (cfg.workers, cfg.queue_size, cfg.max_body_bytes) == (1, 16, 16 * 1024 * 1024)
    assert (cfg.intra_op_threads, cfg.inter_op_threads) == (4, 1)
    assert cfg.log_level == "INFO" and cfg.use_nnpack is None and cfg.clamped == ()


def test_http_limits_defaults_and_values():
    cfg = config.load({}, cores=2)
    assert (cfg.max_response_bytes, cfg.header_timeout, cfg.body_timeout, cfg.idle_timeout,
            cfg.max_connections) == (64 * 1024 * 1024, 10, 60, 60, 0)
    cfg = config.load({"TORCH_BACKEND_MAX_RESPONSE_BYTES": "1024", "TORCH_BACKEND_HEADER_TIMEOUT": "1",
                       "TORCH_BACKEND_BODY_TIMEOUT": "3600", "TORCH_BACKEND_IDLE_TIMEOUT": "5",
                       "TORCH_BACKEND_MAX_CONNECTIONS": "100"}, cores=2)
    assert (cfg.max_response_bytes, cfg.header_timeout, cfg.body_timeout, cfg.idle_timeout,
            cfg.max_connections) == (1024, 1, 3600, 5, 100)


def test_connection_cap_is_the_lower_of_the_wish_and_the_descriptor_limit():
    import resource

    from torch_backend import limits

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    by_fds = limits.connection_cap()
    if soft != resource.RLIM_INFINITY:
        assert by_fds == max(limits.MIN_CONNECTIONS, soft - limits.FD_RESERVE)
    assert limits.connection_cap(0) == by_fds
    assert limits.connection_cap(20) == min(20, by_fds)
    assert limits.connection_cap(by_fds + 1000) == by_fds


def test_intra_default_divides_cores_between_workers():
    assert config.load({"TORCH_BACKEND_WORKERS": "2"}, cores=4).intra_op_threads == 2
    assert config.load({"TORCH_BACKEND_WORKERS": "3"}, cores=4).intra_op_threads == 1


def test_default_cores_are_the_cpu_budget():
    import os

    from torch_backend import cpu_budget

    cfg = config.load({})
    budget = cpu_budget.read_budget()
    assert cfg.cores == budget["budget"] <= len(os.sched_getaffinity(0))
    assert (cfg.affinity, cfg.quota_cpus, cfg.budget_source, cfg.cpu_stat) == \
        (budget["affinity"], budget["quota_cpus"], budget["source"], budget["cpu_stat"])


def _budget(budget, affinity=4, quota=None):
    return {"budget": budget, "affinity": affinity, "quota_cpus": quota,
            "source": "/sys/fs/cgroup/x.service/cpu.max" if quota else "affinity",
            "cpu_stat": "/sys/fs/cgroup/x.service/cpu.stat" if quota else None}


# The budget, not the affinity, sizes the defaults and the clamps: (budget, env) ->
# (workers, intra, inter, clamped notes).
BUDGET_TABLE = [
    (1, {}, (1, 1, 1), ()),
    (2, {}, (1, 2, 1), ()),
    (4, {}, (1, 4, 1), ()),
    (1, {"TORCH_BACKEND_WORKERS": "2"}, (1, 1, 1), ("TORCH_BACKEND_WORKERS 2->1",)),
    (2, {"TORCH_BACKEND_WORKERS": "2"}, (2, 1, 1), ()),
    (4, {"TORCH_BACKEND_WORKERS": "2"}, (2, 2, 1), ()),
    (4, {"TORCH_BACKEND_WORKERS": "3"}, (3, 1, 1), ()),
    (2, {"TORCH_BACKEND_WORKERS": "4"}, (2, 1, 1), ("TORCH_BACKEND_WORKERS 4->2",)),
    # A configured intra-op count stands as long as it fits...
    (4, {"TORCH_BACKEND_INTRA_OP_THREADS": "1"}, (1, 1, 1), ()),
    (4, {"TORCH_BACKEND_INTRA_OP_THREADS": "3"}, (1, 3, 1), ()),
    # ... and is clamped to the budget's share when it does not.
    (1, {"TORCH_BACKEND_INTRA_OP_THREADS": "4"}, (1, 1, 1),
     ("TORCH_BACKEND_INTRA_OP_THREADS 4->1",)),
    (4, {"TORCH_BACKEND_WORKERS": "2", "TORCH_BACKEND_INTRA_OP_THREADS": "4"}, (2, 2, 1),
     ("TORCH_BACKEND_INTRA_OP_THREADS 4->2",)),
    (2, {"TORCH_BACKEND_INTER_OP_THREADS": "4"}, (1, 2, 2),
     ("TORCH_BACKEND_INTER_OP_THREADS 4->2",)),
]


@pytest.mark.parametrize("how", ["cores", "budget"])
@pytest.mark.parametrize("budget,env,expected,clamped", BUDGET_TABLE)
def test_budget_sizes_threads_and_clamps(budget, env, expected, clamped, how):
    # The same numbers whether the budget is given as `cores` (tests) or comes from a
    # quota well below a 4-CPU affinity (read_budget's answer under CPUQuota=).
    if how == "cores":
        cfg = config.load(env, cores=budget)
    else:
        cfg = config.load(env, budget=_budget(budget, affinity=4, quota=budget + 0.5))
    assert (cfg.workers, cfg.intra_op_threads, cfg.inter_op_threads) == expected
    assert cfg.clamped == clamped
    assert cfg.cores == budget and cfg.workers * cfg.intra_op_threads <= budget
    assert cfg.intra_op_configured == ("TORCH_BACKEND_INTRA_OP_THREADS" in env)


def test_quota_below_the_affinity_lowers_the_default_threads():
    unlimited = config.load({}, budget=_budget(4, affinity=4))
    limited = config.load({}, budget=_budget(1, affinity=4, quota=1.5))
    assert (unlimited.cores, unlimited.intra_op_threads) == (4, 4)
    assert (limited.cores, limited.intra_op_threads, limited.affinity) == (1, 1, 4)
    assert (limited.quota_cpus, limited.budget_source, limited.cpu_stat) == \
        (1.5, "/sys/fs/cgroup/x.service/cpu.max", "/sys/fs/cgroup/x.service/cpu.stat")


def test_cores_given_to_load_stand_for_an_unlimited_budget():
    cfg = config.load({}, cores=3)
    assert (cfg.cores, cfg.affinity, cfg.quota_cpus, cfg.cpu_stat) == (3, 3, None, None)


def test_threads_are_clamped_to_cores_and_reported():
    cfg = config.load({"TORCH_BACKEND_WORKERS": "8", "TORCH_BACKEND_INTRA_OP_THREADS": "16",
                       "TORCH_BACKEND_INTER_OP_THREADS": "9"}, cores=2)
    assert (cfg.workers, cfg.intra_op_threads, cfg.inter_op_threads) == (2, 1, 2)
    assert cfg.workers * cfg.intra_op_threads <= 2
    assert any("TORCH_BACKEND_INTRA_OP_THREADS 16->1" in c for c in cfg.clamped)
    assert any("TORCH_BACKEND_WORKERS 8->2" in c for c in cfg.clamped)


@pytest.mark.parametrize("value,expected", [(None, None), ("", None), (" ", None),
                                            ("0", "0"), ("1", "1")])
def test_use_nnpack_values(value, expected):
    env = {} if value is None else {"USE_NNPACK": value}
    assert config.load(env, cores=1).use_nnpack == expected


BAD = [
    ("TORCH_BACKEND_PORT", "http"),
    ("TORCH_BACKEND_PORT", "70000"),
    ("TORCH_BACKEND_WORKERS", "0"),
    ("TORCH_BACKEND_QUEUE_SIZE", "-3"),
    ("TORCH_BACKEND_MAX_BODY_BYTES", "16M"),
    ("TORCH_BACKEND_INTRA_OP_THREADS", "0"),
    ("TORCH_BACKEND_INTER_OP_THREADS", "two"),
    ("TORCH_BACKEND_LOG_LEVEL", "LOUD"),
    ("USE_NNPACK", "false"),
    ("USE_NNPACK", "yes"),
    ("TORCH_BACKEND_CONFIG_DIGEST", "0123456789ABCDEF"),
    ("TORCH_BACKEND_CONFIG_DIGEST", "abc"),
    ("TORCH_BACKEND_CONFIG_DIGEST", "sha256:0123456789abcdef"),
    ("TORCH_BACKEND_CONFIG_DIGEST", "0" * 65),
    ("TORCH_BACKEND_CONFIG_DIGEST", "0123456789abcdeg"),
    ("TORCH_BACKEND_CONFIG_DIGEST", "01234567 89abcdef"),
    ("TORCH_BACKEND_MAX_RESPONSE_BYTES", "1023"),
    ("TORCH_BACKEND_HEADER_TIMEOUT", "0"),
    ("TORCH_BACKEND_BODY_TIMEOUT", "3601"),
    ("TORCH_BACKEND_IDLE_TIMEOUT", "1m"),
    ("TORCH_BACKEND_MAX_CONNECTIONS", "-1"),
    ("TORCH_BACKEND_MAX_CONNECTIONS", "1000001"),
    ("TORCH_BACKEND_DRAIN_SECONDS", "-1"),
    ("TORCH_BACKEND_DRAIN_SECONDS", "nan"),
    ("TORCH_BACKEND_DRAIN_SECONDS", "10s"),
    ("TORCH_BACKEND_REQUEST_DEADLINE_SECONDS", "0"),
    ("TORCH_BACKEND_REQUEST_DEADLINE_SECONDS", "inf"),
    ("TORCH_BACKEND_QUEUE_WAIT_SECONDS", "61"),
    ("TORCH_BACKEND_OVERLOAD_GRACE_SECONDS", "soon"),
    ("TORCH_BACKEND_ACCESS_LOG", "yes"),
    ("TORCH_BACKEND_ACCESS_LOG", "true"),
]


def test_drain_deadline_and_access_log_defaults_and_values():
    cfg = config.load({}, cores=2)
    assert (cfg.drain_seconds, cfg.request_deadline, cfg.queue_wait, cfg.overload_grace,
            cfg.access_log) == (10.0, 30.0, 0.5, 2.0, False)
    cfg = config.load({"TORCH_BACKEND_DRAIN_SECONDS": "0", "TORCH_BACKEND_REQUEST_DEADLINE_SECONDS": "2.5",
                       "TORCH_BACKEND_QUEUE_WAIT_SECONDS": "0", "TORCH_BACKEND_OVERLOAD_GRACE_SECONDS": "0.5",
                       "TORCH_BACKEND_ACCESS_LOG": "1"}, cores=2)
    assert (cfg.drain_seconds, cfg.request_deadline, cfg.queue_wait, cfg.overload_grace,
            cfg.access_log) == (0.0, 2.5, 0.0, 0.5, True)
    assert config.load({"TORCH_BACKEND_ACCESS_LOG": ""}, cores=2).access_log is False


@pytest.mark.parametrize("variable,value", BAD)
def test_bad_value_raises_naming_variable(variable, value):
    with pytest.raises(config.ConfigError) as info:
        config.load({variable: value}, cores=2)
    assert info.value.variable == variable and variable in str(info.value)


@pytest.mark.parametrize("variable,value", [BAD[0], BAD[4], BAD[8]])
def test_service_exits_nonzero_with_one_clear_line(variable, value, tmp_path):
    rc, stderr = run_service({variable: value}, tmp_path, timeout=60)
    assert rc == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "configuration error" in lines[0] and variable in lines[0] and repr(value) in lines[0]


def test_model_dir_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    rc, stderr = run_service({"TORCH_BACKEND_MODEL_DIR": str(path)}, tmp_path, timeout=60)
    assert rc == 2 and "TORCH_BACKEND_MODEL_DIR" in stderr


@pytest.mark.parametrize("value,expected", [(None, None), ("", None), ("  ", None),
                                            ("0123abcd", "0123abcd"),
                                            (" 0123456789abcdef\n", "0123456789abcdef"),
                                            ("f" * 64, "f" * 64)])
def test_config_digest_values(value, expected):
    env = {} if value is None else {"TORCH_BACKEND_CONFIG_DIGEST": value}
    assert config.load(env, cores=1).config_digest == expected


def test_bad_config_digest_message():
    with pytest.raises(config.ConfigError) as info:
        config.load({"TORCH_BACKEND_CONFIG_DIGEST": "0123456789ABCDEF"}, cores=1)
    assert str(info.value) == ("TORCH_BACKEND_CONFIG_DIGEST='0123456789ABCDEF': must be 8 to 64 "
                               "lowercase hexadecimal digits (the deploy's configuration digest), "
                               "or empty/unset")


def test_service_exits_on_bad_config_digest(tmp_path):
    rc, stderr = run_service({"TORCH_BACKEND_CONFIG_DIGEST": "not-hex"}, tmp_path, timeout=60)
    assert rc == 2, stderr
    (line,) = stderr.strip().splitlines()
    assert "configuration error" in line and "TORCH_BACKEND_CONFIG_DIGEST='not-hex'" in line
