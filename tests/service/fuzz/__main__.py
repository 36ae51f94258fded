"""Command line of the service fuzzer: python -m tests.service.fuzz [--cases N] [--seed S] [--help]."""

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from harness import ServerProcess
from torch_backend import config as service_config  # no torch import

from . import __doc__ as DOC
from .cases import GENERATORS, gen_client_abort, hypothesis_cases, near_limit_cases
from .client import Case, Client, Unsolicited, request_bytes
from .reference import MODEL, check_reference, verify_selftest_reply

# Lines that must never appear on the server's stderr.
BAD_STDERR = ("Traceback", "Exception occurred during processing", "internal error",
              "inference failed", "CRITICAL")


def check(case, responses, problems, counts):
    """Record the responses' statuses and any violation."""
    for i, resp in enumerate(responses):
        last = i == len(responses) - 1
        status = resp.status
        counts["status"][status] += 1
        counts["by_category"][case.category][status] += 1
        want = case.expect if last else (200,)
        if isinstance(status, int) and status >= 500:
            counts["5xx"][status] += 1
            if status not in case.allow_5xx:
                problems.append(f"{status} (server error)")
                counts["5xx_errors"] += 1
                continue
            counts["5xx_protocol"][status] += 1
        if status not in want:
            problems.append(f"status {status}, expected {' or '.join(map(str, want))}")
            continue
        if isinstance(status, int) and status >= 400 and case.method != "HEAD":
            try:
                error = json.loads(resp.body)["error"]
                assert isinstance(error, str) and error
            except Exception:  # noqa: BLE001
                problems.append(f"{status} without a JSON error body: {resp.body[:120]!r}")
        if status == 200 and last and case.verify is not None:
            why = verify_selftest_reply(case.verify, resp)
            counts["verified"] += why is None
            if why:
                problems.append(why)
    if len(responses) < case.responses:
        problems.append(f"{len(responses)} of {case.responses} pipelined requests answered")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tests.service.fuzz",
                                     description=DOC.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(DOC.splitlines()[2:]))
    parser.add_argument("--cases", type=int, default=10_000,
                        help="requests to send in all, near-limit ones included (default 10000)")
    parser.add_argument("--seed", type=int, default=0, help="seed for every generator (default 0)")
    parser.add_argument("--hypothesis-share", type=float, default=0.03,
                        help="share of the cases drawn from tests/service/fuzz/strategies.py's "
                             "Hypothesis strategy (default 0.03; each takes 10-100 ms to draw)")
    parser.add_argument("--near-limit", type=int, default=3,
                        help="valid requests just under the body limit, sent last (default 3: "
                             "binary->binary, JSON->binary, JSON->JSON)")
    parser.add_argument("--max-body-bytes", type=int, default=service_config.DEFAULT_MAX_BODY_BYTES,
                        help="TORCH_BACKEND_MAX_BODY_BYTES for the server (default: the "
                             "service's default, %(default)s)")
    parser.add_argument("--client-aborts", action=argparse.BooleanOptionalAction, default=True,
                        help="also reset connections mid-request (category client-abort; default on)")
    parser.add_argument("--progress-every", type=int, default=1000, help="cases per progress line")
    parser.add_argument("--server-log", metavar="FILE", help="keep a copy of the server's stderr")
    parser.add_argument("--keep-going", action="store_true",
                        help="do not stop after 50 violations")
    args = parser.parse_args(argv)

    t_start = time.monotonic()
    rnd = random.Random(args.seed)
    n_refs = check_reference(random.Random(args.seed))
    ctx = {"max_body": args.max_body_bytes, "models": {MODEL}}
    generators = dict(GENERATORS)
    if args.client_aborts:
        generators["client-abort"] = (gen_client_abort, 3)
    names = list(generators)
    weights = [generators[n][1] for n in names]
    near = max(0, min(args.near_limit, args.cases))
    n_hyp = round((args.cases - near) * args.hypothesis_share)

    with tempfile.TemporaryDirectory(prefix="fuzz-service-") as tmp:
        tmp = Path(tmp)
        srv = ServerProcess(tmp, {"TORCH_BACKEND_MAX_BODY_BYTES": str(args.max_body_bytes),
                                  "TORCH_BACKEND_LOG_LEVEL": "INFO"}).start()
        proc, stderr_path = srv.proc, srv.stderr_path
        try:
            # Drawing from Hypothesis is slow: do it while the server imports torch.
            t0 = time.monotonic()
            hyp = hypothesis_cases(n_hyp, args.seed)
            print(f"fuzz-service: seed {args.seed}; numpy reference checked against the "
                  f"role's pure-Python one on {n_refs} inputs; {len(hyp)} Hypothesis cases drawn in "
                  f"{time.monotonic() - t0:.1f} s", flush=True)
            try:
                port = srv.wait_ready(timeout=300).port
            except AssertionError as exc:
                sys.exit(f"fuzz-service: {exc}")
            hwm_ready, _ = srv.memory_mib()
            print(f"fuzz-service: server pid {proc.pid} ready on 127.0.0.1:{port} "
                  f"(start-up {time.monotonic() - t_start:.1f} s); VmHWM {hwm_ready:.1f} MiB; "
                  f"body limit {args.max_body_bytes} bytes", flush=True)
            result = run(args, rnd, ctx, srv, port, names, weights, generators, hyp, near,
                         hwm_ready)
        finally:
            srv.terminate()
        return finish(args, result, proc, stderr_path, t_start)


