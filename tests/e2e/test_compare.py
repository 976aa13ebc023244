"""Comparing runs with DVC's own commands: params/metrics/plots diff between two branches, and experiments.

One branch, `lr-up`, changes the learning rate and is reproduced and committed on top of `built_project`; the
tests compare it with `main` the way docs/compare.md tells a user to.
"""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
import yaml

pytestmark = pytest.mark.e2e

BRANCH = "lr-up"
NEW_LEARNING_RATE = 0.01
CURVE_PLOTS = {"Loss": "loss", "Accuracy": "accuracy"}
CONFUSION_TITLE = "Confusion matrix (test recordings)"


def show_file(project, rev: str, path: str) -> str:
    """A git-tracked file's content at rev (metrics and plots are committed, not cached)."""
    return project.git("show", f"{rev}:{path}").stdout


@pytest.fixture(scope="module")
def branched(built_project):
    """built_project plus a committed branch with a real change (learning rate), checked out back on main."""
    project = built_project
    project.git("checkout", "-q", "-b", BRANCH)
    project.set_params({"train": {"learning_rate": NEW_LEARNING_RATE}})
    ran = set(project.stages_run(project.dvc("repro").stdout))
    # Only the stages that read train params rerun: the change is real, the data stages are untouched.
    assert {"train", "evaluate"} <= ran and not ran & {"prepare", "featurize"}
    project.commit("train: learning rate x10")
    project.git("checkout", "-q", "main")
    project.dvc("checkout", "-q")
    yield project
    project.git("checkout", "-q", "main")


def test_params_diff_shows_exactly_the_changed_param(branched):
    diff = json.loads(branched.dvc("params", "diff", "main", BRANCH, "--json").stdout)
    old = yaml.safe_load(show_file(branched, "main", "params.yaml"))["train"]["learning_rate"]
    assert diff == {
        "params.yaml": {
            "train.learning_rate": {
                "old": old,
                "new": NEW_LEARNING_RATE,
                "diff": pytest.approx(NEW_LEARNING_RATE - old),
            }
        }
    }
    # The human-readable table names the param and both values.
    table = branched.dvc("params", "diff", "main", BRANCH).stdout
    assert re.search(rf"train\.learning_rate\s+{old}\s+{NEW_LEARNING_RATE}", table)


def test_metrics_diff_reads_both_metrics_files_at_each_branch(branched):
    diff = json.loads(branched.dvc("metrics", "diff", "main", BRANCH, "--all", "--json").stdout)
    # Both files of the top-level `metrics:` section are compared, with the values committed on each branch.
    for path, key in [("metrics/metrics.json", "accuracy"), ("metrics/train/metrics.json", "train.loss")]:
        old = json.loads(show_file(branched, "main", path))
        new = json.loads(show_file(branched, BRANCH, path))
        for part in key.split("."):
            old, new = old[part], new[part]
        assert diff[path][key]["old"] == pytest.approx(old)
        assert diff[path][key]["new"] == pytest.approx(new)
    # A 10x learning rate gives other training curves; the default view lists only what changed.
    assert (
        diff["metrics/train/metrics.json"]["train.loss"]["old"]
        != diff["metrics/train/metrics.json"]["train.loss"]["new"]
    )
    changed = json.loads(branched.dvc("metrics", "diff", "main", BRANCH, "--json").stdout)
    assert "train.loss" in changed["metrics/train/metrics.json"]
    assert all(v["old"] != v["new"] for metrics in changed.values() for v in metrics.values())


def html_specs(html: str) -> dict[str, dict]:
    """The vega-lite specs embedded in a `dvc plots diff` page, by title."""
    specs = [json.loads(m) for m in re.findall(r"^\s*var spec = (\{.*\});?\s*$", html, flags=re.MULTILINE)]
    return {spec["title"]["text"]: spec for spec in specs}


