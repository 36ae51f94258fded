"""Command line: ``torch-backend [serve]`` and ``torch-backend export-resnet18 DIR``.

Exit codes of ``serve`` (so systemd and the role can tell failures apart):
0 clean stop, 2 bad configuration, 3 a model failed to load or warm up,
4 cannot listen on the configured address.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from . import SERVER_NAME, __version__, activation, config, cpu_budget, logs, notify, release

EXIT_CONFIG, EXIT_MODEL, EXIT_LISTEN = 2, 3, 4


def _refuse(log, what: str, exc: Exception, code: int) -> int:
    """Log why the service will not start and tell systemd (its status line), then the exit code."""
    log.error("%s: %s", what, exc)
    notify.notify(f"STATUS={what}: {exc}")
    return code


def serve() -> int:
    # First of all: which release's venv this process runs from. `current` may be
    # switched while it runs; only this start-up answer names the code loaded.
    served_release = release.resolve(sys.prefix)
    log = logs.setup("INFO")
    # Configuration first, before the multi-second torch import: a typo in
    # the environment file fails at once with the variable's name.
    try:
        cfg = config.load()
    except config.ConfigError as exc:
        return _refuse(log, "configuration error", exc, EXIT_CONFIG)
    log.setLevel(cfg.log_level)
    # The throttling GET /v2 reports is counted from here: the torch import and
    # the warm-ups are the service's own start, and may be throttled too.
    cpu_stat_start = cpu_budget.read_cpu_stat(cfg.cpu_stat)
    # The socket from systemd, if any, before anything can start a child: the
    # LISTEN_* variables are removed here so that no child believes it is meant.
    try:
        inherited = activation.systemd_socket()
    except activation.ActivationError as exc:
        return _refuse(log, "cannot listen", exc, EXIT_LISTEN)

    import torch  # slow (seconds); numpy is a dependency, so torch does not warn about it

    from . import conv_backends, drift, models, nnpack
    from .server import App, Service

    # Is this the CPU the role decided USE_NNPACK for? (The role's fingerprint
    # rule and torch's CPU capability: NNPACK is not touched.)
    cpu_drift = drift.check(cfg.cpu_record)
    if cpu_drift.detected is None:
        log.warning("%s", cpu_drift.error_line())
    # Before any model exists: USE_NNPACK is a build-time switch that stock
    # wheels ignore, so the run-time flag is the only thing that takes effect.
    # On drift, USE_NNPACK was decided for another CPU: the probe decides.
    decision = drift.decide_nnpack(cpu_drift, cfg.use_nnpack)
    nnpack.apply(decision)
    if cpu_drift.detected:
        log.warning("%s", cpu_drift.drift_line(decision, cfg.use_nnpack))

    torch.set_num_threads(cfg.intra_op_threads)
    torch.set_num_interop_threads(cfg.inter_op_threads)
    capability = torch.backends.cpu.get_cpu_capability()
    clamped = f" clamped=[{'; '.join(cfg.clamped)}]" if cfg.clamped else ""
    log.info("starting %s %s: release=%s config_digest=%s nnpack=%s torch=%s cpu_capability=%s "
             "onednn=%s cpu_drift=%s intra_op_threads=%d inter_op_threads=%d workers=%d "
             "queue_size=%d cpu_budget=%d (affinity=%d quota_cpus=%s from %s) socket=%s "
             "drain_seconds=%g request_deadline_seconds=%g%s",
             SERVER_NAME, __version__, served_release or "none", cfg.config_digest or "none",
             decision.describe(), torch.__version__, capability,
             "available" if torch.backends.mkldnn.is_available() else "unavailable",
             cpu_drift.word(), cfg.intra_op_threads, cfg.inter_op_threads, cfg.workers,
             cfg.queue_size, cfg.cores, cfg.affinity,
             "none" if cfg.quota_cpus is None else f"{cfg.quota_cpus:g}", cfg.budget_source,
             "systemd" if inherited is not None else "bound",
             cfg.drain_seconds, cfg.request_deadline, clamped)
    if log.isEnabledFor(logging.DEBUG):
        log.debug("cpu now: %s", cpu_drift.current or drift.current_cpu())

    service = Service(App(cfg, decision, capability, cpu_drift, served_release,
                          "systemd" if inherited is not None else "bound",
                          cpu_stat_start=cpu_stat_start), inherited)
    service.install_signal_handlers()
    # The models' names before the first connection: a model still loading is
    # "not ready" (503), a name that is no model "unknown" (404).
    try:
        found = models.scan_model_dir(cfg.model_dir)
    except models.ModelError as exc:
        log.error("cannot start: %s", exc)
        notify.notify(f"STATUS=model load failed: {exc}")
        return EXIT_MODEL
    loaded = models.builtin_models()
    service.app.pending.update([m.name for m in loaded] + [name for name, _pt, _js in found])
    try:
        service.listen()
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", cfg.host, cfg.port, exc)
        return EXIT_LISTEN

    notify.notify("STATUS=loading models")
    try:
        if not os.path.isdir(cfg.model_dir):
            log.info("model dir %s does not exist: serving built-in models only", cfg.model_dir)
        for name, pt_path, json_path in found:
            loaded.append(models.load_file_model(name, pt_path, json_path))
        for model in loaded:
            try:
                model.warm_up()
            except Exception as exc:  # noqa: BLE001
                raise models.ModelError(model.name, f"warm-up inference failed: "
                                                    f"{type(exc).__name__}: {exc}") from None
            log.info("model %s loaded and warmed (%s)", model.name, model.source)
            report = model.conv_backends
            log.info("model %s conv backends (mkldnn=%s nnpack=%s): %s", model.name,
                     "on" if report.get("mkldnn_enabled") else "off",
                     "on" if report.get("nnpack_enabled") else "off",
                     conv_backends.describe(report))
            if report.get("slow2d") and not model.builtin:
                log.warning("model %s: Conv2d layers fall to the slow direct path (Slow2d): %s",
                            model.name, conv_backends.describe(report))
    except models.ModelError as exc:
        log.error("cannot start: %s", exc)
        notify.notify(f"STATUS=model load failed: {exc}")
        return EXIT_MODEL
    service.add_models(loaded)
    if service.stop.is_set():  # SIGTERM while loading: stop without becoming ready
        return service.wait_and_drain()
    try:
        service.become_ready()
    except OSError as exc:
        log.error("cannot serve the socket from systemd: %s", exc)
        return EXIT_LISTEN
    return service.wait_and_drain()


def export_resnet18(directory: str, name: str) -> int:
    # TorchScript writes module constants in Python's string-hash order, which
    # is randomized per process: with a fixed hash seed the exported bytes
    # (so the sha256 the role compares) are the same on every run.
    if os.environ.get("PYTHONHASHSEED") != "0":
        env = dict(os.environ, PYTHONHASHSEED="0")
        argv = [sys.executable, "-m", "torch_backend", "export-resnet18", directory, "--name", name]
        os.execve(sys.executable, argv, env)
    from . import resnet

    pt_path, json_path = resnet.export(directory, name)
    print(f"wrote {pt_path} and {json_path}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=SERVER_NAME, description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"{SERVER_NAME} {__version__}")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the service (the default); configured by environment")
    export = sub.add_parser("export-resnet18",
                            help="write a ResNet-18-shaped TorchScript model + metadata to DIR")
    export.add_argument("directory", metavar="DIR")
    export.add_argument("--name", default="resnet18", help="model name (default: resnet18)")
    args = parser.parse_args(argv)
    if args.command == "export-resnet18":
        return export_resnet18(args.directory, args.name)
    return serve()


if __name__ == "__main__":
    sys.exit(main())
