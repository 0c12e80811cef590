"""``dvc.yaml`` written from the Snakemake DAG, and DVC's record kept in step after direct Snakemake runs.

Snakemake is the one definition of the pipeline. Each coarse DVC stage (``dvc_stages()`` in
rules/common.smk) runs ``snakemake <its targets>``, so ``dvc repro``, a plain ``snakemake`` and a SLURM run
all execute the same jobs; DVC adds content hashes, remotes and history on top.

What each stage lists, all read from the DAG:
    deps     inputs of the stage's jobs that the stage does not make itself (earlier stages' outputs, the
             segzoo source files the rules list, a user's raw dataset), plus the rule files and the schema
    params   the config keys the stage's rules read, from config.yaml and each --configfile that sets them
    outs     every declared output, ``persist: true``: DVC leaves them in place and Snakemake, which knows
             which jobs changed, reruns only those (DVC alone would delete and remake the whole stage)
    metrics  outputs named ``metrics``; plots: outputs or params named ``curves`` (both ``cache: false``,
             kept in git; see .gitignore)
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from segzoo.errors import SegzooError
from segzoo.io import write_text

HEADER = ("# Written by `segzoo dvc-sync{args}` from the Snakemake DAG (rules/, config). Do not edit:\n"
          "# change the rules or the config and run it again (tests/test_dvc.py fails when this file is stale).\n")
SHARED_DEPS = ("Snakefile", "rules/common.smk", "schemas/config.schema.yaml")


@dataclass
class Stage:
    name: str
    cmd: str
    deps: list[str] = field(default_factory=list)
    params: dict[str, list[str]] = field(default_factory=dict)
    outs: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)


def _relative(path: str, root: Path) -> str:
    """Paths inside the repository relative to it (DVC's convention); others (a user's dataset) absolute."""
    absolute = Path(root, path).resolve()
    try:
        return absolute.relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(absolute)


def _config_keys(root: Path, files: list[Path], keys: list[str]) -> dict[str, list[str]]:
    """For each config file (relative to ``root``), the keys (dotted for nested ones) it sets: DVC tracks only
    keys a file holds."""
    found = {}
    for path in files:
        data = yaml.safe_load((root / path).read_text()) or {}
        present = []
        for key in keys:
            node, ok = data, True
            for part in key.split("."):
                ok = isinstance(node, dict) and part in node
                if not ok:
                    break
                node = node[part]
            if ok:
                present.append(key)
        if present:
            found[path.as_posix()] = present
    return found


def plan_stages(root: Path, configfiles: list[Path], gpus: int) -> list[Stage]:
    """The DVC stages for this checkout and config, from Snakemake's whole job DAG (nothing runs)."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.enums import Quietness
    from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, ResourceSettings

    root = Path(root).resolve()
    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
        workflow_api = api.workflow(resource_settings=ResourceSettings(cores=1),
                                    config_settings=ConfigSettings(configfiles=[root / c for c in configfiles]),
                                    snakefile=root / "Snakefile", workdir=root)
        workflow_api.dag(DAGSettings(forceall=True))
        workflow = workflow_api._workflow  # the public API prints DAGs; we need the jobs themselves
        workflow._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True)
        workflow._build_dag()
        return _stages_from_dag(root, workflow, configfiles, gpus)


def _closure(dag, jobs):
    seen, todo = set(), list(jobs)
    while todo:
        job = todo.pop()
        if job not in seen:
            seen.add(job)
            todo.extend(dag.dependencies[job])
    return seen


def _stages_from_dag(root: Path, workflow, configfiles: list[Path], gpus: int) -> list[Stage]:
    dag = workflow.dag
    specs = workflow.globals["dvc_stages"]()
    producer = {str(f): job for job in dag.jobs for f in job.output}
    param_files = [Path("config.yaml"), *configfiles]
    options = "".join(f" --configfile {shlex.quote(c.as_posix())}" for c in configfiles)
    owned, stages = set(), []
    for name, spec in specs.items():
        missing = [t for t in spec["targets"] if t not in producer]
        if missing:
            raise SegzooError(f"dvc stage {name!r}: no rule makes {', '.join(missing)}")
        jobs = _closure(dag, [producer[t] for t in spec["targets"]]) - owned
        owned |= jobs
        jobs = sorted(jobs, key=lambda j: (j.rule.name, sorted(map(str, j.output))))
        made = {str(f) for job in jobs for f in job.output}
        stage = Stage(name, f"snakemake {' '.join(map(shlex.quote, spec['targets']))} --cores all"
                            f" --resources gpu={gpus}{options}")
        deps = {str(f) for job in jobs for f in job.input if str(f) not in made}
        deps |= {*SHARED_DEPS, *(_relative(job.rule.snakefile, root) for job in jobs)}
        stage.deps = sorted(_relative(d, root) for d in deps)
        stage.params = _config_keys(root, param_files, spec["params"])
        for job in jobs:
            named = {str(f): key for key, f in job.output.items() if isinstance(f, str)}
            for out in map(str, job.output):
                kind = named.get(out)
                (stage.metrics if kind == "metrics" else stage.plots if kind == "curves" else stage.outs).append(out)
            if "curves" in job.params.keys():
                stage.plots.append(job.params.curves)
        stages.append(stage)
    return stages


