"""Which release this process runs: resolved once, at start-up.

The role installs each release in ``<base>/releases/<id>/`` (its venv in
``<id>/venv``, a JSON marker ``<id>/.complete`` written last:
``{"release": "<id>", "runtime": "..."}``) and points the symlink
``<base>/current`` at one of them; the unit runs
``<base>/current/venv/bin/python``, so ``sys.prefix`` is
``<base>/current/venv``. ``current`` can be switched while this process runs:
only the realpath taken at start-up says which release's code was loaded.
Resolving it again later (per request) would report the new release while the
old code keeps serving, which is exactly what the deploy must be able to see.
"""

from __future__ import annotations

import json
import os
from typing import Optional

COMPLETE_MARKER = ".complete"
RELEASES_DIR_NAME = "releases"


def resolve(prefix: str) -> Optional[str]:
    """The release that the venv at `prefix` belongs to, or None (dev runs, tests).

    `prefix` is resolved (symlinks, such as ``current``); its parent P is the
    release directory. The release is P/.complete's "release" when that file
    is a JSON object with a non-empty string "release"; otherwise basename(P)
    when P's parent is named ``releases``; otherwise None.
    """
    release_dir = os.path.dirname(os.path.realpath(prefix))
    try:
        with open(os.path.join(release_dir, COMPLETE_MARKER), encoding="utf-8") as handle:
            marker = json.load(handle)
    except (OSError, ValueError):  # missing, unreadable, not JSON (or not UTF-8)
        marker = None
    if isinstance(marker, dict) and isinstance(marker.get("release"), str) and marker["release"].strip():
        return marker["release"].strip()
    if os.path.basename(os.path.dirname(release_dir)) == RELEASES_DIR_NAME:
        return os.path.basename(release_dir) or None
    return None
