"""Experiment tracking beside dvclive: Weights & Biases and MLflow, each optional (config ``tracking:``).

The three training loops (``segzoo train``, ``segzoo zoo``, ``segzoo gpt-train``) log through one interface::

    with tracker(config, "Dataset001/unet3plus/seed0", settings, kind="train", group="Dataset001") as track:
        track.log_metrics(step, {"train/loss": 0.41})     # curves: per-step loss, validation metrics, timings
        track.log_summary({"best_val_dice": 0.93})       # end values (MLflow: numbers as metrics, text as tags)
        track.log_checkpoint(path)                       # the final checkpoint's path (W&B summary, MLflow tag)
        track.finish()                                   # optional: end the runs now, so a failure comes first

``config`` is ``{"wandb": off|offline|online, "mlflow": off|local|<tracking URI>, "dir": <folder>}`` (the rules
pass it as ``--tracking JSON``; ``dir`` defaults to ``results/tracking``). With both off ``tracker`` yields a
no-op and imports nothing; wandb and mlflow are imported only when asked for (the ``segzoo[tracking]`` extra).

- W&B ``offline`` writes ``<dir>/wandb/offline-run-*`` (``wandb sync`` uploads them later): no account, no
  network (W&B's own telemetry and error reporting are off too), no console capture, no system-stats sampling.
  As W&B writes from a separate process and does not report write errors, a finished offline run is read back
  with W&B's own reader (``wandb leet inspect``): a run whose log lacks its exit record or its last step fails.
- MLflow ``local`` is MLflow's file store at ``<dir>/mlruns``; any other value is a tracking URI (a path, ``file:``,
  ``sqlite:``, ``http(s):``, ...).
- Turning tracking on changes no weights: every call into wandb or mlflow runs with the python, numpy and torch
  random states saved and restored, so neither can consume the seeded generators.
- A tracking failure (a bad URI, an unwritable folder, a full disk) is a SegzooError naming the tracker and the
  problem: the CLI prints one line and exits 1. The loops then leave no checkpoint of that run behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import numbers
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from segzoo.errors import SegzooError

DEFAULT_DIR = "results/tracking"
PROJECT = "segzoo"  # the W&B project and the MLflow experiment every run goes to
WANDB_MODES = ("off", "offline", "online")
_PARAM_LENGTH = 6000  # MLflow's longest parameter value
_PARAMS_PER_BATCH = 100  # MLflow's most parameters per log_batch


def parse_tracking(text: str | None) -> dict | None:
    """``--tracking`` JSON -> a checked config (None: tracking off)."""
    if text is None:
        return None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise SegzooError(f"--tracking: not JSON ({e})") from None
    return checked(config, "--tracking")


def checked(config: dict | None, where: str = "tracking") -> dict | None:
    """``config`` with its defaults filled in, or None when both trackers are off. YAML reads an unquoted ``off``
    as false: both mean off."""
    if config is None:
        return None
    if not isinstance(config, dict):
        raise SegzooError(f"{where}: expected an object with wandb, mlflow and dir, got {config!r}")
    unknown = sorted(set(config) - {"wandb", "mlflow", "dir"})
    if unknown:
        raise SegzooError(f"{where}: unknown key(s) {', '.join(unknown)} (known: wandb, mlflow, dir)")
    wandb = config.get("wandb", "off")
    wandb = "off" if wandb is False else wandb
    mlflow = config.get("mlflow", "off")
    mlflow = "off" if mlflow is False else mlflow
    if wandb not in WANDB_MODES:
        raise SegzooError(f"{where}.wandb: {wandb!r} is not one of {', '.join(WANDB_MODES)}")
    if not isinstance(mlflow, str) or not mlflow.strip():
        raise SegzooError(f"{where}.mlflow: {mlflow!r} is neither off, local nor a tracking URI")
    folder = config.get("dir", DEFAULT_DIR)
    if not isinstance(folder, str) or not folder:
        raise SegzooError(f"{where}.dir: {folder!r} is not a folder name")
    if wandb == "off" and mlflow == "off":
        return None
    return {"wandb": wandb, "mlflow": mlflow, "dir": folder}


def mlflow_uri(value: str, folder: str | os.PathLike) -> str:
    """The MLflow tracking URI for a config value: ``local`` is the file store ``<folder>/mlruns``; a path
    without a scheme is a file store there; anything else is used as it is."""
    if value == "local":
        return (Path(folder) / "mlruns").resolve().as_uri()
    if "://" not in value and not value.startswith(("file:", "sqlite:")):
        return Path(value).resolve().as_uri()
    return value


class Tracker:
    """The runs one training run logs to (none when tracking is off: every method is a no-op)."""

    def __init__(self, backends: list | None = None):
        self._backends = backends or []
        self._finished = False

    @property
    def enabled(self) -> bool:
        return bool(self._backends)

    def log_metrics(self, step: int, values: dict) -> None:
        if not self._backends:  # called every step: nothing to do when tracking is off
            return
        values = {k: float(v) for k, v in _flat(values).items() if _is_number(v)}
        if values:
            self._each("logging metrics", lambda b: b.log_metrics(int(step), values))

    def log_summary(self, values: dict) -> None:
        values = {k: v for k, v in _flat(values).items() if v is not None}
        if values:
            self._each("logging the summary", lambda b: b.log_summary(values))

    def log_checkpoint(self, path: str | os.PathLike) -> None:
        path = str(Path(path).resolve())
        self._each("logging the checkpoint path", lambda b: b.log_checkpoint(path))

    def finish(self) -> None:
        """End every run as finished (W&B offline: and check what it wrote); idempotent."""
        if self._finished:
            return
        self._finished = True
        self._each("finishing the run", lambda b: b.finish(ok=True))

    def _abort(self) -> None:
        """End every run as failed, quietly: another error is already on its way."""
        if self._finished:
            return
        self._finished = True
        for backend in self._backends:
            with contextlib.suppress(Exception), _rng_kept():
                backend.finish(ok=False)

    def _each(self, action: str, call) -> None:
        for backend in self._backends:
            _guarded(backend.label, action, lambda: call(backend))


NO_TRACKING = Tracker()


@contextlib.contextmanager
def tracker(config: dict | None, name: str, settings: dict, *, kind: str, group: str = "") -> Iterator[Tracker]:
    """Open a run named ``name`` in each enabled tracker, holding ``settings`` (flattened into MLflow params,
    W&B config); on leaving, finish them (or, on an error, mark them failed and let the error through)."""
    config = checked(config)
    if config is None:
        yield NO_TRACKING
        return
    tags = {"segzoo.kind": kind, "segzoo.group": group}
    settings = json.loads(json.dumps(settings, default=str))  # paths and the like as text
    backends = []
    if config["wandb"] != "off":
        backends.append(_Wandb(config["wandb"], Path(config["dir"])))
    if config["mlflow"] != "off":
        backends.append(_Mlflow(mlflow_uri(config["mlflow"], config["dir"])))
    track = Tracker()
    try:
        for backend in backends:
            _guarded(backend.label, "opening a run", lambda: backend.open(name, settings, kind, group, tags))
            track._backends.append(backend)
        yield track
    except BaseException:
        track._abort()
        raise
    track.finish()


class _Wandb:
    label = "wandb"

    def __init__(self, mode: str, folder: Path):
        self.mode, self.folder = mode, folder
        self.run, self.last_step = None, None

    def open(self, name: str, settings: dict, kind: str, group: str, tags: dict) -> None:
        _writable(self.folder)  # W&B itself would quietly fall back to a temporary folder
        if self.mode == "offline":
            # The process-wide W&B settings, not only this run's: W&B's own telemetry and error reports follow them.
            os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_ERROR_REPORTING="false")
            os.environ.setdefault("WANDB_CACHE_DIR", str((self.folder / "wandb" / "cache").resolve()))  # its debug log
        import wandb

        options = wandb.Settings(mode=self.mode, silent=True, console="off", x_disable_stats=True,
                                 x_disable_meta=True, x_disable_machine_info=True, disable_git=True,
                                 disable_code=True, save_code=False, disable_job_creation=True)
        if self.mode == "offline":
            wandb.setup(settings=options)
        self.run = wandb.init(project=PROJECT, name=name, group=group or None, job_type=kind, config=settings,
                              tags=[v[:64] for v in tags.values() if v], dir=str(self.folder), settings=options,
                              reinit="create_new")

    def log_metrics(self, step: int, values: dict) -> None:
        self.run.log(values, step=step)
        self.last_step = step

    def log_summary(self, values: dict) -> None:
        self.run.summary.update(values)

    def log_checkpoint(self, path: str) -> None:
        self.run.summary["checkpoint"] = path

    def finish(self, ok: bool) -> None:
        run, self.run = self.run, None
        if run is None:
            return
        run.finish(exit_code=0 if ok else 1)
        if ok and self.mode == "offline":
            self._check(Path(run.dir).parent / f"run-{run.id}.wandb")

    def _check(self, log: Path) -> None:
        """Read the offline run back with W&B's reader: it must hold the exit record and the last step."""
        env = {**os.environ, "WANDB_MODE": "offline", "WANDB_ERROR_REPORTING": "false", "WANDB_SILENT": "true"}
        read = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--summary", "--json", str(log)],
                              capture_output=True, text=True, env=env, timeout=120)
        try:
            info = json.loads(read.stdout)
        except json.JSONDecodeError:
            detail = (read.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"could not read back {log} ({detail})") from None
        if info.get("exit_code") != 0 or (self.last_step is not None and info.get("step") != self.last_step):
            raise RuntimeError(f"{log} is incomplete (state {info.get('state')}, last step {info.get('step')} of "
                               f"{self.last_step}): W&B could not write all of it, e.g. the disk is full")


