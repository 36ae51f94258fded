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

import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'task_timer'
    CALLBACK_NEEDS_ENABLED = True

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
