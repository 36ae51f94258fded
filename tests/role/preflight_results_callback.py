"""Ansible callback used by test_preflight_generated.py: every task result, per host, as JSON.

Not a test module and not on any plugin path: the test copies it into a temporary
callback directory and enables it with ANSIBLE_CALLBACKS_ENABLED=preflight_results.
The JSON file (path from $PREFLIGHT_RESULTS_FILE) maps each host to the list of
results it produced, in order: task name, task file, action, status, messages.
"""
import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: preflight_results
type: aggregate
short_description: Write every task result per host to a JSON file (tests only)
description: Test helper of tests/role/test_preflight_generated.py.
requirements:
  - enabled with ANSIBLE_CALLBACKS_ENABLED, output file in PREFLIGHT_RESULTS_FILE
"""


def _text(value):
    return value if isinstance(value, str) else json.dumps(value, default=str)


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "preflight_results"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.hosts = {}

    def _record(self, result, status):
        task = result._task
        res = result._result
        messages = []
        if res.get("msg"):
            messages.append(_text(res["msg"]))
        if res.get("exception"):
            messages.append(_text(res["exception"]))
        labels = []
        for item in res.get("results") or []:
            if isinstance(item, dict) and (item.get("failed") or item.get("unreachable")):
                labels.append(_text(item.get("_ansible_item_label", item.get("item"))))
                if item.get("msg"):
                    messages.append(_text(item["msg"]))
                if item.get("exception"):
                    messages.append(_text(item["exception"]))
        self.hosts.setdefault(result._host.get_name(), []).append({
            "task": task.get_name(),
            "path": task.get_path() or "",
            "action": task.action,
            "status": status,
            "messages": messages,
            "failed_items": labels,
        })

    def v2_runner_on_ok(self, result):
        self._record(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, "ignored" if ignore_errors else "failed")

    def v2_runner_on_skipped(self, result):
        self._record(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._record(result, "unreachable")

    def v2_playbook_on_stats(self, stats):
        with open(os.environ["PREFLIGHT_RESULTS_FILE"], "w", encoding="utf-8") as f:
            json.dump({"hosts": self.hosts}, f, indent=1, sort_keys=True)