def render(stages: list[Stage], configfiles: list[Path]) -> str:
    def entries(paths, **flags):
        return [{p: dict(flags)} for p in paths]

    body = {}
    for s in stages:
        stage = {"cmd": s.cmd, "deps": s.deps}
        if s.params:
            stage["params"] = [{f: keys} for f, keys in s.params.items()]
        stage["outs"] = entries(s.outs, persist=True)
        if s.metrics:
            stage["metrics"] = entries(s.metrics, persist=True, cache=False)
        if s.plots:
            stage["plots"] = entries(s.plots, persist=True, cache=False, x="step")
        body[s.name] = stage
    args = "".join(f" --configfile {c.as_posix()}" for c in configfiles)
    return HEADER.format(args=args) + yaml.safe_dump({"stages": body}, sort_keys=False, width=120)


def write_dvc_yaml(root: Path, configfiles: list[Path], gpus: int, check: bool = False) -> bool:
    """Write ``<root>/dvc.yaml``; True if it changed. With ``check``, write nothing and only compare.
    A dvc.yaml that this command did not write (no header) is someone's own work: refuse to replace it."""
    path = Path(root) / "dvc.yaml"
    text = render(plan_stages(root, configfiles, gpus), configfiles)
    old = path.read_text() if path.is_file() else None
    if check or old == text:
        return old != text
    if old is not None and not old.startswith(HEADER.split("{")[0]):
        raise SegzooError(f"{path}: not written by `segzoo dvc-sync` (no header); refusing to replace it. "
                          f"Move it away first.")
    write_text(path, text, overwrite=True)
    return True


def read_stages(dvc_yaml: Path) -> dict | None:
    """The ``stages`` of a dvc.yaml; None when it cannot be read or holds none."""
    try:
        stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages")
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    return stages if isinstance(stages, dict) else None


def configfiles_of(stages: dict) -> list[str] | None:
    """The --configfile arguments dvc.yaml's stages were written for (from their commands); None if unknown."""
    for stage in stages.values():
        words = shlex.split(stage.get("cmd", "")) if isinstance(stage, dict) else []
        if words[:1] == ["snakemake"]:
            return [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--configfile"]
    return None


def commit_after_run(workflow) -> str:
    """After a direct ``snakemake`` run, record in dvc.lock the stages whose outputs this run brought up to
    date, so ``dvc status`` stays clean. Returns what it did, in one line. Skipped inside ``dvc repro`` (DVC
    records those itself), outside a DVC repository, and for runs whose config differs from dvc.yaml's."""
    root = Path(workflow.basedir)
    dvc_yaml = root / "dvc.yaml"
    if os.environ.get("DVC_STAGE") or not (root / ".dvc").is_dir() or not dvc_yaml.is_file():
        return ""
    settings = workflow.config_settings
    ran_with = sorted(str(Path(c).resolve()) for c in settings.configfiles)
    stages = read_stages(dvc_yaml)
    written_for = configfiles_of(stages) if stages else None
    if settings.config or written_for is None or ran_with != sorted(str((root / c).resolve()) for c in written_for):
        return ("dvc: not recording this run (its config differs from the one dvc.yaml was written for; "
                "run `segzoo dvc-sync` with the same --configfile to track it)")
    made = {_relative(str(f), root) for job in workflow.dag.jobs for f in job.output}
    done = [name for name, stage in stages.items()
            if all(next(iter(o)) in made for key in ("outs", "metrics") for o in stage.get(key, []))]
    if not done:
        return ""
    dvc = shutil.which("dvc", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if dvc is None:
        return "dvc: not installed beside snakemake; run `dvc commit` yourself"
    result = subprocess.run([dvc, "commit", "--force", "--quiet", *done], cwd=root, capture_output=True, text=True)
    if result.returncode:
        return f"dvc commit failed: {result.stderr.strip()}"
    return f"dvc: recorded stage(s) {', '.join(done)} in dvc.lock"
