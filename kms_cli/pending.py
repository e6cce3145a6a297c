"""Where kms-cli notes the files a killed process would leave behind: below `fileio` (which sweeps
them on every command, cheaply) and `leftovers` (which registers and removes them).
"""

from __future__ import annotations

import os


def pending_dir(environ=None) -> str | None:
    """Where kms-cli notes the files a killed process would leave behind (see `kms_cli.leftovers`):
    $XDG_STATE_HOME/kms-cli/pending, by default ~/.local/state/kms-cli/pending; None without a home."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME")
    if not base or not os.path.isabs(base):
        home = env.get("HOME")
        if not home:
            return None
        base = os.path.join(home, ".local", "state")
    return os.path.join(base, "kms-cli", "pending")
