"""Config files, overrides, and the errors they raise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from landmeta.config import CONFIG_DIR, config_from_dict, config_to_dict, dump_config, load_config
from landmeta.errors import ConfigError


def test_defaults_and_shipped_configs_load():
    assert load_config().meta.method == "maml"
    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        load_config(path)  # every shipped config is valid


def test_extends_inherits_and_overrides():
    seg = load_config("tiny-seg")
    tiny = load_config("tiny")
    assert seg.task.kind == "segmentation" and seg.model.name == "unet"
    assert seg.data.chip_size == tiny.data.chip_size  # inherited


def test_set_overrides_with_types():
    cfg = load_config("tiny", ["meta.inner_steps=3", "meta.inner_lr=1", "eval.shots=[1, 5]", "data.bands=null",
                               "meta.outer_lr=2e-4"])
    assert cfg.meta.inner_steps == 3 and cfg.meta.outer_lr == 2e-4  # YAML 1.1 reads 2e-4 as a string
    assert isinstance(cfg.meta.inner_lr, float) and cfg.meta.inner_lr == 1.0
    assert cfg.eval.shots == [1, 5] and cfg.data.bands is None


@pytest.mark.parametrize("override, fragment", [
    ("meta.bogus=1", "unknown key 'meta.bogus'"),
    ("meta.inner_steps=abc", "meta.inner_steps: expected int"),
    ("meta.method=reptile", "meta.method: expected one of"),
    ("task.kind.x=1", "'task.kind' is not a section"),
    ("noequals", "expected section.key=value"),
    ("data.augment=3", "data.augment: expected true or false"),
    ("meta.outer_lr=fast", "meta.outer_lr: expected float"),
])
def test_bad_overrides_name_the_key(override, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(".", r"\.")):
        load_config("tiny", [override])


def test_bad_file_names_the_key_and_file(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  widht: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert str(bad) in str(info.value) and "model.widht" in str(info.value)
    bad.write_text("meta:\n  steps: [1, 2]\n")
    with pytest.raises(ConfigError, match="meta.steps"):
        load_config(bad)
    bad.write_text("meta: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_round_trip_through_dict():
    cfg = load_config("tiny-seg", ["seed=7"])
    again = config_from_dict(config_to_dict(cfg))
    assert again == cfg and "seed: 7" in dump_config(again)


def test_cli_config_error_is_one_line_and_exit_2():
    proc = subprocess.run([sys.executable, "-m", "landmeta", "config", "--config", "tiny", "--set", "meta.nope=1"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "meta.nope" in proc.stderr
    assert "Traceback" not in proc.stderr
