# Shared helpers: config validation, dataset naming, the results layout, source-file inputs, input functions.
import json
import os
import re
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake_interface_executor_plugins.settings import DeploymentMethod

REPO = Path(workflow.basedir)
SRC = REPO / "src" / "segzoo"
sys.path.insert(0, str(SRC.parent))  # this checkout's segzoo, whatever is installed

from segzoo.cli import handler
from segzoo.config import validate_config
from segzoo.devices import resolve_device
from segzoo.errors import SegzooError
from segzoo.evaluate.lesions import instance_regions
from segzoo.imports import verb_sources
from segzoo.interop.nnunet_import import imported_models
from segzoo.weightgen.zoo import plan as zoo_plan

try:  # one line per bad key; fills in the schema's defaults
    config.update(validate_config(config, REPO / "schemas" / "config.schema.yaml"))
except SegzooError as e:
    raise WorkflowError("invalid configuration (config.yaml + any --configfile/--config overrides):\n  "
                        + "\n  ".join(e.problems)) from None

if {DeploymentMethod.CONDA, DeploymentMethod.APPTAINER} & set(workflow.deployment_settings.deployment_method):
    # envs/segzoo.yaml or the image (config `container`) brings the dependencies; the code is this checkout's src/,
    # run as `segzoo`. The function's braces are doubled twice: for this f-string, then for Snakemake's formatting.
    shell.prefix(f"export PYTHONPATH={shlex.quote(str(SRC.parent))}; segzoo() {{{{ python -m segzoo \"$@\"; }}}}; ")
else:
    # The `segzoo` beside this Snakemake (e.g. .venv/bin), even when that folder is not on PATH.
    shell.prefix(f'export PATH={shlex.quote(os.path.dirname(sys.executable))}:"$PATH"; ')

def fold_count(splits):
    """splits.folds, or the number of folds in nnU-Net's splits_final.json when one is given."""
    if not splits["nnunet_splits"]:
        return splits["folds"]
    from segzoo.data.splits import read_nnunet_splits

    try:
        return len(read_nnunet_splits(splits["nnunet_splits"]))
    except SegzooError as e:
        raise WorkflowError(f"splits.nnunet_splits: {e}") from None


PHANTOM_NAME = "Dataset001_SpinalPhantom"
RAW = config["dataset"]["raw"]
DATASET = config["dataset"]["name"] or (Path(RAW).name if RAW else PHANTOM_NAME)

# The results layout, named once. Rules write these paths (later rules read them through rules.<name>.output);
# targets, input functions and the closing summary expand them.
PHANTOM = "results/raw/{dataset}"
VERIFY_REPORT = "results/verify/{dataset}.json"
FINGERPRINT = "results/plans/{dataset}/fingerprint.json"
PLANS = "results/plans/{dataset}/plans.json"
PREPROCESSED = "results/preprocessed/{dataset}"
SPLITS = "results/splits/{dataset}/splits.json"
FOLDS = fold_count(config["splits"])  # cross-validation folds; 1: one train/val split
RUN = "{model}/seed{seed}/fold{fold}" if FOLDS > 1 else "{model}/seed{seed}"  # one training run (model, seed, fold)
TRAIN_RUN = f"results/train/{{dataset}}/{RUN}"
PREDICTIONS = "results/infer/{dataset}/{model}/seed{seed}"
SCORES = "results/evaluate/{dataset}/{model}/seed{seed}.csv"
TABLES = "results/tables/{dataset}"
METRICS = "results/metrics/{dataset}"
FIGURES = "results/figures/{dataset}"
ZOO = "results/zoo/{dataset}"
WEIGHTGEN = "results/weightgen/{dataset}"
OOF_PREDICTIONS = "results/infer_oof/{dataset}/{model}/seed{seed}"  # cross-validation: each case by its fold's run
OOF_SCORES = "results/evaluate_oof/{dataset}/{model}/seed{seed}.csv"
OOF_TABLES = "results/tables_oof/{dataset}"
NEW_PREDICTIONS = "results/predict/{dataset}/{model}"  # segzoo predict on config predict.input
PAGE = "results/{dataset}/index.html"  # one page per dataset; another dataset's run never replaces it
PAPER = "results/{dataset}/paper"  # main.tex, references.bib, figures as PDF and (with TeX) main.pdf
PAPER_REFERENCES = os.path.relpath(SRC / "report" / "references.bib")  # data the paper verb reads: no module
SITE_INDEX = "results/index.html"  # links to every dataset page found under results/

