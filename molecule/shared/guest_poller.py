"""Run on a droplet in the background: send torch-backend one self-test inference every 0.1 s,
each on a fresh connection with a 5 s timeout (a load balancer's client), until /run/poller.stop
appears, then write the counts to /run/poller.json. Proves "serving throughout" from inside the
guest (the service listens on loopback only): a refused or reset connection, a timeout or any
answer but 200 is a failure, counted by kind; the slowest answer and the first failures are
kept with their wall-clock time, to be read against the guest's journal."""
import json
import os
import time
import urllib.error
import urllib.request

URL = "http://127.0.0.1:8080/v2/models/conv2d-selftest/infer"
BODY = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8],
                               "data": [float(((3 * i + 5 * j) % 11) - 5) for i in range(8) for j in range(8)]}]}).encode()
counts = {"requests": 0, "ok": 0, "failures": 0, "kinds": {}, "first_failure": None, "longest_gap": 0.0,
          "slowest": 0.0, "slowest_at": None, "failed": [], "seconds": 0.0}
start = last_ok = time.monotonic()
while not os.path.exists("/run/poller.stop"):
    counts["requests"] += 1
    sent_at = time.strftime("%H:%M:%S")
    sent = time.monotonic()
    request = urllib.request.Request(URL, data=BODY, headers={"Content-Type": "application/json"})
    try:
        ok = urllib.request.urlopen(request, timeout=5).status == 200
        error = None if ok else "status"
    except urllib.error.HTTPError as exc:
        ok, error = False, "HTTP %d" % exc.code
    except OSError as exc:
        ok = False
        reason = getattr(exc, "reason", exc)
        error = type(reason).__name__ if not isinstance(reason, str) else reason
    now = time.monotonic()
    if now - sent > counts["slowest"]:
        counts["slowest"], counts["slowest_at"] = round(now - sent, 2), sent_at
    if ok:
        counts["ok"] += 1
        last_ok = now
    else:
        counts["failures"] += 1
        counts["kinds"][error] = counts["kinds"].get(error, 0) + 1
        counts["first_failure"] = counts["first_failure"] or "%.1f s: %s" % (now - start, error)
        if len(counts["failed"]) < 10:
            counts["failed"].append("%s +%.2f s: %s" % (sent_at, now - sent, error))
    counts["longest_gap"] = round(max(counts["longest_gap"], now - last_ok), 1)
    time.sleep(0.1)
counts["seconds"] = round(time.monotonic() - start, 1)
with open("/run/poller.json.tmp", "w") as f:
    json.dump(counts, f)
os.replace("/run/poller.json.tmp", "/run/poller.json")
