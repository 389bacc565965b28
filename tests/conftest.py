import os
import random

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """The test corpus (tests/corpus.py), written once: ``(root, {rel: CorpusFile})``, noisy files
    under ``root / "noisy"``, clean ones under ``root / "clean"``. Tests only read those two
    folders; what they write goes elsewhere (the batch tests' outputs beside them, in ``root``)."""
    from tests.corpus import corpus_fixture

    return corpus_fixture(tmp_path_factory, "corpus")


@pytest.fixture(autouse=True)
def _restores_global_state():
    """Training, fine-tuning and benchmarks run in the test process set Keras's dtype policy and
    seed the random generators (``keras.utils.set_random_seed``): each test gets back what it
    started with, so no test inherits another's. (TensorFlow's global seed cannot be read back;
    tests that need its draws seed it themselves.)"""
    import keras

    policy, numpy_state, python_state = keras.config.dtype_policy(), np.random.get_state(), random.getstate()
    yield
    keras.config.set_dtype_policy(policy)
    np.random.set_state(numpy_state)
    random.setstate(python_state)