DEVICE = resolve_device(config["device"])
GPUS_PER_JOB = 1 if DEVICE == "cuda" else 0  # CPU runs ask for no GPU, so --resources gpu=2 still runs them
TRAIN_PROCESSES = config["train"]["gpus_per_job"]
TRAIN_GPUS = TRAIN_PROCESSES * GPUS_PER_JOB


# The comparison's rows: models trained here (one run per seed), nnU-Net models imported with
# `segzoo nnunet-import` (train.models entries `nnunet:<path>`; one run, seed 0, no training) and external rows,
# label maps made outside segzoo (compare.external; scored only, seed 0).
TRAINED = [m for m in config["train"]["models"] if m in config["models"]]
IMPORTED = {name: str(stem) for name, stem in imported_models(config["train"]["models"]).items()}
EXTERNAL = config["compare"]["external"]
RUNS = [(m, s) for m in TRAINED for s in config["train"]["seeds"]] + [(m, 0) for m in IMPORTED]
SCORED = RUNS + [(m, 0) for m in EXTERNAL]  # every row of the comparison's tables
# The {model} wildcard: any row of the comparison; rules that train or read a training run take trained models only.
MODEL_WILDCARD = "|".join(map(re.escape, [*config["models"], *IMPORTED, *EXTERNAL]))
TRAINED_MODEL_WILDCARD = "|".join(map(re.escape, config["models"]))


def row_problems():
    """Rows of the comparison that clash, and a baseline that is not one of them (one line each)."""
    found = []
    for row in EXTERNAL:
        if row in config["models"] or row in IMPORTED:
            found.append(f"compare.external.{row}: the row name is taken by a model or an imported nnU-Net row")
    found += [f"train.models: the imported row {row} is also the name of a model; rename its import folder"
              for row in IMPORTED if row in config["models"]]
    rows = [*TRAINED, *IMPORTED, *EXTERNAL]
    baseline = config["compare"]["baseline"]
    if baseline not in rows:
        found.append(f"compare.baseline: {baseline!r} is not a row of the comparison (rows: {', '.join(rows)})")
    elif FOLDS > 1 and baseline not in TRAINED:
        found.append(f"compare.baseline: {baseline!r} is not trained here, and with cross-validation the "
                     f"out-of-fold tables compare trained models only ({', '.join(TRAINED)})")
    return found


if row_problems():
    raise WorkflowError("invalid configuration:\n  " + "\n  ".join(row_problems()))


def train_launcher():
    """`segzoo`, or torchrun starting one segzoo process per GPU (DDP) when a training job has several."""
    if TRAIN_PROCESSES == 1:
        return "segzoo"
    return f"torchrun --standalone --nproc-per-node {TRAIN_PROCESSES} -m segzoo"


def verb_code(verb):
    """The source files of the segzoo modules `segzoo <verb>` reaches, read from its imports (segzoo.imports: a
    static walk, imports inside functions included; segzoo.imports.NO_RERUN names the few left out and why). As
    inputs, an edit to any of them reruns the job; no list of files is kept by hand."""
    return [os.path.relpath(p) for p in verb_sources(handler(verb), SRC)]


def train_settings(wildcards):
    """The config a training job reads, as one JSON argument (a change to it reruns the job)."""
    train = {k: v for k, v in config["train"].items() if k not in ("models", "seeds", "threads", "gpus_per_job")}
    return json.dumps({"train": train, "model": config["models"][wildcards.model]}, sort_keys=True)


TRACKING = "results/tracking"  # W&B offline runs (wandb/) and the local MLflow store (mlruns/)
# The configuration the results page shows: all that decides a result. `tracking` (where runs are also logged) and
# `container` (the image jobs run in) decide none, so switching them redraws no page.
RESULT_CONFIG = {key: value for key, value in config.items() if key not in ("tracking", "container")}


def tracking_option(wildcards, output):
    """`--tracking JSON` for the train, zoo and gpt-train jobs ("" when config tracking is off). It takes `output`
    only so that Snakemake counts it as derived from the outputs: such params are no rerun trigger, so switching
    tracking on or off reruns no job (and the settings JSON, which the resume fingerprint reads, never holds it)."""
    from segzoo.tracking import checked

    tracking = checked({**config["tracking"], "dir": TRACKING})
    return f"--tracking {shlex.quote(json.dumps(tracking, sort_keys=True))}" if tracking else ""


