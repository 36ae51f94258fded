"""Load shedding, readiness while loading, sd_notify and graceful shutdown."""

import json
import socket
import threading
import time

import pytest

from conftest import SLOW_SERVER_ENV, ServerProcess, drain_datagrams, write_slow_model

pytestmark = pytest.mark.slow


def slow_request(server, loops, results, key):
    payload = {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32",
                           "data": [float(loops)]}]}
    results[key] = server.infer("slow", payload)


def wait_metric(server, name, value, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.metric(name) == value:
            return
        time.sleep(0.02)
    raise AssertionError(f"{name} never reached {value}")


@pytest.fixture
def slow_server(tmp_path):
    write_slow_model(tmp_path / "models")
    srv = ServerProcess(tmp_path, {**SLOW_SERVER_ENV,
                                   "TORCH_BACKEND_MODEL_DIR": str(tmp_path / "models"),
                                   "TORCH_BACKEND_WORKERS": "1",
                                   "TORCH_BACKEND_QUEUE_SIZE": "1",
                                   # refuse at once when full, as this test's "quickly" means
                                   "TORCH_BACKEND_QUEUE_WAIT_SECONDS": "0"}).start()
    srv.wait_ready()
    yield srv
    srv.kill()


def test_full_queue_answers_503_quickly(slow_server, slow_loops_per_second):
    srv = slow_server
    results = {}
    long_loops = int(1.5 * slow_loops_per_second)
    a = threading.Thread(target=slow_request, args=(srv, long_loops, results, "a"))
    a.start()
    wait_metric(srv, "torch_backend_inference_in_progress", 1)
    b = threading.Thread(target=slow_request, args=(srv, 0, results, "b"))
    b.start()
    wait_metric(srv, "torch_backend_queue_depth", 1)

    start = time.monotonic()
    status, headers, data = srv.infer("slow", {"inputs": [{"name": "x", "shape": [1, 1],
                                                            "datatype": "FP32", "data": [0.0]}]})
    assert time.monotonic() - start < 1.0
    assert status == 503 and headers.get("retry-after") == "1"
    assert "queue is full" in json.loads(data)["error"]
    # Health checks are not queued behind inference.
    assert srv.get_json("/v2/health/live")[0] == 200

    a.join(60)
    b.join(60)
    for key in "ab":
        assert results[key][0] == 200, results[key]
    assert json.loads(results["b"][2])["outputs"][0]["data"] == [0.0]
    assert 'kind="unavailable"' in srv.metrics()
    assert srv.terminate() == 0


def test_sigterm_drains_in_flight_request(tmp_path, slow_loops_per_second):
    notify_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify_path))
    sock.settimeout(0.0)
    write_slow_model(tmp_path / "models")
    srv = ServerProcess(tmp_path, {**SLOW_SERVER_ENV,
                                   "TORCH_BACKEND_MODEL_DIR": str(tmp_path / "models"),
                                   "NOTIFY_SOCKET": str(notify_path)}).start()
    try:
        srv.wait_ready()
        messages = drain_datagrams(sock)
        assert any(m.startswith("READY=1") for m in messages), messages
        assert any("STATUS=ready" in m for m in messages), messages

        results = {}
        loops = int(1.5 * slow_loops_per_second)
        t = threading.Thread(target=slow_request, args=(srv, loops, results, "a"))
        t.start()
        wait_metric(srv, "torch_backend_inference_in_progress", 1)
        started = time.monotonic()
        srv.proc.send_signal(15)
        t.join(60)
        rc = srv.proc.wait(30)
        assert time.monotonic() - started < 15
        assert rc == 0, srv.stderr
        status, _, body = results["a"]
        assert status == 200 and json.loads(body)["outputs"][0]["data"] == [2.0 * loops]
        assert any("STOPPING=1" in m for m in drain_datagrams(sock))
        assert "drained" in srv.stderr
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()
    finally:
        srv.kill()
        sock.close()


def test_not_ready_while_loading(tmp_path, slow_loops_per_second):
    # A model whose warm-up takes ~2 s: the server listens, but is not ready.
    write_slow_model(tmp_path / "models", base_loops=int(2.0 * slow_loops_per_second))
    env = {**SLOW_SERVER_ENV, "TORCH_BACKEND_MODEL_DIR": str(tmp_path / "models")}
    srv = ServerProcess(tmp_path, env).start()
    try:
        srv.wait_listening()
        assert srv.get_json("/v2/health/live")[0] == 200
        assert srv.get_json("/v2/health/ready") == (503, {"ready": False})
        status, _, body = srv.infer("conv2d-selftest", {"inputs": []})
        assert status == 503 and "not ready" in json.loads(body)["error"]
        assert srv.metric("torch_backend_ready") == 0
        srv.wait_ready()
        assert srv.get_json("/v2/models/slow/ready")[0] == 200
        assert srv.terminate() == 0
    finally:
        srv.kill()


def test_sigterm_while_loading_exits_cleanly_without_becoming_ready(tmp_path,
                                                                    slow_loops_per_second):
    write_slow_model(tmp_path / "models", base_loops=int(1.5 * slow_loops_per_second))
    env = {**SLOW_SERVER_ENV, "TORCH_BACKEND_MODEL_DIR": str(tmp_path / "models")}
    srv = ServerProcess(tmp_path, env).start()
    try:
        srv.wait_listening()
        assert srv.get_json("/v2/health/ready")[0] == 503
        srv.proc.send_signal(15)
        assert srv.proc.wait(60) == 0, srv.stderr
        assert "ready:" not in srv.stderr and "stopped" in srv.stderr
    finally:
        srv.kill()
