"""Featurize benchmark: the reference against the project's featurize, on PASCAL and a generated scale set.

For each data set it builds a throw-away git + DVC project (this checkout's code, the data under data/raw/),
runs prepare once untimed, then times, each in its own process:

  (a) the reference: sequential librosa.load at 22 050 Hz + librosa.feature.mfcc (n_mfcc 40), whole recordings;
  (b) the featurize stage (python stages/featurize.py) from an empty feature cache;
  (d) `dvc repro featurize` with nothing changed;
  (c) the featurize stage after one recording's audio changed (prepare rerun untimed first; the stage's
      outputs are persistent, so they are left in place as `dvc repro` leaves them).

Every row uses the same recordings (prepare's manifest). Usage:

  python benchmarks/featurize.py            # PASCAL + scale set (>= 4000 recordings, >= 12 h)
  python benchmarks/featurize.py --quick    # PASCAL + a 400-recording scale set, for a quick look
  python benchmarks/featurize.py --cluster  # local pool vs featurize.scheduler: local-cluster, 1k/4k/16k recordings

--cluster times the featurize stage from an empty cache with the local worker pool and with a Dask LocalCluster
of as many worker processes (featurize.scheduler: local-cluster), alternately, on scale sets of 1k, 4k and 16k
recordings, checks both write the same bytes, and fits wall = fixed + per-recording cost to each path.
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
PASCAL_ROOT = REPO_ROOT / "data" / "raw" / "pascal"
LABEL_SHARES = {"normal": 0.6, "murmur": 0.25, "extrastole": 0.15}
GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.invalid",
    "DVC_NO_ANALYTICS": "1",
}


# --- the reference (runs in its own process: python benchmarks/featurize.py --reference manifest.csv) ---


def reference(manifest_csv: str) -> None:
    """The public notebook's way: every recording decoded by librosa at 22 050 Hz, MFCC of the whole signal."""
    import librosa

    for path in pd.read_csv(manifest_csv)["path"]:
        y, sr = librosa.load(path, sr=22050)
        librosa.feature.mfcc(y=y, sr=sr, n_mfcc=40)


# --- the scale set ---


def heart_sound(duration_s: float, rate_hz: int, rng: np.random.Generator, murmur: bool) -> np.ndarray:
    """A heart-sound-like signal: S1/S2 bursts (decaying 30-150 Hz tones) at 50-120 bpm with beat-to-beat jitter,
    an optional murmur (noise band-passed by a 150-600 Hz resonance) between them, breathing drift and sensor noise.
    Synthesised at 4 kHz; a 44.1 kHz file is upsampled from it with added broadband noise, like a digital stethoscope.
    """
    import soxr

    base_hz = 4000
    n = int(duration_s * base_hz)
    t = np.arange(n, dtype=np.float32) / base_hz
    period_s = 60.0 / rng.uniform(50, 120)
    beats = np.cumsum(period_s * rng.normal(1.0, 0.04, int(duration_s / period_s) + 2)) - rng.uniform(0, period_s)
    beat = np.searchsorted(beats, t) - 1
    since_s = t - beats[np.clip(beat, 0, None)]
    since_s[beat < 0] = 1.0
    s1 = np.exp(-since_s / 0.025) * np.sin(2 * np.pi * rng.uniform(30, 60) * t)
    s2_s = np.clip(since_s - 0.33 * period_s, 0, None)
    s2 = np.where(since_s > 0.33 * period_s, np.exp(-s2_s / 0.018), 0) * np.sin(2 * np.pi * rng.uniform(70, 150) * t)
    signal = 0.5 * s1 + 0.35 * s2 + 0.05 * np.sin(2 * np.pi * rng.uniform(0.2, 0.4) * t)
    noise = rng.standard_normal(n).astype(np.float32)
    if murmur:
        f0 = rng.uniform(150, 600)
        resonance = np.exp(-np.arange(64) / 8) * np.sin(2 * np.pi * f0 * np.arange(64) / base_hz)
        band = np.convolve(noise, resonance, mode="same")
        in_systole = (since_s > 0.06) & (since_s < 0.3 * period_s)
        signal += 0.15 * band * in_systole
    signal += 0.01 * noise
    if rate_hz != base_hz:
        signal = soxr.resample(signal.astype(np.float32), base_hz, rate_hz)
        signal += 0.005 * rng.standard_normal(len(signal)).astype(np.float32)
    return (signal / np.abs(signal).max() * 0.8).astype(np.float32)