def run_outputs(pattern, trained_only=False, scored=False):
    """``pattern`` for every run of the comparison (or only the trained ones; or every scored row, external ones
    included), for the dataset wildcard."""

    def expand_runs(wildcards):
        return [pattern.format(dataset=wildcards.dataset, model=m, seed=s, fold=0) for m, s in (SCORED if scored
                else RUNS) if not trained_only or m in TRAINED]  # with folds, a training run's files are fold 0's

    return expand_runs


def fold_runs(pattern, wildcards):
    """``pattern`` (a TRAIN_RUN file) for every fold of one model and seed (one path without folds)."""
    return [pattern.format(**wildcards, fold=f) for f in range(FOLDS)]


def get_checkpoint(wildcards):
    """The checkpoints a model and seed predict the test set with: its best training checkpoint (every fold's,
    ensembled, with cross-validation), or the imported nnU-Net model."""
    if wildcards.model in IMPORTED:
        return [f"{IMPORTED[wildcards.model]}.safetensors"]
    return fold_runs(rules.train.output.best, wildcards)


def get_postprocessing(wildcards):
    """A trained run's postprocessing.json (chosen on validation); imported nnU-Net models have none."""
    if wildcards.model in IMPORTED:
        return []
    return fold_runs(rules.postprocessing.output[0], wildcards)


def postprocessing_option(wildcards, input):
    return f"--postprocessing {' '.join(map(shlex.quote, input.postprocessing))}" if input.postprocessing else ""


def get_predictions(wildcards):
    """What a row's scores are computed from: its `segzoo infer` folder, or an external row's label maps (each
    file, so that a changed label map rescores it)."""
    if wildcards.model in EXTERNAL:
        folder = Path(EXTERNAL[wildcards.model]["predictions"])
        return sorted(str(p) for p in folder.glob("*.nii*")) or [str(folder)]  # none: the job says it is missing
    return [PREDICTIONS.format(**wildcards)]


def predictions_folder(wildcards):
    return EXTERNAL[wildcards.model]["predictions"] if wildcards.model in EXTERNAL else PREDICTIONS.format(**wildcards)


def compare_options():
    """`segzoo compare`'s baseline and external rows (with how each was made, for the captions)."""
    return " ".join([f"--baseline {shlex.quote(config['compare']['baseline'])}",
                     *(f"--external {shlex.quote(row)} {shlex.quote(e['protocol'])}" for row, e in EXTERNAL.items())])


def runs_json(wildcards):
    """Every run of the comparison with its training folder (null for imported models) and its predictions,
    for the figures (JSON)."""
    return json.dumps([{"model": m, "seed": s,
                        "run": TRAIN_RUN.format(dataset=wildcards.dataset, model=m, seed=s, fold=0) if m in TRAINED
                        else None,
                        "predictions": PREDICTIONS.format(dataset=wildcards.dataset, model=m, seed=s)}
                       for m, s in RUNS])


def train_targets():
    return expand(f"{TRAIN_RUN}/best.safetensors", dataset=DATASET, model=TRAINED, seed=config["train"]["seeds"],
                  fold=range(FOLDS))


def predict_targets():
    """One folder of predictions per trained model when predict.input names a folder of new images."""
    if not config["predict"]["input"]:
        return []
    return expand(NEW_PREDICTIONS, dataset=DATASET, model=TRAINED)


def predict_images(wildcards):
    """The new images (an added or changed image reruns the prediction)."""
    folder = Path(config["predict"]["input"])
    return sorted(str(p) for p in folder.glob("*.nii*")) if folder.is_dir() else [str(folder)]


def model_runs(wildcards):
    """Every seed's best checkpoint of one trained model (predict ensembles them)."""
    return expand(rules.train.output.best, dataset=wildcards.dataset, model=wildcards.model,
                  seed=config["train"]["seeds"], fold=range(FOLDS))


def model_postprocessing(wildcards):
    """Every seed's postprocessing.json of one trained model (predict reads them beside the checkpoints)."""
    return expand(rules.postprocessing.output[0], dataset=wildcards.dataset, model=wildcards.model,
                  seed=config["train"]["seeds"], fold=range(FOLDS))


def evaluate_targets():
    return [TABLES.format(dataset=DATASET)] + ([OOF_TABLES.format(dataset=DATASET)] if FOLDS > 1 else [])


