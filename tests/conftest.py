import os


# Tests run tiny models: one intra-op thread is as fast, and on a small shared box (2 cores, CI running other
# processes, the training-script tests spawning subprocesses) several OpenMP thread pools spinning against each
# other made runs up to ~50x slower. Set before torch is imported so subprocesses inherit it too.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
# deterministic kernels where available; our equality tests compare runs on the same machine
torch.use_deterministic_algorithms(True, warn_only=True)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
