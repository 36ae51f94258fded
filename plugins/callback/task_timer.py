# -*- coding: utf-8 -*-
# Copyright: (c) 2026, torch-backend contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
from __future__ import annotations

DOCUMENTATION = r'''
name: task_timer
type: aggregate
short_description: Print the slowest tasks at the end of a play run
description:
  - Times every task (all hosts together) and prints the slowest ones and the total at the end, so that a
    slow deploy says where its time went. Enabled when ANSIBLE_CALLBACKS_ENABLED lists it.
options:
  top:
    description: How many tasks to list.
    type: int
    default: 12
    env:
      - name: TASK_TIMER_TOP
'''

import importlib.util
import os
import time

# plugins/callback/ is no package (Ansible loads each file there by path, under a name of its own):
# the base the project's callbacks share is loaded by path as well
_spec = importlib.util.spec_from_file_location(
    'pytorch_backend_aggregate_callback',
    os.path.join(os.path.dirname(__file__), os.pardir, 'module_utils', 'aggregate_callback.py'))
aggregate_callback = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(aggregate_callback)


class CallbackModule(aggregate_callback.AggregateCallback):
    CALLBACK_NAME = 'task_timer'

    def __init__(self):
        super().__init__()
        self._times = {}
        self._current = None
        self._start = time.monotonic()

    def _stop(self):
        if self._current is not None:
            name, began = self._current
            self._times[name] = self._times.get(name, 0.0) + time.monotonic() - began
            self._current = None

    def _begin(self, task):
        self._stop()
        self._current = (task.get_name(), time.monotonic())

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._begin(task)

    def v2_playbook_on_handler_task_start(self, task):
        self._begin(task)

    def v2_playbook_on_stats(self, stats):
        self._stop()
        self.set_options()
        top = sorted(self._times.items(), key=lambda kv: kv[1], reverse=True)[:self.get_option('top')]
        self._display.display('TASK TIMES (slowest first, all hosts) ' + '*' * 40)
        for name, seconds in top:
            self._display.display('%8.1f s  %s' % (seconds, name))
        self._display.display('%8.1f s  total' % (time.monotonic() - self._start))
