"""Experiment tracking beside dvclive (segzoo.tracking): real short trainings logged to W&B offline and to a local
MLflow store, read back with W&B's own reader (``wandb leet inspect``) and MLflow's client; bad URIs and unwritable
folders as one error line; failures that leave no checkpoint; unchanged checkpoint bytes.

They need the segzoo[tracking] extra: they skip, saying why, when it is not installed, and fail under CI=true
(where .ci/run installs it).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from segzoo.cli import main
from segzoo.config import load_config
from segzoo.errors import SegzooError
from segzoo.train.loop import Run, train
from segzoo.weightgen.gpt.train import train_gpt
from segzoo.weightgen.zoo.runs import load_zoo, write_index
from segzoo.weightgen.zoo.train import train_zoo_job

from conftest import REPO, prepared_phantom
from zoo_helpers import ci_settings, index_settings, starts

CI = load_config(REPO / "config.yaml", REPO / "presets" / "ci.yaml",
                 schema_path=REPO / "schemas" / "config.schema.yaml")
SETTINGS = {k: v for k, v in CI["train"].items() if k not in ("models", "seeds", "threads", "gpus_per_job")}
OUTPUTS = ("final.safetensors", "final.json", "best.safetensors", "best.json", "metrics.json")


@pytest.fixture(scope="module", autouse=True)
def extra():
    missing = [name for name in ("wandb", "mlflow") if importlib.util.find_spec(name) is None]
    if missing and os.environ.get("CI") == "true":
        pytest.fail(f"{', '.join(missing)} missing under CI=true: .ci/run installs the segzoo[tracking] extra")
    for name in missing:
        pytest.importorskip(name, reason="the segzoo[tracking] extra is not installed (pip install -e '.[tracking]')")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepared_phantom(tmp_path_factory.mktemp("data"), seed=4, lesion_free_fraction=0)


def _run(prepared, out: Path, tracking: dict | None = None, **fields) -> Run:
    pre, splits = prepared
    return Run(preprocessed=pre, splits=splits, model="unet3plus", model_options=CI["models"]["unet3plus"], seed=0,
               out=out, settings=SETTINGS, progress=False, tracking=tracking, **fields)


def _mlflow_runs(store: Path) -> list:
    from mlflow.tracking import MlflowClient

    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # the file store: see segzoo.tracking._Mlflow
    client = MlflowClient(store.resolve().as_uri())
    return client, client.search_runs([client.get_experiment_by_name("segzoo").experiment_id])


def _wandb_read(log: Path, *options: str):
    """W&B's own reader of an offline run's transaction log, without network."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_ERROR_REPORTING": "false"}
    out = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", *options, str(log)],
                         capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(out) if options else [json.loads(line) for line in out.splitlines()]


@pytest.fixture(scope="module")
def tracked(prepared, tmp_path_factory):
    """One training logged to W&B offline and a local MLflow store."""
    root = tmp_path_factory.mktemp("tracked")
    metrics = train(_run(prepared, root / "run", {"wandb": "offline", "mlflow": "local", "dir": str(root / "t")}))
    return root, metrics


