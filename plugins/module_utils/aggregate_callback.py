# -*- coding: utf-8 -*-
# Copyright: (c) 2026, torch-backend contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""What the project's callbacks (plugins/callback/) have in common: each is an aggregate callback,
printing beside the stdout callback, and runs only where callbacks_enabled (ansible.cfg) or
ANSIBLE_CALLBACKS_ENABLED lists it.

Here, not in plugins/callback/: Ansible loads every .py file there (and in its subfolders) as a
callback plugin and warns about one without a CallbackModule. plugins/module_utils/ is where Ansible
collections keep what their plugins share; this project is no collection, so the callbacks load this
file by path."""

from __future__ import annotations

from ansible.plugins.callback import CallbackBase


class AggregateCallback(CallbackBase):
    """Base of the project's callbacks: each sets CALLBACK_NAME, its file's name."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NEEDS_ENABLED = True
