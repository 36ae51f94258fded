"""Run on a droplet in the background: ask torch-backend for readiness every 0.2 s until
/run/poller.stop appears, then write the counts to /run/poller.json. Proves "serving
throughout" from inside the guest (the service listens on loopback only)."""
import json
import os
import time
import urllib.request

URL = "http://127.0.0.1:8080/v2/health/ready"
counts = {"requests": 0, "ok": 0, "failures": 0, "first_failure": None, "seconds": 0.0}
start = time.monotonic()
while not os.path.exists("/run/poller.stop"):
    counts["requests"] += 1
    try:
        ok = urllib.request.urlopen(URL, timeout=5).status == 200
        error = None if ok else "not ready"
    except OSError as exc:
        ok, error = False, str(exc)
    if ok:
        counts["ok"] += 1
    else:
        counts["failures"] += 1
        counts["first_failure"] = counts["first_failure"] or "%.1f s: %s" % (time.monotonic() - start, error)
    time.sleep(0.2)
counts["seconds"] = round(time.monotonic() - start, 1)
with open("/run/poller.json.tmp", "w") as f:
    json.dump(counts, f)
os.replace("/run/poller.json.tmp", "/run/poller.json")
