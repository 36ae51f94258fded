# -*- coding: utf-8 -*-
# Copyright: (c) 2026, torch-backend contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The service's own rule modules, torch_backend/NAME.py of the package this role deploys
(files/torch-backend/), for the filters beside this file that apply them on the controller:
listen_address.py and model_specs.py.

Not a filter. Ansible loads every .py file in filter_plugins/ as a filter plugin file and warns
about one without a FilterModule: this one has a FilterModule with no filters. The filters load this
file by path, as Ansible loads them (filter_plugins/ is no package); a role's module_utils/ would
not do, it is what modules take to the host and controller plugins cannot import from it."""

from __future__ import annotations

import types
from pathlib import Path

SERVICE_PACKAGE = Path(__file__).resolve().parents[1] / "files" / "torch-backend" / "torch_backend"


def load(file_name, module_name):
    """torch_backend/FILE_NAME of the service as a module named MODULE_NAME."""
    path = SERVICE_PACKAGE / file_name
    # Compiled from source, not imported: no bytecode may be written into the role's files
    # (they are what a release is built from), and nothing of the package beyond this one
    # standard-library file is loaded on the controller.
    module = types.ModuleType(module_name)
    module.__file__ = str(path)
    exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), module.__dict__)
    return module


class FilterModule:
    """No filters: only so that Ansible, which loads this file as it loads the filters, has nothing to warn about."""

    def filters(self):
        return {}