def test_training_logs_settings_curves_and_checkpoint_to_mlflow(tracked):
    root, metrics = tracked
    client, runs = _mlflow_runs(root / "t" / "mlruns")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_name == "D/unet3plus/seed0" and run.info.status == "FINISHED"
    assert run.data.tags["segzoo.kind"] == "train"
    params = run.data.params
    assert params["model"] == "unet3plus" and params["seed"] == "0" and params["dataset"] == "D"
    assert params["train.lr"] == str(SETTINGS["lr"])
    assert params["model_options.base"] == str(CI["models"]["unet3plus"]["base"])
    steps, every = SETTINGS["steps"], SETTINGS["val_every"]
    loss = client.get_metric_history(run.info.run_id, "train/loss")
    assert sorted(m.step for m in loss) == list(range(1, steps + 1))  # every step's loss
    # dvclive keeps the mean loss of each validation window: the same numbers
    curve = pd.read_csv(root / "run" / "dvclive" / "plots" / "metrics" / "train" / "loss.tsv", sep="\t")
    per_step = {m.step: m.value for m in loss}
    for row in curve.itertuples():
        window = [per_step[s] for s in range(row.step - every + 1, row.step + 1)]
        assert sum(window) / len(window) == pytest.approx(row.loss, rel=1e-6)
    dice = client.get_metric_history(run.info.run_id, "val/dice")
    dvclive_dice = pd.read_csv(root / "run" / "dvclive" / "plots" / "metrics" / "val" / "dice.tsv", sep="\t")
    assert {m.step: m.value for m in dice} == pytest.approx(dict(zip(dvclive_dice["step"], dvclive_dice["dice"])))
    assert {f"val/dice_{r}" for r in ("canal", "sc", "lesion")} <= set(run.data.metrics)
    assert run.data.metrics["best_val_dice"] == pytest.approx(metrics["best_val_dice"])
    assert run.data.metrics["seconds"] > 0 and "time/seconds" in run.data.metrics
    checkpoint = Path(run.data.tags["checkpoint"])
    assert checkpoint == (root / "run" / "final.safetensors").resolve() and checkpoint.is_file()