def generate_scale_set(root: Path, recordings: int, min_hours: float, seed: int = 0) -> None:
    """Write at least `recordings` distinct recordings, together at least min_hours long, in PASCAL's set_b layout
    (<label>__<patient>_<n>_B.wav, three recordings per patient); half at 4 kHz, half at 44.1 kHz, 2-30 s each."""
    rng = np.random.default_rng(seed)
    out = root / "set_b"
    out.mkdir(parents=True, exist_ok=True)
    labels, shares = list(LABEL_SHARES), list(LABEL_SHARES.values())
    total_s, i = 0.0, 0
    while i < recordings or total_s < min_hours * 3600:
        duration_s = float(np.clip(2 + rng.gamma(2.0, 4.8), 2, 30))
        rate_hz = int(rng.choice([4000, 44100]))
        label = str(rng.choice(labels, p=shares))
        samples = heart_sound(duration_s, rate_hz, rng, murmur=label == "murmur")
        sf.write(out / f"{label}__{100 + i // 3}_{i}_B.wav", samples, rate_hz, subtype="PCM_16")
        total_s += duration_s
        i += 1


def change_one_recording(manifest: pd.DataFrame, root: Path) -> Path:
    """Replace one recording's audio (same length and rate, new content); returns its path."""
    path = root / manifest.sort_values("path").iloc[len(manifest) // 2]["path"]
    info = sf.info(path)
    samples = heart_sound(info.duration, info.samplerate, np.random.default_rng(12345), murmur=False)
    path.unlink()  # a new file, not a rewrite: the PASCAL copy is hard-linked to the checkout's data
    sf.write(path, samples[: info.frames], info.samplerate, subtype=info.subtype)
    return path


# --- the project under test ---


class Project:
    """A throw-away git + DVC project with this checkout's code and one data set under data/raw/<name>."""

    def __init__(self, path: Path, name: str, jobs: int):
        self.path = path
        self.env = {**os.environ, **GIT_ENV, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        listed = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO_ROOT, capture_output=True, check=True
        ).stdout.decode()
        for rel in filter(None, listed.split("\0")):
            src = REPO_ROOT / rel
            if src.is_file() and not rel.startswith(("tests/", "benchmarks/", "docs/", "data/")):
                (path / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, path / rel)
        params = yaml.safe_load((path / "params.yaml").read_text())
        params["data"]["root"] = f"data/raw/{name}"
        params["featurize"]["jobs"] = jobs
        (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        self.raw = path / "data" / "raw" / name
        self.raw.mkdir(parents=True)
        with open(path / ".gitignore", "a", encoding="utf-8") as f:
            f.write("/data/raw/\n")
        self.cache_dir = path / params["featurize"]["cache_dir"]

    def set_featurize(self, **values) -> None:
        params = yaml.safe_load((self.path / "params.yaml").read_text())
        params["featurize"].update(values)
        (self.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    def run(self, *cmd: str) -> str:
        result = subprocess.run(cmd, cwd=self.path, env=self.env, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result.stdout

    def init(self) -> None:
        self.run("git", "init", "-q", "-b", "main")
        self.commit("project under benchmark")

    def commit(self, message: str) -> None:
        self.run("git", "add", "-A")
        self.run("git", "commit", "-q", "--allow-empty", "-m", message)

    def dvc(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "dvc", *args]

    @property
    def featurize_cmd(self) -> list[str]:
        return [sys.executable, "stages/featurize.py", "data/prepared/manifest.csv", "data/features"]

    @property
    def prepare_cmd(self) -> list[str]:
        return [sys.executable, "stages/prepare.py", "data/prepared"]


# Runs argv[2:] and writes "<wall seconds> <peak RSS KiB> <CPU seconds>" to argv[1]. The benchmark itself is
# large; a child forked from it would start with its peak RSS, so a minimal interpreter does the fork + exec
# instead. wait4 reports the peak of the command or of any process it waited for (the featurize pool's
# workers), whichever is larger, and the CPU time of all of them.
MEASURE = """
import os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(f"{time.perf_counter() - start} {usage.ru_maxrss} {usage.ru_utime + usage.ru_stime}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def timed(cmd: list[str], cwd: Path, env: dict) -> tuple[float, int, float, str]:
    """Run cmd in its own process; (wall seconds, peak RSS bytes of any process in its tree, CPU seconds of the
    tree, stdout)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "usage"
        result = subprocess.run(
            [sys.executable, "-I", "-S", "-c", MEASURE, str(report), *cmd],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        seconds, rss_kib, cpu_s = report.read_text().split()
    return float(seconds), int(rss_kib) * 1024, float(cpu_s), result.stdout


def stage_summary(stdout: str) -> dict:
    """The dict the featurize stage prints last."""
    return ast.literal_eval(stdout.strip().splitlines()[-1])


def bench_dataset(name: str, workdir: Path, args) -> list[dict]:
    """All rows for one data set."""
    project = Project(workdir / name, name, args.jobs)
    t0 = time.perf_counter()
    if name == "pascal":
        shutil.copytree(PASCAL_ROOT, project.raw, dirs_exist_ok=True, copy_function=os.link)
    else:
        generate_scale_set(project.raw, args.recordings, args.min_hours)
    project.init()
    project.run(*project.dvc("repro", "prepare"))
    project.commit("prepared")
    manifest_csv = project.path / "data" / "prepared" / "manifest.csv"
    manifest = pd.read_csv(manifest_csv)
    rates = manifest["sample_rate_hz"].value_counts().to_dict()
    print(
        f"\n[{name}] {len(manifest)} recordings, {manifest['duration_s'].sum() / 3600:.2f} h, "
        f"sample rates {rates}, set up in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    rows = []

    def row(label: str, cmd: list[str], check=None) -> None:
        seconds, rss, cpu_s, stdout = timed(cmd, project.path, project.env)
        if check:
            check(stdout)
        rows.append(
            {
                "data": name,
                "row": label,
                "seconds": seconds,
                "recordings/s": len(manifest) / seconds,
                "audio-s/s": manifest["duration_s"].sum() / seconds,
                "peak RSS MiB": rss / 2**20,
                "CPU s": cpu_s,
            }
        )
        print(f"  {label:<40} {seconds:8.2f} s  {rss / 2**20:7.0f} MiB  {cpu_s:8.2f} CPU s", flush=True)

    def computed(n: int):
        def check(stdout: str) -> None:
            summary = stage_summary(stdout)
            if summary["computed"] != n:
                raise RuntimeError(f"expected {n} recomputed recordings, got {summary}")

        return check

    def nothing_ran(stdout: str) -> None:
        if "Running stage" in stdout:
            raise RuntimeError(f"dvc repro ran a stage:\n{stdout}")

    row("(a) reference librosa 22.05 kHz", [sys.executable, __file__, "--reference", str(manifest_csv)])
    shutil.rmtree(project.cache_dir, ignore_errors=True)
    row("(b) featurize, empty cache", project.featurize_cmd, computed(int(manifest["sha256"].nunique())))
    # Record (b)'s outputs in dvc.lock, so that DVC sees the pipeline as up to date.
    project.run(*project.dvc("commit", "-f", "featurize"))
    project.commit("featurized")
    row("(d) dvc repro featurize, nothing changed", project.dvc("repro", "featurize"), nothing_ran)
    change_one_recording(manifest, project.path)
    project.run(*project.prepare_cmd)
    row("(c) featurize, one recording changed", project.featurize_cmd, computed(1))
    return rows


# --- the local pool against a Dask LocalCluster (featurize.scheduler: local-cluster) ---

CLUSTER_SIZES = (1000, 4000, 16000)
BASE_RECORDINGS = 1000  # synthesised; the larger sets are copies of these (derive_scale_set)


def derive_scale_set(base: Path, root: Path, recordings: int) -> None:
    """`recordings` distinct recordings made from the base scale set's in PASCAL's set_b layout: the k-th copy of a
    file has the low byte of its last sample XORed with k, so its content and sha256 are new (featurize computes
    it again) while its decode and MFCC cost the same. Copying is ~20x faster than synthesising 16k recordings."""
    sources = sorted((base / "set_b").glob("*.wav"))
    out = root / "set_b"
    out.mkdir(parents=True, exist_ok=True)
    for i in range(recordings):
        source = sources[i % len(sources)]
        copy, label = i // len(sources), source.name.split("__")[0]
        target = out / f"{label}__{100 + i // 3}_{i}_B.wav"
        shutil.copyfile(source, target)
        if copy:
            with open(target, "r+b") as f:  # 16-bit mono PCM: the file ends with its last sample, low byte first
                f.seek(-2, os.SEEK_END)
                low = f.read(1)[0]
                f.seek(-2, os.SEEK_END)
                f.write(bytes([low ^ copy]))


def output_bytes(features_dir: Path) -> dict[str, str]:
    """sha256 of every featurize output file, by name."""
    import hashlib

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(features_dir.iterdir())}


def bench_cluster(workdir: Path, args) -> pd.DataFrame:
    """Local pool vs local-cluster on the same cores, at each size in args.cluster_sizes; one row per run."""
    base, base_recordings = workdir / "base", min(BASE_RECORDINGS, *args.cluster_sizes)
    t0 = time.perf_counter()
    generate_scale_set(base, base_recordings, 0.0)
    print(f"base scale set of {base_recordings} recordings in {time.perf_counter() - t0:.0f} s", flush=True)
    rows = []
    for size in sorted(args.cluster_sizes):
        project = Project(workdir / f"scale{size}", "scale", args.jobs)
        derive_scale_set(base, project.raw, size)
        project.run(*project.prepare_cmd)
        manifest = pd.read_csv(project.path / "data" / "prepared" / "manifest.csv")
        if manifest["sha256"].nunique() != size:
            raise RuntimeError(f"expected {size} distinct recordings, prepare kept {manifest['sha256'].nunique()}")
        audio_h = manifest["duration_s"].sum() / 3600
        print(f"\n[{size} recordings, {audio_h:.1f} h] load average {os.getloadavg()[0]:.1f}", flush=True)
        # The largest size alone takes as long as the smaller ones with all their repeats.
        repeats = args.repeats if size < max(args.cluster_sizes) else args.largest_repeats
        reference = None
        for repeat in range(repeats):
            # Alternating which path goes first spreads a drift in the machine's load over both.
            for scheduler in (None, "local-cluster")[:: 1 if repeat % 2 == 0 else -1]:
                shutil.rmtree(project.cache_dir, ignore_errors=True)
                shutil.rmtree(project.path / "data" / "features", ignore_errors=True)
                project.set_featurize(scheduler=scheduler)
                seconds, rss, cpu_s, stdout = timed(project.featurize_cmd, project.path, project.env)
                if stage_summary(stdout)["computed"] != size:
                    raise RuntimeError(f"expected {size} computed recordings: {stage_summary(stdout)}")
                path = "local pool" if scheduler is None else "local-cluster"
                if repeat == 0:  # both paths must write the same bytes
                    written = output_bytes(project.path / "data" / "features")
                    reference = reference or written
                    if written != reference:
                        raise RuntimeError(f"{path} wrote other features than the local pool at {size} recordings")
                rows.append(
                    {"recordings": size, "path": path, "repeat": repeat, "seconds": seconds, "CPU s": cpu_s}
                    | {"peak RSS MiB": rss / 2**20, "load": os.getloadavg()[0]}
                )
                print(
                    f"  {path:<14} run {repeat + 1}/{repeats}  {seconds:7.2f} s  {size / seconds:6.0f} rec/s  "
                    f"{cpu_s:7.2f} CPU s  {rss / 2**20:5.0f} MiB  load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
        shutil.rmtree(project.path, ignore_errors=True)  # 16k recordings are ~8 GB
    return pd.DataFrame(rows)


def report_cluster(runs: pd.DataFrame) -> None:
    """The side-by-side table (medians), the cluster's overhead per recording, and linear fits of wall time."""
    median = runs.groupby(["recordings", "path"])[["seconds", "CPU s"]].median().unstack("path")
    table = pd.DataFrame(
        {
            "runs": runs.groupby("recordings")["repeat"].max() + 1,
            "local s": median["seconds", "local pool"],
            "cluster s": median["seconds", "local-cluster"],
            "cluster / local": median["seconds", "local-cluster"] / median["seconds", "local pool"],
            "local rec/s": median.index / median["seconds", "local pool"],
            "cluster rec/s": median.index / median["seconds", "local-cluster"],
            "local CPU s": median["CPU s", "local pool"],
            "cluster CPU s": median["CPU s", "local-cluster"],
            "overhead ms/rec": 1000
            * (median["seconds", "local-cluster"] - median["seconds", "local pool"])
            / median.index,
            "overhead CPU ms/rec": 1000
            * (median["CPU s", "local-cluster"] - median["CPU s", "local pool"])
            / median.index,
        }
    )
    print()
    print(table.to_string(float_format=lambda v: f"{v:.2f}"))
    print()
    for path in ("local pool", "local-cluster"):
        per_rec, fixed = np.polyfit(median.index.to_numpy(float), median["seconds", path].to_numpy(), 1)
        cpu_per_rec, cpu_fixed = np.polyfit(median.index.to_numpy(float), median["CPU s", path].to_numpy(), 1)
        print(
            f"{path:<14} wall = {fixed:5.2f} s + {1000 * per_rec:.2f} ms x recordings; "
            f"CPU = {cpu_fixed:5.2f} s + {1000 * cpu_per_rec:.2f} ms x recordings"
        )
    ratio = table["cluster / local"]
    print(f"cluster / local wall time: {', '.join(f'{n}: {r:.2f}' for n, r in ratio.items())} (target <= 1.25)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", metavar="MANIFEST", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="a 400-recording scale set (about 1.2 h)")
    parser.add_argument("--recordings", type=int, default=4000, help="scale set: at least this many recordings")
    parser.add_argument("--min-hours", type=float, default=12.0, help="scale set: at least this much audio")
    parser.add_argument("--datasets", default="pascal,scale", help="comma-separated: pascal, scale")
    parser.add_argument("--jobs", type=int, default=0, help="featurize.jobs (0 = all cores)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary projects")
    parser.add_argument("--cluster", action="store_true", help="only: local pool vs featurize.scheduler local-cluster")
    parser.add_argument(
        "--cluster-sizes",
        type=lambda text: [int(n) for n in text.split(",")],
        default=list(CLUSTER_SIZES),
        help="--cluster: comma-separated recording counts (default 1000,4000,16000)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="--cluster: runs of each path below the largest size")
    parser.add_argument("--largest-repeats", type=int, default=2, help="--cluster: runs of each path at the largest")
    args = parser.parse_args()
    if args.reference:
        reference(args.reference)
        return
    if args.quick:
        args.recordings, args.min_hours = 400, 1.2
    workdir = Path(tempfile.mkdtemp(prefix="heartsound-bench-"))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
    print(f"heartsound featurize benchmark at commit {commit.stdout.strip()}, {os.cpu_count()} cores, jobs={args.jobs}")
    try:
        if args.cluster:
            report_cluster(bench_cluster(workdir, args))
            return
        rows = [r for name in args.datasets.split(",") for r in bench_dataset(name, workdir, args)]
    finally:
        if args.keep:
            print(f"projects kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    table = pd.DataFrame(rows)
    print()
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print()
    for name, rows_of in table.groupby("data", sort=False):
        s = dict(zip(rows_of["row"].str[:3], rows_of["seconds"]))
        rss = rows_of.loc[rows_of["row"].str.startswith(("(b)", "(c)")), "peak RSS MiB"].max()
        cpu = dict(zip(rows_of["row"].str[:3], rows_of["CPU s"]))
        print(
            f"{name}: a/b = {s['(a)'] / s['(b)']:.1f} (target >= 10), c/b = {s['(c)'] / s['(b)']:.3f} (<= 0.05), "
            f"d = {s['(d)']:.2f} s (< 3), featurize peak RSS {rss:.0f} MiB (< 1024); "
            f"in CPU time: a/b = {cpu['(a)'] / cpu['(b)']:.1f}, c/b = {cpu['(c)'] / cpu['(b)']:.3f}"
        )


if __name__ == "__main__":
    main()
