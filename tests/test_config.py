import pytest
import yaml

from segzoo.config import load_config, validate_config
from segzoo.errors import SegzooError

from conftest import REPO

SCHEMA = REPO / "schemas" / "config.schema.yaml"


@pytest.mark.parametrize("preset", sorted((REPO / "presets").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(preset):
    config = load_config(REPO / "config.yaml", preset, schema_path=SCHEMA)
    assert config["seed"] >= 0


def test_defaults_are_filled_in():
    config = validate_config({"phantom": {"cases": 5}}, SCHEMA)
    assert config["phantom"]["cases"] == 5
    assert config["phantom"]["spacing"] == [0.8, 0.8, 2.5]
    assert config["splits"]["val_fraction"] == 0.2 and config["dataset"]["raw"] is None
    assert config["models"]["ms_unet3plus"]["base"] == 8  # through a $ref
    assert config["train"]["augment"]["flip_axes"] == [0]


def test_defaults_fill_an_object_the_schema_also_allows_as_null():
    config = validate_config({"weightgen": {"plateau": {"every": 2}}}, SCHEMA)
    assert config["weightgen"]["plateau"] == {"every": 2, "patience": 3, "min_delta": 0.005}
    assert validate_config({"weightgen": {"plateau": None}}, SCHEMA)["weightgen"]["plateau"] is None


def test_every_bad_key_is_named():
    with pytest.raises(SegzooError) as e:
        validate_config({"phantom": {"cases": "abc", "bogus": 1}, "sede": 3, "splits": {"val_fraction": 2}}, SCHEMA)
    text = "\n".join(e.value.problems)
    assert "phantom.cases: 'abc' is not of type 'integer'" in text
    assert "phantom.bogus: unknown key" in text
    assert "sede: unknown key" in text
    assert "splits.val_fraction:" in text
    assert len(e.value.problems) == 4


def test_config_file_that_is_not_a_mapping(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(SegzooError, match="bad.yaml: must hold a mapping"):
        load_config(bad, schema_path=SCHEMA)


def test_metrics_come_from_the_one_registry():
    from segzoo.evaluate.metrics import METRICS

    assert validate_config({}, SCHEMA)["evaluate"]["metrics"] == list(METRICS)  # null: every known metric
    assert validate_config({"evaluate": {"metrics": ["hd95_mm"]}}, SCHEMA)["evaluate"]["metrics"] == ["hd95_mm"]
    with pytest.raises(SegzooError, match="evaluate.metrics: 'dise' is not a metric segzoo knows"):
        validate_config({"evaluate": {"metrics": ["dice", "dise"]}}, SCHEMA)


def test_strings_from_snakemake_config_become_what_the_schema_asks(tmp_path):
    schema = REPO / "schemas" / "config.schema.yaml"
    config = validate_config({"weightgen": {"enabled": "false", "lrs": ["0.01"], "init": "spawn"}, "seed": "7",
                              "preprocess": {"spacing": "null"}, "train": {"bf16": "true"}}, schema)
    assert config["weightgen"]["enabled"] is False and config["weightgen"]["lrs"] == [0.01]
    assert config["seed"] == 7 and config["preprocess"]["spacing"] is None and config["train"]["bf16"] is True
    with pytest.raises(SegzooError, match="weightgen.enabled: 'maybe' is not of type 'boolean'"):
        validate_config({"weightgen": {"enabled": "maybe"}}, schema)
    with pytest.raises(SegzooError, match="seed: 'true' is not of type 'integer'"):
        validate_config({"seed": "true"}, schema)  # a boolean is not an integer
    # the real Snakemake: nested values arrive as strings, and the workflow accepts them
    from conftest import snakemake, workflow_copy

    wf = workflow_copy(tmp_path / "wf")
    result = snakemake(wf, "-n", "--configfile", "presets/ci.yaml", "--config", "weightgen={enabled: false}")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "zoo_job" not in result.stdout and "train" in result.stdout
