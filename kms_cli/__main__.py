"""`python -m kms_cli` and the `kms-cli` console script."""

import sys


def main() -> None:
    from kms_cli.cli.entry import run

    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
