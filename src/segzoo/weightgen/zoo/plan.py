"""Which zoo starts, runs and jobs a configuration asks for (rules/common.smk and the benches ask here).

Starts (``weightgen.init``); start k is drawn from ``(config seed, k)`` (:func:`segzoo.weightgen.zoo.train.random_init`):

- ``spawn``    ``parent<k>``: init k grown on every region for ``parent_steps``. Parents 0 .. ``parents``-1 are the
               *training parents* (the generators train on their runs); the next ``heldout_parents.count`` are
               *held-out parents* (no generator sees them: the test). After them come ``fresh_inits.count`` fresh
               random inits ``init<k>``, never trained (the mission's "randomly-initialised parameters" in).
- ``shared``   every start is ``init<k>`` itself, untrained, with the same three roles by index.
- ``imported:<folder>``  as spawn, but parent 0 is the imported nnU-Net network.
- ``per_seed`` every run starts from its own seed's init ``init<seed>`` (G.pt's own protocol); held-out seeds
               are the held-out starts.

Every start has runs on every task x learning rate x seed (training parents: ``seeds``; held-out parents and fresh
inits: their own ``seeds``). All starts are written by one job (``starts/<start>.safetensors|json``); the runs are
cut, in order, into jobs of ``members_per_job`` runs trained at once by the zoo engine, whatever their start:
``runs/job<group>/<start>_<task>_lr<lr>_seed<seed>.safetensors|json``.
"""

from __future__ import annotations

from segzoo.errors import SegzooError

ALL = "all"

# The training options a zoo run inherits; the rest of `train` (steps, lr, ...) is the zoo's own.
INHERITED_TRAIN_KEYS = ("augment", "foreground_fraction", "workers", "bf16", "sw_batch_size")
# The weightgen keys a zoo job reads (a change reruns the zoo); generator and evaluation keys do not.
ZOO_KEYS = ("features", "n_conv_per_stage", "steps", "checkpoints", "budgets", "batch_size", "patch_size",
            "val_patches", "parent_steps", "parent_lr", "lrs", "plateau")
INDEX_KEYS = ("init", "heldout_seeds", "parents", "heldout_parents", "fresh_inits", "seeds", "max_abs_weight")
# train: the generators train on its runs; insample: a training start's run with a held-out seed (its start was
# seen); heldout: a held-out parent's run (never seen); fresh: a fresh random init's run (never seen, never grown)
ROLES = ("train", "insample", "heldout", "fresh")
TEST_ROLES = ("heldout", "fresh")  # starts no generator trains on


IMPORTED_INIT = "imported:"  # weightgen.init imported:<import folder>: the first parent is an imported network


def imported_start(init: str) -> str | None:
    """The import folder of ``weightgen.init: imported:<folder>``, else None."""
    return init[len(IMPORTED_INIT):] if init.startswith(IMPORTED_INIT) else None


def grows_parents(mode: str) -> bool:
    return mode == "spawn" or imported_start(mode) is not None


def start_index(name: str) -> int:
    return int(name.removeprefix("parent").removeprefix("init"))


def starts(weightgen: dict) -> list[str]:
    """Every start's name, in index order: ``parent<k>`` (grown) or ``init<k>`` (a random init itself)."""
    mode = weightgen["init"]
    if mode == "per_seed":
        return [f"init{s}" for s in weightgen["seeds"]]
    grown = weightgen["parents"] + weightgen["heldout_parents"]["count"]
    fresh = range(grown, grown + weightgen["fresh_inits"]["count"])
    if grows_parents(mode):
        return [f"parent{k}" for k in range(grown)] + [f"init{k}" for k in fresh]
    return [f"init{k}" for k in range(grown)] + [f"init{k}" for k in fresh]


def start_role(weightgen: dict, start: str) -> str:
    """What a start is to the generators: train (seen), heldout (a held-out parent) or fresh (a fresh init)."""
    k = start_index(start)
    if weightgen["init"] == "per_seed":
        return "heldout" if k in weightgen["heldout_seeds"] else "train"
    if k < weightgen["parents"]:
        return "train"
    return "heldout" if k < weightgen["parents"] + weightgen["heldout_parents"]["count"] else "fresh"


def run_role(weightgen: dict, start: str, seed: int) -> str:
    """A run's role: its start's, except a training start's run with a held-out seed (insample)."""
    role = start_role(weightgen, start)
    if role == "train" and weightgen["init"] != "per_seed" and seed in weightgen["heldout_seeds"]:
        return "insample"
    return role


def grown(weightgen: dict, start: str) -> bool:
    """Whether a start is trained before its runs (a parent; parent 0 of an import is the imported network)."""
    return start.startswith("parent") and not (imported_start(weightgen["init"]) and start_index(start) == 0)


def tasks(weightgen: dict, regions: list[str] | None) -> list[str]:
    """The zoo's tasks: as configured, or (null) every region of the dataset and ``all``."""
    return weightgen["tasks"] or [*(regions or []), ALL]


