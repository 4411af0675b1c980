"""The configs shipped in configs/ load, validate, and say what their comments claim."""

from pathlib import Path

import pytest

from budgetseg.config import config_diff, g_phi_iterations, load_config, to_dict

CONFIG_DIR = Path(__file__).parent.parent / "configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load_and_validate(path):
    cfg = load_config(path)
    assert cfg.task in ("semantic", "instance")
    if path.name.startswith("fashion_"):  # the built-in data, where `make` builds it
        assert cfg.data.root.endswith("data/fashion-scenes")


def test_the_configs_folder_is_the_one_the_package_ships():
    from budgetseg.cli import shipped_configs

    assert [p.name for p in CONFIGS] == [p.name for p in shipped_configs().values()]
    assert {"semantic", "instance", "camvid", "cvppp"} <= set(shipped_configs())


@pytest.mark.parametrize(
    "short, default, iterations, also",
    [
        # the semantic default took quarter-strong batches and f_theta's augmentation after the short schedule's
        # measurements were made
        (
            "fashion_semantic_short",
            "fashion_semantic",
            (1200, 2400),
            ["segmenter.strong_fraction", "annotator.color_aug", "annotator.cutmix"],
        ),
        # and the instance default f_theta's colour jitter on few strong images after the short schedule's
        ("fashion_instance_short", "fashion_instance", (1600, 3200), ["annotator.color_aug_max_n"]),
    ],
)
def test_each_short_recipe_is_its_default_on_less_training(short, default, iterations, also):
    short, default = (load_config(CONFIG_DIR / f"{name}.yaml") for name in (short, default))
    diff = config_diff(to_dict(short), to_dict(default))
    assert sorted(diff) == sorted(["annotator.iterations", "segmenter.iterations", *also])
    assert (g_phi_iterations(short), g_phi_iterations(default)) == iterations


def test_the_plain_recipe_is_the_default_without_f_thetas_augmentation():
    plain, default = (load_config(CONFIG_DIR / f"{n}.yaml") for n in ("fashion_semantic_plain", "fashion_semantic"))
    assert sorted(config_diff(to_dict(plain), to_dict(default))) == ["annotator.color_aug", "annotator.cutmix"]
    assert default.annotator.color_aug and default.annotator.cutmix and not plain.annotator.color_aug
