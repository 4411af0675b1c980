"""The configs shipped in configs/ load, validate, and say what their comments claim."""

from pathlib import Path

import pytest

from budgetseg.config import config_diff, g_phi_iterations, load_config, to_dict

CONFIG_DIR = Path(__file__).parent.parent / "configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load_and_validate(path):
    cfg = load_config(path)
    assert cfg.task in ("semantic", "instance") and cfg.data.root.endswith("data/fashion-scenes")


def test_the_short_recipe_is_the_default_on_a_third_of_the_training():
    short = load_config(CONFIG_DIR / "fashion_semantic_short.yaml")
    default = load_config(CONFIG_DIR / "fashion_semantic.yaml")
    assert config_diff(to_dict(short), to_dict(default)) == ["annotator.iterations", "segmenter.iterations"]
    assert (g_phi_iterations(short), g_phi_iterations(default)) == (1200, 2400)


def test_the_short_instance_recipe_is_the_default_on_half_the_training():
    short = load_config(CONFIG_DIR / "fashion_instance_short.yaml")
    default = load_config(CONFIG_DIR / "fashion_instance.yaml")
    assert config_diff(to_dict(short), to_dict(default)) == ["annotator.iterations", "segmenter.iterations"]
    assert (g_phi_iterations(short), g_phi_iterations(default)) == (1600, 3200)
