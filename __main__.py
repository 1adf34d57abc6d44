"""`python -m vidparse` and the `vidparse` command. The command line's modules (typer, rich...) are imported inside
the Ctrl-C handler: a Ctrl-C while they load exits 130 quietly, as one while a command starts does (typer's)."""

import sys


def main() -> None:
    try:
        from vidparse.cli import main as cli_main

        cli_main()
    except KeyboardInterrupt:
        from vidparse.errors import INTERRUPTED_EXIT

        sys.exit(INTERRUPTED_EXIT)


if __name__ == "__main__":
    main()
