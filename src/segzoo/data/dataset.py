"""Reading a raw dataset in the nnU-Net v2 or Medical Segmentation Decathlon layout.

Both layouts become one :class:`RawDataset`: its channels, its regions (the tasks the models
predict, one sigmoid channel each), the label values it declares, and its cases with their files.
Reading only looks at ``dataset.json`` and file names; :mod:`segzoo.data.verify` opens the images.

nnU-Net v2::

    Dataset001_Name/dataset.json   {"channel_names": {"0": "T2"}, "labels": {"background": 0, "sc": [2, 3], ...},
                                    "numTraining": 24, "file_ending": ".nii.gz"}
    Dataset001_Name/imagesTr/<case>_0000.nii.gz   (one file per channel)
    Dataset001_Name/labelsTr/<case>.nii.gz
    Dataset001_Name/imagesTs/, labelsTs/          (optional: the test set)

Decathlon::

    TaskNN_Name/dataset.json  {"modality": {"0": "MRI"}, "labels": {"0": "background", "1": "..."},
                               "numTraining": 32, "training": [{"image": "./imagesTr/x.nii.gz",
                               "label": "./labelsTr/x.nii.gz"}], "test": ["./imagesTs/y.nii.gz"]}

Decathlon images hold all channels in one file (channels last when there are several).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from segzoo.errors import SegzooError
from segzoo.io import read_json

NNUNET_KEYS = {"channel_names": dict, "labels": dict, "numTraining": int, "file_ending": str}
MSD_KEYS = {"modality": dict, "labels": dict, "numTraining": int, "training": list}


@dataclass(frozen=True)
class Case:
    """One case: its image file(s) (one per channel, or one multi-channel file) and its label, if any."""

    id: str
    images: tuple[Path, ...]
    label: Path | None
    test: bool = False  # from imagesTs/labelsTs


@dataclass
class RawDataset:
    root: Path
    layout: str  # "nnunet" or "msd"
    channels: list[str]
    regions: dict[str, list[int]]  # task name -> label values it covers
    label_values: set[int]  # every value a label map may hold (0 included)
    file_ending: str
    ignore_label: int | None = None  # nnU-Net's "ignore" value: not a region (recorded; training does not mask it)
    cases: list[Case] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # layout problems found while reading

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def training(self) -> list[Case]:
        return [c for c in self.cases if not c.test]

    @property
    def test(self) -> list[Case]:
        return [c for c in self.cases if c.test]


def read_dataset(root: str | Path) -> RawDataset:
    """Read ``root``'s ``dataset.json`` and list its cases.

    Raises :class:`SegzooError` when nothing sensible can be read (no folder, no or bad ``dataset.json``).
    Problems with individual cases (a missing channel or label, a stray file) are collected in
    ``problems`` so that verification can report them all at once.
    """
    root = Path(root)
    if not root.is_dir():
        raise SegzooError(f"{root}: not a directory")
    json_path = root / "dataset.json"
    dataset_json = read_json(json_path)
    if not isinstance(dataset_json, dict):
        raise SegzooError(f"{json_path}: must hold a JSON object, found {type(dataset_json).__name__}")
    if "training" in dataset_json or "modality" in dataset_json:
        return _read_msd(root, json_path, dataset_json)
    return _read_nnunet(root, json_path, dataset_json)


def _check_keys(json_path: Path, dataset_json: dict, required: dict[str, type]) -> None:
    problems = []
    for key, kind in required.items():
        if key not in dataset_json:
            problems.append(f"{json_path}: missing key '{key}'")
        elif not isinstance(dataset_json[key], kind) or (kind is int and isinstance(dataset_json[key], bool)):
            found = type(dataset_json[key]).__name__
            problems.append(f"{json_path}: key '{key}' must be {kind.__name__}, found {found}")
    if problems:
        raise SegzooError(problems)


def _parse_nnunet_labels(json_path: Path, dataset_json: dict) -> tuple[dict[str, list[int]], set[int], int | None]:
    """nnU-Net ``labels``: name -> int (a class) or list of ints (a region), as nnU-Net v2 checks them.

    ``background`` is 0; values are consecutive; regions (lists) need ``regions_class_order``; an
    ``ignore`` label must hold the highest value and is not a region.
    """
    labels = dataset_json["labels"]
    problems, regions, values = [], {}, {0}
    if labels.get("background") != 0:
        problems.append(f"{json_path}: 'labels' must map 'background' to 0")
    for name, value in labels.items():
        members = value if isinstance(value, list) else [value]
        if not members or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in members):
            problems.append(f"{json_path}: label '{name}' must be a non-negative integer or a list of them, "
                            f"found {value!r}")
            continue
        values.update(members)
        if name not in ("background", "ignore"):
            regions[name] = sorted(members)
    ignore = labels.get("ignore")
    if ignore is not None and (not isinstance(ignore, int) or ignore != max(values)):
        problems.append(f"{json_path}: the 'ignore' label must be one integer, the highest label value")
    uses_regions = any(isinstance(v, list) for v in labels.values())
    if uses_regions and not isinstance(dataset_json.get("regions_class_order"), list):
        problems.append(f"{json_path}: 'labels' uses regions (lists) but 'regions_class_order' is missing")
    if not regions:
        problems.append(f"{json_path}: 'labels' declares no foreground label")
    problems += _consecutive(json_path, values - {ignore})
    if problems:
        raise SegzooError(problems)
    return regions, values, ignore


def _consecutive(json_path: Path, values: set[int]) -> list[str]:
    missing = sorted(set(range(max(values) + 1)) - values) if values else []
    if missing:
        return [f"{json_path}: label values must be consecutive from 0 (nnU-Net's rule); missing {missing}"]
    return []


def _read_nnunet(root: Path, json_path: Path, dataset_json: dict) -> RawDataset:
    _check_keys(json_path, dataset_json, NNUNET_KEYS)
    channels = _channels(json_path, dataset_json, "channel_names")
    ending = dataset_json["file_ending"]
    if not ending.startswith("."):
        raise SegzooError(f"{json_path}: 'file_ending' must start with '.', found {ending!r}")
    regions, values, ignore = _parse_nnunet_labels(json_path, dataset_json)
    ds = RawDataset(root, "nnunet", channels, regions, values, ending, ignore)
    for images_dir, labels_dir, test in (("imagesTr", "labelsTr", False), ("imagesTs", "labelsTs", True)):
        _list_nnunet_cases(ds, root / images_dir, root / labels_dir, test)
    if not ds.training and not ds.problems:
        ds.problems.append(f"{root / 'imagesTr'}: no training images ending in {ending}")
    if dataset_json["numTraining"] != len(ds.training):
        ds.problems.append(f"{json_path}: 'numTraining' is {dataset_json['numTraining']} but imagesTr holds "
                           f"{len(ds.training)} cases")
    return ds


def named_channels(json_path: str | Path) -> list[str] | None:
    """The channel names of a dataset.json in file-index order (nnU-Net's ``channel_names`` or the Decathlon's
    ``modality``); None where it names no channels at all."""
    json_path = Path(json_path)
    dataset_json = read_json(json_path)
    key = next((k for k in ("channel_names", "modality") if isinstance(dataset_json, dict) and k in dataset_json), None)
    return None if key is None else _channels(json_path, dataset_json, key)


def channel_order_problem(model_channels: list[str], model_source: str, dataset_channels: list[str],
                          dataset_source: str) -> str | None:
    """A line saying that a model was trained on other channels, or in another order, than a dataset names (channels
    go by file index, ``_0000`` first, so the model would read one channel as another); None when they agree."""
    if list(model_channels) == list(dataset_channels):
        return None
    return (f"{dataset_source}: names the channels {list(dataset_channels)} (by file index, _0000 first); "
            f"{model_source} was trained on {list(model_channels)}: it would read one channel as another. Give the "
            "images in the model's channel order (and a dataset.json that names them so)")


def _channels(json_path: Path, dataset_json: dict, key: str) -> list[str]:
    """Channel names in index order from ``dataset_json[key]`` ({"0": "T2", "1": "T1"})."""
    mapping = dataset_json[key]
    if not mapping:
        raise SegzooError(f"{json_path}: '{key}' is empty")
    bad = [k for k in mapping if not str(k).isdigit()]
    if bad:
        raise SegzooError(f"{json_path}: '{key}' keys must be channel indices '0', '1', ..., found {bad[0]!r}")
    return [mapping[k] for k in sorted(mapping, key=int)]


def _list_nnunet_cases(ds: RawDataset, images_dir: Path, labels_dir: Path, test: bool) -> None:
    ending, n_channels = ds.file_ending, len(ds.channels)
    if not images_dir.is_dir():
        if not test:
            ds.problems.append(f"{images_dir}: missing folder")
        return
    pattern = re.compile(rf"^(?P<case>.+)_(?P<channel>\d{{4}}){re.escape(ending)}$")
    found: dict[str, set[int]] = {}
    for f in sorted(images_dir.iterdir()):
        if f.name.startswith(".") or not f.name.endswith(ending):
            continue
        m = pattern.match(f.name)
        if not m:
            ds.problems.append(f"{f}: image name must be <case>_<4-digit channel>{ending}")
            continue
        found.setdefault(m["case"], set()).add(int(m["channel"]))
    for case, chans in found.items():
        for extra in sorted(chans - set(range(n_channels))):
            ds.problems.append(f"{images_dir / f'{case}_{extra:04d}{ending}'}: channel {extra} is not declared "
                               f"in dataset.json (channels 0..{n_channels - 1})")
        missing = [c for c in range(n_channels) if c not in chans]
        for c in missing:
            ds.problems.append(f"{images_dir / f'{case}_{c:04d}{ending}'}: missing image channel {c} "
                               f"({ds.channels[c]}) of case {case}")
        if case in {c.id for c in ds.cases}:
            ds.problems.append(f"{images_dir / f'{case}_0000{ending}'}: case id {case} is also used in "
                               f"imagesTr; case ids must be unique")
            continue
        label = labels_dir / f"{case}{ending}"
        if not label.is_file():
            if not test or labels_dir.is_dir():
                ds.problems.append(f"{label}: missing label for case {case}")
            label = None
        if not missing:
            images = tuple(images_dir / f"{case}_{c:04d}{ending}" for c in range(n_channels))
            ds.cases.append(Case(case, images, label, test))
    if labels_dir.is_dir():
        for f in sorted(labels_dir.iterdir()):
            if f.name.endswith(ending) and f.name[: -len(ending)] not in found:
                ds.problems.append(f"{f}: label has no image in {images_dir.name}")


def _read_msd(root: Path, json_path: Path, dataset_json: dict) -> RawDataset:
    _check_keys(json_path, dataset_json, MSD_KEYS)
    channels = _channels(json_path, dataset_json, "modality")
    labels = dataset_json["labels"]
    if not all(str(k).isdigit() for k in labels):
        raise SegzooError(f"{json_path}: Decathlon 'labels' keys must be label values '0', '1', ..., "
                          f"found {sorted(labels)}")
    values = {int(k) for k in labels} | {0}
    regions = {str(name): [int(k)] for k, name in labels.items() if int(k) != 0}
    problems = _consecutive(json_path, values)
    if not regions:
        problems.append(f"{json_path}: 'labels' declares no foreground label")
    if not isinstance(dataset_json.get("test", []), list):
        problems.append(f"{json_path}: key 'test' must be list, found {type(dataset_json['test']).__name__}")
    if problems:
        raise SegzooError(problems)
    ds = RawDataset(root, "msd", channels, regions, values, ".nii.gz")
    for i, entry in enumerate(dataset_json["training"]):
        if not (isinstance(entry, dict) and all(isinstance(entry.get(k), str) for k in ("image", "label"))):
            ds.problems.append(f"{json_path}: training[{i}] must be an object with 'image' and 'label' paths")
            continue
        image, label = root / entry["image"], root / entry["label"]
        case = _strip_ending(image.name)
        ok = case not in {c.id for c in ds.cases}
        if not ok:
            ds.problems.append(f"{json_path}: training[{i}] repeats case {case}; case ids must be unique")
        for path, what in ((image, "image"), (label, "label")):
            if not path.is_file():
                ds.problems.append(f"{path}: missing {what} listed in dataset.json training[{i}]")
                ok = False
        if ok:
            ds.cases.append(Case(case, (image,), label))
    for i, entry in enumerate(dataset_json.get("test", [])):
        image = root / entry if isinstance(entry, str) else None
        if image is None or not image.is_file():
            ds.problems.append(f"{json_path}: test[{i}] does not name an existing image ({entry!r})")
            continue
        if _strip_ending(image.name) in {c.id for c in ds.cases}:
            ds.problems.append(f"{json_path}: test[{i}] repeats case {_strip_ending(image.name)}; case ids must "
                               f"be unique")
            continue
        ds.cases.append(Case(_strip_ending(image.name), (image,), None, test=True))
    if not ds.training and not ds.problems:
        ds.problems.append(f"{json_path}: 'training' lists no cases")
    if dataset_json["numTraining"] != len(dataset_json["training"]):
        ds.problems.append(f"{json_path}: 'numTraining' is {dataset_json['numTraining']} but 'training' lists "
                           f"{len(dataset_json['training'])} cases")
    return ds


def _strip_ending(name: str) -> str:
    for ending in (".nii.gz", ".nii"):
        if name.endswith(ending):
            return name[: -len(ending)]
    return name
