"""The one place where errors become what a console user sees: one line, exit 2 for bad input and an
untrusted coordinator, 1 otherwise."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from wgmesh.errors import IdentityError, ValidationError, WgmeshError


def run_console(prog: str, run: Callable[[Sequence[str]], int]) -> None:
    """Run `run(argv)` as a console program and exit with its status."""
    try:
        sys.exit(run(sys.argv[1:]))
    except (ValidationError, IdentityError) as exc:
        print(f"{prog}: {exc.message}", file=sys.stderr)
        sys.exit(2)
    except WgmeshError as exc:
        print(f"{prog}: {exc.message}", file=sys.stderr)
        sys.exit(1)
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