def splits_options():
    if config["splits"]["nnunet_splits"]:
        return f"--nnunet-splits {shlex.quote(config['splits']['nnunet_splits'])}"
    return f"--folds {FOLDS}" if FOLDS > 1 else ""


def fold_option(wildcards):
    return f"--fold {wildcards.fold}" if FOLDS > 1 else ""


def oof_runs(wildcards):
    """Every fold's run folder of one model and seed, in fold order (infer-oof)."""
    return fold_runs(rules.train.output.final, wildcards)


def dataset_outline():
    """Channels, regions and training image shapes/spacings (headers only), for the start-time checks; None when
    the dataset cannot be read (the verify job then says why, naming each file)."""
    from segzoo.data.phantom import REGIONS
    from segzoo.dataset_checks import outline_phantom, outline_raw

    if not RAW:
        return outline_phantom(DATASET, config["phantom"], list(REGIONS))
    try:
        return outline_raw(RAW)
    except SegzooError:
        return None


WG = config["weightgen"]
OUTLINE = dataset_outline()
REGION_NAMES = OUTLINE.regions if OUTLINE else None
WG_TASKS = zoo_plan.tasks(WG, REGION_NAMES)
INSTANCE_REGIONS = instance_regions(config["evaluate"]["instance_regions"], REGION_NAMES)
_problems = zoo_plan.problems(WG, REGION_NAMES, DATASET)
if OUTLINE is not None:
    from segzoo.dataset_checks import config_problems

    _problems += config_problems(config, OUTLINE, TRAINED, IMPORTED)
if _problems:
    raise WorkflowError("invalid configuration for this dataset:\n  " + "\n  ".join(_problems))


def zoo_jobs(wildcards):
    """Every zoo job folder of the config: the runs of every start, in groups of members_per_job."""
    return [f"{ZOO.format(dataset=wildcards.dataset)}/{job['folder']}" for job in zoo_plan.jobs(WG, WG_TASKS)]


def zoo_job_runs(wildcards):
    """`--run START TASK LR SEED` for every run of the job."""
    runs = zoo_plan.job_members(WG, WG_TASKS, int(wildcards.group))
    return " ".join(f"--run {r['start']} {shlex.quote(r['task'])} {r['lr']} {r['seed']}" for r in runs)


def zoo_plans_input(wildcards):
    """plans.json, when the zoo takes its patch from the plan (weightgen.patch_size: null)."""
    return [PLANS.format(dataset=wildcards.dataset)] if WG["patch_size"] is None else []


def get_imported_start(wildcards):
    """weightgen.init imported:<folder>: the imported checkpoint is the first parent's input."""
    folder = zoo_plan.imported_start(WG["init"])
    if folder is None:
        return []
    from segzoo.checkpoint import paths
    from segzoo.interop.nnunet_import import imported_checkpoint

    return [str(p) for p in paths(imported_checkpoint(folder))]


# The learned generators the evaluation judges beside the baselines (G.pt, then each arm of the structure-shared
# generator), and each one's samples and training loss curve.
LEARNED_GENERATORS = ["gpt", *(f"graph_{arm}" for arm in WG["graph"]["arms"])]


def learned_samples(wildcards):
    folder = WEIGHTGEN.format(dataset=wildcards.dataset)
    return [f"{folder}/samples.safetensors", *(f"{folder}/graph_{arm}_samples.safetensors" for arm in WG["graph"]["arms"])]


def learned_losses(wildcards):
    folder = WEIGHTGEN.format(dataset=wildcards.dataset)
    return [f"{folder}/gpt_loss.csv", *(f"{folder}/graph_{arm}_loss.csv" for arm in WG["graph"]["arms"])]


def weightgen_targets():
    """The G.pt evaluation folder, when the weight-generation stage is on."""
    return [f"{WEIGHTGEN.format(dataset=DATASET)}/evaluation"] if WG["enabled"] else []