def test_plots_diff_writes_html_with_confusion_matrix_and_curves_of_both_branches(branched, tmp_path):
    out_dir = tmp_path / "plots"
    branched.dvc("plots", "diff", "main", BRANCH, "-o", str(out_dir))
    html = (out_dir / "index.html").read_text()
    specs = html_specs(html)
    assert set(specs) == {CONFUSION_TITLE, *CURVE_PLOTS}

    # Confusion matrix: one (actual, predicted) row per test recording, per branch, as committed.
    rows = specs[CONFUSION_TITLE]["data"]["values"]
    for rev in ("main", BRANCH):
        committed = json.loads(show_file(branched, rev, "plots/confusion.json"))
        shown = [{"actual": r["actual"], "predicted": r["predicted"]} for r in rows if r["rev"] == rev]
        assert shown == committed

    # Training curves: train and eval series of each branch, values as dvclive logged them.
    for title, metric in CURVE_PLOTS.items():
        values = specs[title]["data"]["values"]
        for rev in ("main", BRANCH):
            for split in ("train", "eval"):
                tsv = show_file(branched, rev, f"metrics/train/plots/metrics/{split}/{metric}.tsv")
                logged = [float(r[metric]) for r in csv.DictReader(io.StringIO(tsv), delimiter="\t")]
                shown = [float(v[metric]) for v in values if v["rev"] == rev and v["filename"].startswith(split)]
                assert shown == pytest.approx(logged), (title, rev, split)
                assert len(logged) >= 1

    # The PNG confusion matrix is copied next to the page, once per branch.
    for rev in ("main", BRANCH):
        image = out_dir / "static" / f"{rev}_plots_confusion_matrix.png"
        assert image.stat().st_size > 1000
        assert f"static/{image.name}" in html
    # `-o` kept the project clean: nothing to commit by accident.
    assert branched.git("status", "--porcelain").stdout == ""


def exp_rows(project) -> list[dict]:
    """`dvc exp show --json` flattened: one dict per baseline or experiment (kind, name, params, metrics)."""
    rows = []
    for baseline in json.loads(project.dvc("exp", "show", "--json").stdout):
        entries = [("baseline", baseline)]
        entries += [("experiment", rev) for exp in baseline.get("experiments") or [] for rev in exp["revs"]]
        for kind, entry in entries:
            data = entry["data"]
            rows.append(
                {
                    "kind": kind,
                    "rev": entry["rev"],
                    "name": entry.get("name"),
                    "params": data["params"]["params.yaml"]["data"],
                    "metrics": {path: m["data"] for path, m in (data.get("metrics") or {}).items()},
                }
            )
    return rows


def test_exp_run_set_param_then_exp_show_lists_it(built_project):
    project = built_project
    out = project.dvc("exp", "run", "-S", "featurize.n_mfcc=20").stdout
    try:
        # prepare reads no featurize params and is skipped; featurize and what depends on it rerun.
        ran = project.stages_run(out)
        assert "prepare" not in ran and {"featurize", "train", "evaluate"} <= set(ran)
        name = re.search(r"Ran experiment\(s\): (\S+)", out).group(1)
        # dvclive runs with dvcyaml=None and save_dvc_exp=False: the experiment is DVC's alone and dvc.yaml
        # is left as written.
        assert "dvc.yaml" not in project.git("status", "--porcelain").stdout

        rows = exp_rows(project)
        experiments = [r for r in rows if r["kind"] == "experiment"]
        assert [r["name"] for r in experiments] == [name]
        exp = experiments[0]
        main = next(r for r in rows if r["name"] == "main")
        assert (main["params"]["featurize"]["n_mfcc"], exp["params"]["featurize"]["n_mfcc"]) == (40, 20)
        for row in (main, exp):
            assert 0.0 <= row["metrics"]["metrics/metrics.json"]["accuracy"] <= 1.0
            assert row["metrics"]["metrics/train/metrics.json"]["epochs_run"] >= 1
        # The experiment's model really was trained on 20 MFCCs.
        model_meta = json.loads((project.path / "models/model.json").read_text())
        assert model_meta["input_shape"][0] == 20

        # The table a user reads names the experiment and both n_mfcc values.
        table = project.dvc(
            "exp", "show", "--csv", "--drop", ".*", "--keep", "Experiment|rev|featurize.n_mfcc|^accuracy$"
        ).stdout
        by_rev = {r["rev"]: r for r in csv.DictReader(io.StringIO(table))}
        assert by_rev["main"]["featurize.n_mfcc"] == "40"
        assert any(r["Experiment"] == name and r["featurize.n_mfcc"] == "20" for r in by_rev.values())
    finally:
        # exp run applied its results to the workspace: put main back for the module's other tests.
        project.dvc("exp", "remove", "--all-commits", check=False)
        project.git("checkout", "-q", "--", ".")
        project.dvc("checkout", "-q")
