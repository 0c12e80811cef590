"""Which zoo jobs a configuration asks for, and what each job reads (rules/common.smk and the benches ask here).

A job trains up to ``members_per_job`` runs of one arm (a start) at once (the zoo engine): its runs are the
arm's task x learning rate x seed combinations, in that order, cut into groups. Its folder is
``runs/<arm>/job<group>``; run files inside are ``<task>_lr<lr>_seed<seed>.safetensors|json``.
"""

from __future__ import annotations

from segzoo.errors import SegzooError

ALL = "all"

# The training options a zoo run inherits; the rest of `train` (steps, lr, ...) is the zoo's own.
INHERITED_TRAIN_KEYS = ("augment", "foreground_fraction", "workers", "bf16", "sw_batch_size")
# The weightgen keys a zoo job reads (a change reruns the zoo); G.pt, sampling and evaluation keys do not.
ZOO_KEYS = ("features", "n_conv_per_stage", "steps", "checkpoints", "batch_size", "patch_size", "val_patches",
            "parent_steps", "parent_lr")
INDEX_KEYS = ("heldout_seeds", "parents", "max_abs_weight")
ROLES = ("train", "insample", "heldout")  # what G.pt trains on; kept from it but from a start it saw; never seen


IMPORTED_INIT = "imported:"  # weightgen.init imported:<import folder>: the first parent is an imported network


def imported_start(init: str) -> str | None:
    """The import folder of ``weightgen.init: imported:<folder>``, else None."""
    return init[len(IMPORTED_INIT):] if init.startswith(IMPORTED_INIT) else None


def start_name(mode: str, k: int) -> str:
    """Start k's name: ``parent<k>`` (spawn, imported) or ``init<k>`` (shared)."""
    return f"parent{k}" if mode == "spawn" or imported_start(mode) else f"init{k}"


def start_index(name: str) -> int:
    return int(name.removeprefix("parent").removeprefix("init"))


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
    """(arm, seeds): each training start with every seed, each held-out parent with its own seeds;
    per_seed has one arm whose runs start from their own seed's init."""
    if weightgen["init"] == "per_seed":
        return [("per_seed", list(weightgen["seeds"]))]
    n, held = weightgen["parents"], weightgen["heldout_parents"]
    return ([(start_name(weightgen["init"], k), list(weightgen["seeds"])) for k in range(n)]
            + [(start_name(weightgen["init"], k), list(held["seeds"])) for k in range(n, n + held["count"])])


def members(weightgen: dict, tasks: list[str], seeds: list[int]) -> list[dict]:
    """An arm's runs: ``{"task", "lr", "seed"}`` for every task x learning rate x seed."""
    return [{"task": task, "lr": lr, "seed": seed} for task in tasks for lr in weightgen["lrs"] for seed in seeds]


def run_file(task: str, lr: float, seed: int) -> str:
    """A run's file stem inside its job folder."""
    return f"{task}_lr{lr}_seed{seed}"


def jobs(weightgen: dict, tasks: list[str]) -> list[dict]:
    """Every zoo job: ``{"arm", "group", "members", "folder"}`` (folder relative to the zoo)."""
    size, out = weightgen["members_per_job"], []
    for arm, seeds in arms(weightgen):
        runs = members(weightgen, tasks, seeds)
        for group, at in enumerate(range(0, len(runs), size)):
            out.append({"arm": arm, "group": group, "members": runs[at:at + size], "folder": f"runs/{arm}/job{group}"})
    return out


def job_members(weightgen: dict, tasks: list[str], arm: str, group: int) -> list[dict]:
    found = [j for j in jobs(weightgen, tasks) if j["arm"] == arm and j["group"] == group]
    if not found:
        raise SegzooError(f"no zoo job {arm}/job{group} in this configuration")
    return found[0]["members"]


def zoo_settings(config: dict) -> dict:
    """What zoo-start and zoo jobs read: the zoo's weightgen keys and the inherited training options."""
    weightgen = config["weightgen"]
    return {"init": weightgen["init"], "zoo": {**{k: weightgen[k] for k in ZOO_KEYS},
                                               "train": {k: config["train"][k] for k in INHERITED_TRAIN_KEYS}}}


def evaluate_settings(config: dict) -> dict:
    weightgen = config["weightgen"]
    return {**zoo_settings(config), "test_patches": weightgen["test_patches"], "audit": weightgen["audit"]}


def index_settings(config: dict) -> dict:
    return {k: config["weightgen"][k] for k in INDEX_KEYS}