class _Mlflow:
    label = "mlflow"
    # The local store is MLflow's file store, one folder per run, because two Snakemake jobs may log at the same
    # time: each run writes only its own files, so concurrent writers never contend. SQLite (MLflow's suggested
    # default) serialises every write on one database lock ("database is locked" under load) and races when several
    # processes create or migrate the schema at once. MLflow 3.13+ keeps the file store in maintenance mode and
    # refuses it unless MLFLOW_ALLOW_FILE_STORE=true, set here for file: URIs; the one race left, two processes
    # creating the experiment at once, runs under a file lock beside the store (also taken for sqlite: stores).

    def __init__(self, uri: str):
        self.uri = uri
        self.client, self.run_id, self.last_step = None, None, 0

    def open(self, name: str, settings: dict, kind: str, group: str, tags: dict) -> None:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # MLflow's usage reports would use the network
        if self.uri.startswith("file:"):
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        with _store_lock(self.uri), _fail_fast(self.uri):
            try:
                self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
                experiment = self.client.get_experiment_by_name(PROJECT)
                experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(PROJECT)
            except Exception as e:
                schemes = re.search(r"Supported URI schemes are: (\[[^\]]*\])", str(e))
                why = f"MLflow supports the schemes {schemes.group(1)}" if schemes else _line(e)
                raise RuntimeError(f"cannot use tracking URI {self.uri!r} ({why})") from None
        run = self.client.create_run(experiment_id, run_name=name,
                                     tags={**{k: v for k, v in tags.items() if v}, "mlflow.runName": name})
        self.run_id = run.info.run_id
        params = [Param(k, str(v)[:_PARAM_LENGTH]) for k, v in _flat(settings).items()]
        for i in range(0, len(params), _PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=params[i:i + _PARAMS_PER_BATCH])

    def log_metrics(self, step: int, values: dict) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])
        self.last_step = max(self.last_step, step)

    def log_summary(self, values: dict) -> None:
        numbers = {k: float(v) for k, v in values.items() if _is_number(v)}
        if numbers:
            self.log_metrics(self.last_step, numbers)
        for key, value in values.items():
            if key not in numbers:
                self.client.set_tag(self.run_id, key, str(value)[:_PARAM_LENGTH])

    def log_checkpoint(self, path: str) -> None:
        self.client.set_tag(self.run_id, "checkpoint", path)

    def finish(self, ok: bool) -> None:
        run_id, self.run_id = self.run_id, None
        if run_id is not None:
            self.client.set_terminated(run_id, "FINISHED" if ok else "FAILED")


