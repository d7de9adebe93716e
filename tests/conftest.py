import pyro
import pytest
import torch

from pyro_vae.runtime import set_seed

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _clean_pyro_state():
    """Every test starts from an empty param store and the same seed."""
    pyro.clear_param_store()
    set_seed(0)
    yield
    pyro.clear_param_store()


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
