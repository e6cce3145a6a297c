"""Runs kms_cli.runner as `kms-cli exec` would, as its own process, so tests can signal and inspect it.

Usage: python runner_harness.py SPEC.json, where SPEC holds
``{"argv": [...], "secrets": {"VAR": base64 value}, "mask": bool, "env_file": path|null,
"pristine": bool, "no_clobber": bool, "scrub": [...]}``. Secrets travel in the spec file,
never in argv, so /proc/*/cmdline checks are meaningful. Exits with run()'s code, or the
exit code of a KmsError.
"""

from __future__ import annotations

import base64
import json
import os
import sys


def main() -> int:
    from kms_cli import envformat, runner
    from kms_cli.errors import KmsError
    from kms_cli.secretvalue import SecretValue

    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    secrets = {var: SecretValue(base64.b64decode(v)) for var, v in spec.get("secrets", {}).items()}
    try:
        env = runner.build_env(
            os.environ,
            secrets,
            pristine=spec.get("pristine", False),
            no_clobber=spec.get("no_clobber", False),
            scrub=spec.get("scrub", ()),
        )
        env_file = spec.get("env_file")
        return runner.run(
            spec["argv"],
            env,
            mask_values=list(secrets.values()) if spec.get("mask") else None,
            env_file=env_file,
            dotenv_text=envformat.format_dotenv(secrets) if env_file is not None else None,
        )
    except KmsError as exc:
        sys.stderr.write(f"kms-cli: error: {exc.message}\n")
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
