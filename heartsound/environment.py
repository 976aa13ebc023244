"""The pinned environment: a stage runs only on the library versions requirements.txt pins.

Every stage depends on requirements.txt in dvc.yaml, so new pins rerun the pipeline. DVC hashes that file, not
what is installed: a venv left on older versions would write outputs that the lock credits to the new pins.
The stages therefore check, before any work, that every pinned package is installed at its pinned version.
"""

from __future__ import annotations

import os
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import Version

# The project root's lock, beside dvc.yaml: a stage (`python -m stages.<name>` at the root) runs this heartsound/.
REQUIREMENTS = Path(__file__).resolve().parents[1] / "requirements.txt"


def pins(path: str | os.PathLike = REQUIREMENTS) -> dict[str, str]:
    """{package: version} of a requirements file's `name==version` lines; raise ValueError on any other line."""
    out = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            try:
                requirement = Requirement(line)
            except InvalidRequirement as e:
                raise ValueError(f"{path}, line {number}: {e}") from None
            specifiers = list(requirement.specifier)
            if len(specifiers) != 1 or specifiers[0].operator != "==":
                raise ValueError(f"{path}, line {number}: {line!r} is not pinned as name==version")
            out[requirement.name] = specifiers[0].version
    return out


def mismatches(path: str | os.PathLike = REQUIREMENTS) -> list[str]:
    """One line per pinned package that is missing or installed at another version, in the file's order."""
    problems = []
    for name, pinned in pins(path).items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{name}: pinned {pinned}, not installed")
            continue
        if Version(installed) != Version(pinned):
            problems.append(f"{name}: pinned {pinned}, installed {installed}")
    return problems


def require_pinned(path: str | os.PathLike = REQUIREMENTS) -> None:
    """For stage scripts: stop (exit 2) with the packages that differ from the pins, before any work."""
    try:
        problems = mismatches(path)
    except (OSError, ValueError) as e:
        print(f"environment: cannot check the pinned libraries: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if problems:
        listed = "\n".join(f"  {p}" for p in problems)
        print(
            f"environment: the installed libraries are not the ones {path} pins (and DVC tracks):\n{listed}\n"
            f"run `pip install -r requirements.txt -e .` at the project root ({Path(path).parent})",
            file=sys.stderr,
        )
        raise SystemExit(2)