def task_regions(task: str, region_names: list[str]) -> list[int]:
    """Channel indices a task trains: one region, or every region for ``all``."""
    if task == ALL:
        return list(range(len(region_names)))
    if task not in region_names:
        raise SegzooError(f"weightgen.tasks: {task!r} is neither a region of this dataset "
                          f"({', '.join(region_names)}) nor 'all'")
    return [region_names.index(task)]


def problems(weightgen: dict, regions: list[str] | None, dataset: str) -> list[str]:
    """Values of the weightgen section that do not fit the dataset (``regions``; None: unknown) or each
    other, one line each; checked when the workflow starts, before any job runs."""
    if not weightgen["enabled"]:
        return []
    found = []
    if regions is not None:
        unknown = [t for t in tasks(weightgen, regions) if t != ALL and t not in regions]
        if unknown:
            found.append(f"weightgen.tasks: {', '.join(map(repr, unknown))} not a region of {dataset} "
                         f"(its regions: {', '.join(regions)}; or 'all'); null takes them all")
    missing = sorted(set(weightgen["heldout_seeds"]) - set(weightgen["seeds"]))
    if missing:
        found.append(f"weightgen.heldout_seeds: {missing} not in weightgen.seeds {weightgen['seeds']}")
    if not set(weightgen["seeds"]) - set(weightgen["heldout_seeds"]):
        found.append(f"weightgen.heldout_seeds: every seed of weightgen.seeds {weightgen['seeds']} is held out")
    held = weightgen["heldout_parents"]
    if weightgen["init"] != "per_seed" and held["count"] and not held["seeds"]:
        found.append("weightgen.heldout_parents.seeds: empty, but heldout_parents.count asks for held-out parents")
    if weightgen["init"] != "per_seed" and not held["count"]:
        found.append("weightgen.heldout_parents.count: 0; every one-shot network starts from a held-out parent")
    if weightgen["init"] == "per_seed" and not weightgen["heldout_seeds"]:
        found.append("weightgen.heldout_seeds: empty; under per_seed the held-out seeds are the held-out starts")
    folder = imported_start(weightgen["init"])
    if folder is not None:
        from segzoo.weightgen.zoo.imported_start import start_problems

        found += start_problems(folder, weightgen, regions)
    return found


def arms(weightgen: dict) -> list[tuple[str, list[int]]]:
    """(start, seeds): each training start with every seed, each held-out parent and fresh init with its own seeds;
    under per_seed each seed's init with that seed alone."""
    if weightgen["init"] == "per_seed":
        return [(f"init{s}", [s]) for s in weightgen["seeds"]]
    own = {"train": weightgen["seeds"], "heldout": weightgen["heldout_parents"]["seeds"],
           "fresh": weightgen["fresh_inits"]["seeds"]}
    return [(start, list(own[start_role(weightgen, start)])) for start in starts(weightgen)]


def runs(weightgen: dict, tasks: list[str]) -> list[dict]:
    """Every run ``{"start", "task", "lr", "seed"}``: per start, task x learning rate x seed."""
    return [{"start": start, "task": task, "lr": lr, "seed": seed} for start, seeds in arms(weightgen)
            for task in tasks for lr in weightgen["lrs"] for seed in seeds]


def run_file(start: str, task: str, lr: float, seed: int) -> str:
    """A run's file stem inside its job folder."""
    return f"{start}_{task}_lr{lr}_seed{seed}"


def jobs(weightgen: dict, tasks: list[str]) -> list[dict]:
    """Every zoo job ``{"group", "members", "folder"}`` (folder relative to the zoo): the runs in order, cut into
    groups of ``members_per_job``."""
    size, every = weightgen["members_per_job"], runs(weightgen, tasks)
    return [{"group": g, "members": every[at:at + size], "folder": f"runs/job{g}"}
            for g, at in enumerate(range(0, len(every), size))]


def job_members(weightgen: dict, tasks: list[str], group: int) -> list[dict]:
    found = [j for j in jobs(weightgen, tasks) if j["group"] == group]
    if not found:
        raise SegzooError(f"no zoo job job{group} in this configuration")
    return found[0]["members"]


def job_starts(weightgen: dict, tasks: list[str], group: int) -> list[str]:
    """The starts a job's runs begin at, each once, in order."""
    return list(dict.fromkeys(r["start"] for r in job_members(weightgen, tasks, group)))


def zoo_settings(config: dict) -> dict:
    """What zoo-start and zoo jobs read: the zoo's weightgen keys and the inherited training options."""
    weightgen = config["weightgen"]
    return {"init": weightgen["init"], "zoo": {**{k: weightgen[k] for k in ZOO_KEYS},
                                               "train": {k: config["train"][k] for k in INHERITED_TRAIN_KEYS}}}


def evaluate_settings(config: dict) -> dict:
    """What the evaluation reads (segzoo.weightgen.evaluation.settings.EvaluationSettings)."""
    weightgen = config["weightgen"]
    return {**zoo_settings(config), "test_patches": weightgen["test_patches"], "sample": weightgen["sample"],
            "evaluation": weightgen["evaluation"]}


def index_settings(config: dict) -> dict:
    return {k: config["weightgen"][k] for k in INDEX_KEYS}
