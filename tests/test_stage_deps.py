"""dvc.yaml lists, for each stage, its script and exactly the heartsound modules the script runs, and the pinned
libraries (requirements.txt).

A module missing from a stage's deps means `dvc repro` keeps an output that the current code would not
produce; a module listed but never imported reruns a stage for nothing. The import closure is computed
with ast (heartsound.codedeps), so a new module or a new import cannot slip past this test.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from heartsound import codedeps, features
from heartsound.config import FeaturizeParams

REPO_ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]


def stage_script(stage: dict) -> str:
    """The script a stage's cmd runs: `python -m stages.<name>` (-m puts the project root first on sys.path, so
    the stage runs the project's own heartsound/, the files DVC hashes, whatever else is installed)."""
    words = shlex.split(stage["cmd"])
    assert words[:2] == ["python", "-m"] and words[2].startswith("stages."), stage["cmd"]
    return words[2].replace(".", "/") + ".py"


def code_deps_problems(stage: dict) -> tuple[list[str], list[str]]:
    """(imported files no dep covers, heartsound deps the script never imports) for one dvc.yaml stage."""
    deps = [dep for dep in stage.get("deps", []) if isinstance(dep, str)]
    script = stage_script(stage)
    needed = {script} | {p.relative_to(REPO_ROOT).as_posix() for p in codedeps.imported_files(REPO_ROOT / script)}

    def covered(path: str) -> bool:
        return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)

    missing = sorted(path for path in needed if not covered(path))
    code_deps = [dep for dep in deps if dep.startswith(("heartsound", "stages/"))]
    unused = sorted(dep for dep in code_deps if not any(p == dep or p.startswith(dep + "/") for p in needed))
    return missing, unused


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_are_exactly_the_code_it_runs(name):
    missing, unused = code_deps_problems(STAGES[name])
    # The libraries compute every output too (numpy, librosa, TensorFlow...): a new pin must rerun the stage.
    assert "requirements.txt" in STAGES[name]["deps"], f"stage {name}: dvc.yaml deps miss requirements.txt"
    assert missing == [], f"stage {name}: dvc.yaml deps miss {missing} (imported by {stage_script(STAGES[name])})"
    assert unused == [], f"stage {name}: dvc.yaml lists {unused}, which {stage_script(STAGES[name])} never imports"


def test_a_dropped_module_is_reported():
    stage = dict(STAGES["train"])
    stage["deps"] = [dep for dep in stage["deps"] if dep != "heartsound/model_dir.py"]
    assert code_deps_problems(stage)[0] == ["heartsound/model_dir.py"]


def test_imports_are_followed_through_modules_and_into_functions():
    files = {p.relative_to(REPO_ROOT).as_posix() for p in codedeps.imported_files(REPO_ROOT / "stages/train.py")}
    # train.py -> training -> model -> model_dir: two modules away from the script.
    assert "heartsound/model_dir.py" in files
    # cli imports inference inside a function only; it still runs when the command does.
    cli = {p.name for p in codedeps.imported_files(REPO_ROOT / "heartsound/cli.py")}
    assert {"inference.py", "prediction.py", "__init__.py"} <= cli
    # The package's lazy `heartsound.predict` is not run by a stage that never asks for it.
    assert "heartsound/prediction.py" not in files


def test_relative_imports_resolve_inside_the_package(tmp_path, monkeypatch):
    package = tmp_path / "heartsound"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "base.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from . import leaf\n")
    (package / "sub" / "leaf.py").write_text("def f():\n    from ..base import x\n")
    monkeypatch.setattr(codedeps, "PACKAGE_DIR", package)
    files = {p.relative_to(package).as_posix() for p in codedeps.imported_files(package / "sub" / "__init__.py")}
    assert files == {"__init__.py", "base.py", "sub/__init__.py", "sub/leaf.py"}


CACHE_KEY = "from heartsound import features, config; print(features.cache_key(config.FeaturizeParams()))"


def cache_key_of_copy(package: Path) -> str:
    """features.cache_key in a fresh process importing the package copy at package."""
    result = subprocess.run(
        [sys.executable, "-c", CACHE_KEY], cwd=package.parent, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def test_feature_cache_key_follows_the_feature_code(tmp_path):
    package = tmp_path / "heartsound"
    subprocess.run(["cp", "-r", str(REPO_ROOT / "heartsound"), str(package)], check=True)
    original = cache_key_of_copy(package)
    assert original == features.cache_key(FeaturizeParams())

    source = package / "features.py"
    text = source.read_text()
    assert "TOP_DB = 80.0" in text
    source.write_text(text.replace("TOP_DB = 80.0", "TOP_DB = 40.0"))
    assert cache_key_of_copy(package) != original
    source.write_text(text)

    # A module the feature code imports counts too; one it does not (the Keras model) does not.
    (package / "audio.py").write_text((package / "audio.py").read_text() + "\n# edited\n")
    assert cache_key_of_copy(package) != original
    subprocess.run(["cp", str(REPO_ROOT / "heartsound/audio.py"), str(package / "audio.py")], check=True)
    (package / "model.py").write_text((package / "model.py").read_text() + "\n# edited\n")
    assert cache_key_of_copy(package) == original


def test_feature_cache_key_follows_the_params():
    assert features.cache_key(FeaturizeParams(n_mfcc=20)) != features.cache_key(FeaturizeParams())
    # How the numbers are computed (workers, cache location) is not part of what they are.
    assert features.cache_key(FeaturizeParams(jobs=1, cache_dir="elsewhere")) == features.cache_key(FeaturizeParams())


def test_a_data_file_a_module_reads_beside_itself_is_code_too():
    closure = {p.name for p in codedeps.imported_files(REPO_ROOT / "heartsound" / "cycles.py")}
    assert "segmentation_model.json" in closure  # read by segmentation.py, which cycles imports
    assert "segmentation_model.json" not in {
        p.name for p in codedeps.imported_files(REPO_ROOT / "heartsound" / "features.py")
    }
