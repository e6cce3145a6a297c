"""`python -m kms_cli` and the `kms-cli` console script."""

import gc
import sys


def main() -> None:
    # kms-cli is short-lived and start-up builds many long-lived objects (modules, classes, the
    # command table): with the default gen-0 threshold of 700, cyclic collections run over and
    # over during imports, about 7% of a cold start. Collect more rarely, never disable: the
    # long-running commands (exec, audit follow) still reclaim cycles.
    gc.set_threshold(20_000, 20, 20)
    from kms_cli.cli.entry import run

    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
