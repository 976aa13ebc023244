"""The `heartsound` command: one argparse subcommand per task (today: predict)."""

from __future__ import annotations

import argparse
import io
import json
import math
import sys

# Exit codes: 1 = some files could not be classified (the others were); 2 = nothing ran (usage, model).
EXIT_FILES_FAILED = 1
EXIT_UNUSABLE = 2
FORMATS = ("table", "json", "csv")


def add_predict(commands) -> None:
    """The `predict` subcommand's arguments."""
    from heartsound.inference import BACKENDS
    from heartsound.prediction import MIN_DURATION_S

    parser = commands.add_parser(
        "predict",
        help="classify recordings with a trained model",
        description="Classify heart-sound recordings: one row per file with the predicted class, its "
        "confidence and every class's probability, aggregated over the recording as `evaluate` does.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="audio files, directories (recursive) or globs")
    parser.add_argument("--model", default="models", metavar="DIR", help="trained model directory (default: models)")
    parser.add_argument(
        "--backend",
        choices=tuple(BACKENDS),
        default="tflite",
        help="tflite: fast start, no TensorFlow; keras: model.h5, the reference (default: tflite)",
    )
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    parser.add_argument("--output", "-o", metavar="FILE", help="write the output to FILE instead of stdout")
    parser.add_argument("--jobs", "-j", type=int, default=0, help="feature worker processes, 0 = all cores")
    parser.add_argument(
        "--min-duration-s",
        type=float,
        default=MIN_DURATION_S,
        help=f"shorter recordings are refused (default: {MIN_DURATION_S:g}, as prepare)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    """Classify, write the table, report each failed file on stderr; return the exit code."""
    from heartsound.inference import ModelError
    from heartsound.prediction import failures, predict

    if args.jobs < 0:
        return _fail("--jobs must be >= 0")
    try:
        table = predict(
            args.paths,
            model=args.model,
            backend=args.backend,
            jobs=args.jobs,
            min_duration_s=args.min_duration_s,
            progress=not args.no_progress,
        )
    except ModelError as e:
        return _fail(str(e))
    failed = failures(table)
    for path, error in zip(failed["path"], failed["error"]):
        print(f"heartsound predict: {path}: {error}", file=sys.stderr)
    text = format_table(table, args.format)
    if args.output:
        with open(args.output, "w", encoding="utf-8", newline="") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return EXIT_FILES_FAILED if len(failed) else 0


def format_table(table, fmt: str) -> str:
    """A predict() table as text: an aligned table, JSON (a list of records, null for missing) or CSV."""
    if fmt == "csv":
        buffer = io.StringIO()
        table.to_csv(buffer, index=False, float_format="%.6f", lineterminator="\n")
        return buffer.getvalue()
    records = [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        for row in table.to_dict(orient="records")
    ]
    if fmt == "json":
        return json.dumps(records, indent=2) + "\n"
    from tabulate import tabulate

    columns = list(table.columns) if table["error"].notna().any() else list(table.columns[:-1])
    rows = [[record[c] for c in columns] for record in records]
    return tabulate(rows, headers=columns, floatfmt=".3f", missingval="") + "\n"


def _fail(message: str) -> int:
    print(f"heartsound predict: error: {message}", file=sys.stderr)
    return EXIT_UNUSABLE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="heartsound", description="Heart-sound recordings -> a trained classifier.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_predict(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `heartsound` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