def run(args, rnd, ctx, srv, port, names, weights, generators, hyp, near, hwm_ready):
    proc = srv.proc
    client = Client(port)
    counts = {"status": Counter(), "by_category": defaultdict(Counter), "5xx": Counter(),
              "5xx_protocol": Counter(), "5xx_errors": 0, "verified": 0, "cases": Counter(),
              "seconds": Counter()}
    violations = []
    hyp = list(hyp)
    planned = args.cases - near
    t_run = time.monotonic()

    def one(i, case):
        counts["cases"][case.category] += 1
        t0 = time.monotonic()
        problems = []
        responses = []
        for _ in range(2):
            try:
                responses = client.exchange(case)
                break
            except Unsolicited as exc:
                problems.append(f"unsolicited bytes on an idle keep-alive connection (after the "
                                f"previous case): {bytes(exc.args[0])[:120]!r}")
            except OSError as exc:
                problems.append(f"{type(exc).__name__}: {exc}")
                client.drop()
                break
        counts["seconds"][case.category] += time.monotonic() - t0
        check(case, responses, problems, counts)
        if problems:
            sample = case.data[:300] + (b"..." if len(case.data) > 300 else b"")
            violations.append(f"case {i} [{case.category} / {case.sub}]: {'; '.join(problems)}\n"
                              f"      request: {sample!r}")

    stopped = False
    for i in range(planned):
        name = rnd.choices(names, weights)[0]
        if hyp and rnd.random() < len(hyp) / max(1, planned - i):
            case = hyp.pop(0)
        else:
            case = generators[name][0](rnd, ctx)
        one(i, case)
        if (i + 1) % args.progress_every == 0 or i + 1 == planned:
            hwm, rss = srv.memory_mib()
            top = ", ".join(f"{k}:{v}" for k, v in sorted(counts["status"].items(),
                                                           key=lambda kv: -kv[1])[:6])
            print(f"  [{i + 1:>6}/{args.cases}] {time.monotonic() - t_run:6.1f} s  {top}  "
                  f"5xx errors {counts['5xx_errors']}  violations {len(violations)}  "
                  f"RSS {rss or 0:.0f} MiB", flush=True)
        if proc.poll() is not None:
            violations.append(f"server exited with {proc.returncode} after case {i}")
            break
        if len(violations) >= 50 and not args.keep_going:
            print("  stopping: 50 violations (use --keep-going to go on)", flush=True)
            stopped = True
            break
    hwm_cases, _ = srv.memory_mib()
    wall_cases = time.monotonic() - t_run
    generated = sum(counts["cases"].values())
    hwm_near = None
    if proc.poll() is None and near and not stopped:
        for j, case in enumerate(near_limit_cases(rnd, ctx, near)):
            t0 = time.monotonic()
            one(planned + j, case)
            hwm_near, rss = srv.memory_mib()
            print(f"  near-limit {case.sub}: {time.monotonic() - t0:.1f} s; server VmHWM "
                  f"{hwm_near or 0:.0f} MiB, VmRSS {rss or 0:.0f} MiB", flush=True)
    client.drop()

    # The end state: alive, ready, clean stderr.
    end = {"alive": proc.poll() is None}
    if end["alive"]:
        probe = Client(port)
        resp = probe.exchange(Case("end", "ready", request_bytes("GET", "/v2/health/ready"),
                                   method="GET", fresh=True))[0]
        end["ready"] = resp.status
        end["hwm"], end["rss"] = srv.memory_mib()
        if resp.status != 200:
            violations.append(f"/v2/health/ready answered {resp.status} at the end")
    else:
        violations.append(f"server not running at the end (exit status {proc.returncode})")
    return {"counts": counts, "violations": violations, "client": client, "end": end,
            "wall": time.monotonic() - t_run, "wall_cases": wall_cases,
            "hwm": (hwm_ready, hwm_cases, hwm_near), "generated": generated}