def test_training_logs_to_a_wandb_offline_run(tracked):
    root, metrics = tracked
    logs = list((root / "t" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(logs) == 1
    records = _wandb_read(logs[0])
    (started,) = [r["run"] for r in records if r["type"] == "run"]
    assert started["display_name"] == "D/unet3plus/seed0" and started["job_type"] == "train"
    config = started["config"]["update"]
    assert config["train"]["lr"] == SETTINGS["lr"] and config["model"] == "unet3plus" and config["seed"] == 0
    history = [r["history"]["item"] for r in records if r["type"] == "history"]
    losses = {h["_step"]: h["train/loss"] for h in history if "train/loss" in h}
    assert sorted(losses) == list(range(1, SETTINGS["steps"] + 1))
    client, (run,) = _mlflow_runs(root / "t" / "mlruns")  # the same numbers went to both trackers
    assert losses == pytest.approx({m.step: m.value for m in client.get_metric_history(run.info.run_id,
                                                                                        "train/loss")})
    assert [h["_step"] for h in history if "val/dice" in h] == list(range(SETTINGS["val_every"], SETTINGS["steps"] + 1,
                                                                          SETTINGS["val_every"]))
    summary = _wandb_read(logs[0], "--summary")
    assert summary["exit_code"] == 0 and summary["state"] == "finished"
    assert summary["summary"]["best_val_dice"] == pytest.approx(metrics["best_val_dice"])
    assert summary["summary"]["checkpoint"] == str((root / "run" / "final.safetensors").resolve())


def test_tracking_changes_no_checkpoint_byte(prepared, tracked, tmp_path):
    root, metrics = tracked
    assert train(_run(prepared, tmp_path / "off")) == metrics
    for name in OUTPUTS:
        assert (tmp_path / "off" / name).read_bytes() == (root / "run" / name).read_bytes(), name


@pytest.mark.parametrize("tracking, problem", [
    ({"mlflow": "nonsense://nowhere"}, r"tracking \(mlflow\): .*'nonsense://nowhere'.*schemes"),
    ({"wandb": "offline", "dir": "{blocker}/tracking"}, r"tracking \(wandb\): .*cannot write to .*blocker/tracking"),
], ids=["bad-mlflow-uri", "unwritable-wandb-folder"])
def test_a_tracker_that_cannot_start_is_one_error_line_and_trains_nothing(prepared, tmp_path, capsys, tracking,
                                                                           problem):
    pre, splits = prepared
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    tracking = {k: v.format(blocker=blocker) for k, v in tracking.items()}
    settings = json.dumps({"train": SETTINGS, "model": CI["models"]["unet3plus"]})
    code = main(["train", "--data", str(pre.folder), "--splits", str(splits), "--model", "unet3plus", "--seed", "0",
                 "--out", str(tmp_path / "run"), "--settings", settings, "--device", "cpu", "--no-progress",
                 "--tracking", json.dumps(tracking)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert re.search(problem, err[0]), err[0]
    assert not any((tmp_path / "run" / name).exists() for name in OUTPUTS)


def test_a_run_whose_wandb_log_is_lost_fails_and_keeps_no_checkpoint(prepared, tmp_path):
    """The offline run's folder vanishes while it trains (as a full disk loses records, which W&B only logs):
    the check after the run finds it, the run fails and its checkpoints go; its state stays for a rerun."""
    folder = tmp_path / "t" / "wandb"

    def lose_the_log(step, model, loss):
        if step == SETTINGS["steps"]:
            shutil.rmtree(next(folder.glob("offline-run-*")))

    with pytest.raises(SegzooError, match=r"tracking \(wandb\): finishing the run failed: .*run-.*\.wandb"):
        train(_run(prepared, tmp_path / "run", {"wandb": "offline", "dir": str(tmp_path / "t")},
                   observer=lose_the_log))
    assert not any((tmp_path / "run" / name).exists() for name in OUTPUTS)
    assert (tmp_path / "run" / "state" / "last.safetensors").is_file()


def test_zoo_runs_and_gpt_training_log_to_mlflow(prepared, tmp_path):
    pre, splits = prepared
    wg = CI["weightgen"]
    settings = ci_settings()
    tracking = {"mlflow": "local", "dir": str(tmp_path / "t")}
    job = tmp_path / "zoo" / "runs" / "job0"
    folder = starts(pre, splits, settings, ["init0"], tmp_path / "zoo" / "starts", mode="shared")
    (zoo_run,) = train_zoo_job(pre, splits, [{"start": "init0", "task": "all", "lr": 0.02, "seed": 0}], folder,
                               settings=settings, out=job, device="cpu", threads=1, data_seed=0, tracking=tracking)
    write_index([job], tmp_path / "zoo" / "index.csv", tmp_path / "zoo" / "zoo.json",
                index_settings(init="shared", parents=1), ["all"])
    gpt = {**wg["gpt"], "steps": 130}
    train_gpt(load_zoo(tmp_path / "zoo" / "index.csv"), gpt, 0, tmp_path / "gpt", tracking=tracking, dataset="D")
    client, runs = _mlflow_runs(tmp_path / "t" / "mlruns")
    by_name = {r.info.run_name: r for r in runs}
    assert set(by_name) == {"D/all/lr0.02/seed0/init0", "D/gpt/seed0"}
    zoo, gpt_run = by_name["D/all/lr0.02/seed0/init0"], by_name["D/gpt/seed0"]
    assert zoo.data.tags["segzoo.kind"] == "zoo" and zoo.data.params["zoo.steps"] == str(wg["steps"])
    history = client.get_metric_history(zoo.info.run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(1, wg["steps"] + 1))
    dice = client.get_metric_history(zoo.info.run_id, "val/dice_sc")
    assert sorted(m.step for m in dice) == zoo_run["checkpoints"]["step"]
    assert Path(zoo.data.tags["checkpoint"]) == (job / "init0_all_lr0.02_seed0.safetensors").resolve() and job.is_dir()
    curve = pd.read_csv(tmp_path / "gpt_loss.csv")
    losses = {m.step: m.value for m in client.get_metric_history(gpt_run.info.run_id, "train/loss")}
    assert losses == pytest.approx(dict(zip(curve["step"], curve["loss"])), rel=1e-5)  # flushed at 100 and 130
    assert Path(gpt_run.data.tags["checkpoint"]) == (tmp_path / "gpt.safetensors").resolve()
    assert gpt_run.data.metrics["final_loss"] > 0 and gpt_run.info.status == "FINISHED"
