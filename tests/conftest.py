import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """One intra-op torch thread for the whole suite: stable float results, and on a 2-core machine whose
    cores are busy two threads fighting each other are many times slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