def dvc_stages():
    """The coarse DVC stages `segzoo dvc-sync` writes, in order: the Snakemake targets each one runs and the
    config keys its rules read (DVC params). A stage owns every job its targets need that no earlier stage
    owns; outputs named ``metrics`` become DVC metrics, outputs or params named ``curves`` DVC plots."""
    stages = {
        "data": (data_targets(), ["seed", "dataset", "phantom", "preprocess", "splits", "plan", "models",
                                  "train.models", "train.patch_size", "train.batch_size", "compare.protocol"]),
        "train": (train_targets(), ["seed", "device", "models", "train"]),
        "evaluate": (evaluate_targets() + predict_targets(), ["seed", "device", "train.sw_batch_size", "evaluate",
                                                            "predict", "compare.baseline", "compare.external"]),
        "weightgen": (weightgen_targets(), ["seed", "device", "dataset", "weightgen",
                                            *(f"train.{k}" for k in zoo_plan.INHERITED_TRAIN_KEYS)]),
        "report": ([PAGE.format(dataset=DATASET), PAPER.format(dataset=DATASET), SITE_INDEX],
                   sorted(RESULT_CONFIG)),  # the page shows the configuration that decides results
    }
    return {name: {"targets": targets, "params": params} for name, (targets, params) in stages.items() if targets}


def preprocess_options():
    """The config's overrides of the planned target spacing and normalisation."""
    spacing, schemes = config["preprocess"]["spacing"], config["preprocess"]["normalization"]
    return " ".join([*(["--spacing", *map(str, spacing)] if spacing else []),
                     *(["--normalization", *schemes] if schemes else [])])


def lesion_options():
    """`segzoo evaluate`'s lesion-wise options: the instance regions and the detection rule ("" when none)."""
    if not INSTANCE_REGIONS:
        return ""
    detection = config["evaluate"]["detection"]
    return (f"--instance-regions {' '.join(map(shlex.quote, INSTANCE_REGIONS))} "
            f"--min-overlap-voxels {detection['min_overlap_voxels']} --connectivity {detection['connectivity']}")


def plan_settings():
    """What `segzoo plan` reads from the config (one JSON argument): the trained models, the memory budget and
    the values that override the plan."""
    return json.dumps({"models": {m: config["models"][m] for m in TRAINED}, "memory_mb": config["plan"]["memory_mb"],
                       "protocol": config["compare"]["protocol"],
                       "spacing": config["preprocess"]["spacing"], "normalization": config["preprocess"]["normalization"],
                       "patch_size": config["train"]["patch_size"], "batch_size": config["train"]["batch_size"]},
                      sort_keys=True)


def raw_dataset(wildcards):
    """The phantom the pipeline writes, or the user's own dataset (read, never written)."""
    return RAW if RAW else PHANTOM.format(dataset=wildcards.dataset)


def data_targets():
    return [VERIFY_REPORT.format(dataset=DATASET), PLANS.format(dataset=DATASET), SPLITS.format(dataset=DATASET)]


def record_in_dvc():
    """A direct run keeps DVC in step: the stages this run brought up to date go into dvc.lock."""
    from segzoo.dvc_sync import commit_after_run

    message = commit_after_run(workflow)
    if message:
        print(message)


def print_outputs():
    at = lambda pattern: pattern.format(dataset=DATASET, model="<model>", seed="<seed>", fold="<fold>")  # noqa: E731
    print(f"\nsegzoo: done for {DATASET}")
    print(f"  verification report : {at(VERIFY_REPORT)}")
    print(f"  plans               : {at(PLANS)} (spacing, normalisation, patch and batch per model)")
    print(f"  preprocessed arrays : {at(PREPROCESSED)}/")
    print(f"  splits              : {at(SPLITS)}")
    print(f"  checkpoints         : {at(TRAIN_RUN)}/(best|final).safetensors")
    print(f"  training logs       : results/logs/train/{DATASET}/<model>/seed<seed>.log")
    print(f"  learning curves     : {at(TRAIN_RUN)}/dvclive/")
    print(f"  test predictions    : {at(PREDICTIONS)}/")
    print(f"  comparison tables   : {at(TABLES)}/ (dice.md, comparison.csv, per_case.csv)")
    if FOLDS > 1:
        print(f"  cross-validation    : {at(OOF_TABLES)}/ (out-of-fold predictions of every training case)")
    print(f"  figures             : {at(FIGURES)}/")
    if WG["enabled"]:
        print(f"  checkpoint zoo      : {at(ZOO)}/ (index.csv, runs/)")
        print(f"  G.pt evaluation     : {at(WEIGHTGEN)}/evaluation/ (oneshot.csv, alignment.csv, ...)")
    print(f"  paper               : {at(PAPER)}/ (main.tex, tables/, figures/; main.pdf where TeX is installed)")
    print(f"\n  open the report     : {os.path.abspath(at(PAGE))}")
    print(f"  every dataset's page: {os.path.abspath(SITE_INDEX)}")
