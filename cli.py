"""The ``noiseal-ray`` command line: assembles the command modules and maps errors to exit codes.

    noiseal-ray run                       # sample corpus, local Ray, offline models
    noiseal-ray run --data corpus.csv --out runs/x --workers 8 --annotator llm
"""

from __future__ import annotations

import sys

import click
import typer

from noiseal_ray.commands import bench as _bench
from noiseal_ray.commands import corrupt as _corrupt
from noiseal_ray.commands import export as _export
from noiseal_ray.commands import models as _models
from noiseal_ray.commands import predict as _predict
from noiseal_ray.commands import report as _report
from noiseal_ray.commands import run as _run
from noiseal_ray.commands import serve as _serve
from noiseal_ray.errors import NoisealError

app = typer.Typer(
    name="noiseal-ray",
    help="Find and fix wrong labels in text-classification corpora (NoiseAL on Ray).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.command("run")(_run.run)
app.command("corrupt")(_corrupt.corrupt)
app.command("predict")(_predict.predict)
app.command("serve")(_serve.serve)
app.command("report")(_report.report)
app.command("export")(_export.export)
app.command("bench", context_settings=_bench.SETTINGS, add_help_option=False)(_bench.bench)
app.add_typer(_models.app, name="models")


def main() -> None:
    """Console-script entry point: known errors print one line and exit with their code.

    Exit codes: 0 done; 1 unexpected error; 2 bad input or configuration; 3 output location; 4
    annotator; 130 Ctrl-C (``run`` first says what it kept). A command's ``typer.Exit(code)``
    and Typer's own Ctrl-C handling come back as the return value of ``app``.
    """
    try:
        code = app(standalone_mode=False)
    except NoisealError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.secho("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(130)
    except (typer.Exit,) as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:  # usage errors and friends
        exc.show()
        sys.exit(exc.exit_code)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
