"""Fuzz the real torch-backend service over HTTP with 10,000+ generated requests.

Starts `python -m torch_backend serve` through tests/service/harness.py
(PYTHONPATH = the role's package dir, 127.0.0.1, a free port, the built-in
conv2d-selftest model only, the service's default limits) and sends --cases
requests, one at a time, over a keep-alive connection (a fresh one where a
case needs it). Categories:

  valid           correct self-test requests: flat/nested JSON or binary input,
                  JSON or binary output, batch 1-64, Expect: 100-continue,
                  two pipelined requests
  hypothesis      the property test's generator (strategies.py, beside this file)
  malformed-json  cut, garbage, NaN literals, deep nesting, bad UTF-8, ...
  wrong-types     one field of a valid request given the wrong type
  bad-shape       wrong rank, zero/negative/huge dimensions, counts that disagree
  wrong-datatype  FP64, INT32, BYTES, "fp32", ... for the FP32 input
  unknown-model   unknown model names on every model route
  binary-header   wrong/negative/huge Inference-Header-Content-Length,
                  binary_data_size that disagrees with the bytes
  truncated       Content-Length larger than what is sent (then half-close)
  method-path     every method on every route, unknown paths, unknown methods
  oversized       Content-Length over TORCH_BACKEND_MAX_BODY_BYTES (headers only,
                  part of the body, or all of it)
  http-garbage    bad request lines and versions, long/many headers, chunked,
                  missing/invalid Content-Length, empty connections
  near-limit      (last, --near-limit of them) valid requests just under the
                  body limit: the worst case for the server's memory
  client-abort    (on by default, --no-client-aborts) the client resets the connection
                  mid-request or before reading the answer

Checks, each failure counted as a violation (exit status 1):
  * no 5xx, except 505 for an HTTP major version other than 1, the answer
    RFC 9110 prescribes (shown apart in the summary); 503 included: with one
    client the inference queue never fills;
  * each case gets a status its request implies (404 unknown model, 405 wrong
    method, 413 oversized, 400 bad body or a request line h11 refuses, ...):
    every answer has a status line, every error body is JSON with an "error"
    string;
  * every 200 to an inference request carries the right numbers: compared with
    a numpy convolution that is first checked against the pure-Python
    reference (the role's filter plugin, filter_plugins/selftest.py);
  * at the end the server is alive, /v2/health/ready answers 200, its stderr
    holds no traceback, and it exits 0 on SIGTERM.

Prints progress lines and a summary: cases by category, status counts, 5xx
count, wall time, and the server's peak resident memory (VmHWM from
/proc/PID/status) when ready, after the generated cases and after the
near-limit ones.

Run from the repository root with the project's venv:

    .venv/bin/python -m tests.service.fuzz [--cases N] [--seed S]

Modules: reference.py (how an answer is judged), client.py (the raw HTTP
client), cases.py (the generators), strategies.py (the Hypothesis strategies,
shared with tests/service/test_fuzz.py), __main__.py (the run and its summary).
"""

import sys
from pathlib import Path

# tests/service, for harness.py when run as `python -m tests.service.fuzz`; importing the
# harness puts the service package on sys.path, with bytecode writing off.
_TESTS_SERVICE = str(Path(__file__).resolve().parents[1])
if _TESTS_SERVICE not in sys.path:
    sys.path.insert(0, _TESTS_SERVICE)

import harness  # noqa: E402,F401