def finish(args, result, proc, stderr_path, t_start):
    counts, violations, end = result["counts"], result["violations"], result["end"]
    if proc.returncode != 0:
        violations.append(f"server exited with {proc.returncode} on SIGTERM (expected 0)")
    stderr = stderr_path.read_text(errors="replace") if stderr_path.exists() else ""
    if args.server_log:
        Path(args.server_log).write_text(stderr)
    bad_lines = [ln for ln in stderr.splitlines() if any(b in ln for b in BAD_STDERR)]
    if bad_lines:
        violations.append(f"server stderr has {len(bad_lines)} traceback/error line(s), e.g. "
                          f"{bad_lines[0][:300]}")

    total = sum(counts["cases"].values())
    fmt = lambda c: " ".join(f"{k}:{v}" for k, v in sorted(c.items(), key=lambda kv: str(kv[0])))  # noqa: E731
    print("\nfuzz-service summary")
    print(f"  cases sent: {total} (seed {args.seed}) in {result['wall']:.1f} s; "
          f"{result['wall_cases']:.1f} s for the {result['generated']} generated ones "
          f"({result['generated'] / max(result['wall_cases'], 1e-9):.0f}/s)")
    print("  cases by category (count, seconds spent, statuses):")
    for name, n in sorted(counts["cases"].items(), key=lambda kv: -kv[1]):
        print(f"    {name:15} {n:6} {counts['seconds'][name]:7.1f} s   "
              f"{fmt(counts['by_category'][name])}")
    print(f"  status counts: {fmt(counts['status'])}")
    print(f"  200 replies checked against the reference: {counts['verified']}")
    protocol = counts["5xx_protocol"]
    print(f"  5xx server errors: {counts['5xx_errors']}")
    print(f"  5xx protocol answers (505 for another HTTP major version; expected): "
          f"{sum(protocol.values())}" + (f" ({fmt(protocol)})" if protocol else ""))
    silent = result["client"].silent_closes
    if silent:
        print(f"  note: the server closed {sum(silent.values())} keep-alive connection(s) after "
              f"answering without \"Connection: close\" (answer statuses {fmt(silent)}; a request "
              f"body it did not read); the client reconnected")
    hwm_ready, hwm_cases, hwm_near = result["hwm"]
    peak = end.get("hwm") or hwm_near or hwm_cases or hwm_ready
    line = f"  server peak RSS (VmHWM): {peak:.1f} MiB ({hwm_ready:.1f} when ready"
    if hwm_cases:
        line += f", {hwm_cases:.1f} after the {result['generated']} generated cases"
    if hwm_near:
        line += f", {hwm_near:.1f} after the {args.near_limit} near-limit case(s)"
    print(line + ")")
    if end.get("rss"):
        print(f"  server at the end: alive, /v2/health/ready {end.get('ready')}, "
              f"VmRSS {end['rss']:.1f} MiB; exit status on SIGTERM {proc.returncode}; "
              f"stderr {'clean' if not bad_lines else 'HAS TRACEBACKS/ERRORS'}")
    print(f"  total time {time.monotonic() - t_start:.1f} s; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    if violations:
        print(f"\n  violations: {len(violations)}")
        for v in violations[:20]:
            print("    " + v)
        if len(violations) > 20:
            print(f"    ... and {len(violations) - 20} more")
        print("RESULT: FAIL")
        if bad_lines:
            print("\nserver stderr (first bad lines):\n" + "\n".join(bad_lines[:10]))
        return 1
    print("  violations: 0")
    print("RESULT: PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
