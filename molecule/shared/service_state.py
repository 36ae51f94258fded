"""Run on a droplet (python3 - < this file): wait until torch-backend is ready by itself, then
print its /v2 drift report, the number of NNPACK warning lines in its journal since boot, and the
SHA-1 of its environment file."""
import hashlib
import json
import subprocess
import time
import urllib.request

deadline = time.monotonic() + 600
ready = False
while time.monotonic() < deadline and not ready:
    try:
        ready = urllib.request.urlopen("http://127.0.0.1:8080/v2/health/ready", timeout=5).status == 200
    except OSError:
        time.sleep(2)
server = json.load(urllib.request.urlopen("http://127.0.0.1:8080/v2", timeout=10)) if ready else {}
journal = subprocess.run(["journalctl", "-b", "-u", "torch-backend.service", "-o", "cat", "--no-pager"],
                         capture_output=True, text=True).stdout
print(json.dumps({
    "ready": ready,
    "cpu_drift": server.get("cpu_drift"),
    "nnpack": server.get("nnpack"),
    "warning_lines": sum("Could not initialize NNPACK" in line for line in journal.splitlines()),
    "drift_lines": [line for line in journal.splitlines() if "CPU drift" in line],
    "env_sha1": hashlib.sha1(open("/etc/torch-backend/torch-backend.env", "rb").read()).hexdigest(),
}))
