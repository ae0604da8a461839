"""One real local Ray cluster for the batch tests (two CPU actors plus a CPU for the read tasks), the models and
the generated inputs they share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

N_IMAGES = 300
# The image_rgb fixture model takes 12x16 RGB images.
IMAGE_SIZE = (12, 16)


@pytest.fixture(scope="package")
def ray_cluster():
    """A local head on 127.0.0.1 with 3 logical CPUs: 2 for the actors, 1 left for Ray Data's read tasks.

    One cluster for all of tests/batch (the session's only Ray tests), shut down when they end so that its
    processes do not sit beside the rest of the suite."""
    try:
        import ray
        import ray.data  # noqa: F401 - the tests need Ray Data, not only Ray core
    except ImportError as e:
        pytest.skip(f"ray[data] is not installed ({e}); `make test` installs it with the dev extra")
    ray.init(address="local", num_cpus=3, include_dashboard=False, _node_ip_address="127.0.0.1",
             object_store_memory=256 * 2**20, logging_level="WARNING", log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory) -> Path:
    """N_IMAGES random RGB PNGs, in two sub-folders (keys are relative paths)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(exist_ok=True)
        pixels = rng.integers(0, 256, size=(IMAGE_SIZE[1], IMAGE_SIZE[0], 3), dtype=np.uint8)
        Image.fromarray(pixels, "RGB").save(folder / f"img{i:04d}.png")
    return root


@pytest.fixture(scope="session")
def flex_batch_model(tmp_path_factory) -> Path:
    """An fp16 conv classifier whose first axis is a batch axis (RangeDim 1..64), so batches are stacked."""
    import coremltools as ct
    import torch

    from fixtures_coreml import _convert

    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3)
            self.fc = torch.nn.Linear(8 * 6 * 6, 5)

        def forward(self, x):
            return torch.softmax(self.fc(torch.relu(self.conv(x)).flatten(1)), -1)

    path = tmp_path_factory.mktemp("flexbatch") / "flex_batch.mlpackage"
    shape = ct.Shape((ct.RangeDim(1, 64, default=1), 3, 8, 8))
    _convert(Net().eval(), torch.randn(1, 3, 8, 8), [ct.TensorType(name="x", shape=shape)], path,
             precision="fp16", target="iOS16")
    return path


@pytest.fixture(scope="session")
def npy_dir(tmp_path_factory) -> Path:
    """64 float32 arrays of shape [1, 3, 8, 8] for flex_batch_model."""
    root = tmp_path_factory.mktemp("arrays")
    rng = np.random.default_rng(1)
    for i in range(64):
        np.save(root / f"x{i:03d}.npy", rng.standard_normal((1, 3, 8, 8)).astype(np.float32))
    return root