def _guarded(label: str, action: str, call) -> None:
    """Run ``call`` with the random states kept; any failure becomes one line naming the tracker."""
    try:
        with _rng_kept():
            call()
    except SegzooError:
        raise
    except Exception as e:
        raise SegzooError(f"tracking ({label}): {action} failed: {_line(e)}") from None


@contextlib.contextmanager
def _rng_kept():
    """Save and restore the python, numpy and torch random states around a call into a tracker."""
    import random

    numpy, torch = sys.modules.get("numpy"), sys.modules.get("torch")
    python_state = random.getstate()
    numpy_state = numpy.random.get_state() if numpy is not None else None
    torch_state = torch.get_rng_state() if torch is not None else None
    cuda_state = torch.cuda.get_rng_state_all() if torch is not None and torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        random.setstate(python_state)
        if numpy_state is not None:
            numpy.random.set_state(numpy_state)
        if torch_state is not None:
            torch.set_rng_state(torch_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state_all(cuda_state)


def _writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".segzoo-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise RuntimeError(f"cannot write to {folder} ({e.strerror or e})") from None


@contextlib.contextmanager
def _store_lock(uri: str):
    """An exclusive lock beside a local store (file: folder, sqlite: database), for the experiment's creation."""
    if uri.startswith("file:"):
        from urllib.parse import unquote, urlparse

        store = Path(unquote(urlparse(uri).path))
    elif uri.startswith("sqlite:///"):
        store = Path(uri.removeprefix("sqlite:///"))
    else:
        yield
        return
    store.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{store}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes (or the process dies)
        yield


@contextlib.contextmanager
def _fail_fast(uri: str):
    """While a run opens, an unreachable tracking server fails at once, not after MLflow's minutes of retries."""
    if not uri.startswith(("http:", "https:")):
        yield
        return
    keys = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _flat(values: dict, prefix: str = "") -> dict:
    """Nested dicts as dotted keys: {"train": {"lr": 0.1}} -> {"train.lr": 0.1}."""
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)  # numpy scalars included


def _line(error: BaseException) -> str:
    """An exception as one short line."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."

