import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """The test corpus (tests/corpus.py), written once: ``(root, {rel: CorpusFile})``, noisy files
    under ``root / "noisy"``, clean ones under ``root / "clean"``. Tests only read those two
    folders; what they write goes elsewhere (the batch tests' outputs beside them, in ``root``)."""
    from tests.corpus import corpus_fixture

    return corpus_fixture(tmp_path_factory, "corpus")
