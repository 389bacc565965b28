"""Server options that need a server of their own: ``--auth`` and ``--queue-size``, on one server."""

from __future__ import annotations

import concurrent.futures as cf
import time

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AuthenticationError
from gradio_client.utils import QueueError, Status
from PIL import Image

from app.ui import serve_in_subprocess
from tests.e2e.test_ui_api import SAMPLES, denoise_args

pytestmark = pytest.mark.e2e

AUTH = ("ann", "pw")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for both options: a password, one engine slot and a queue of one."""
    log = tmp_path_factory.mktemp("options-server") / "server.log"
    with serve_in_subprocess(["--auth", ":".join(AUTH), "--queue-size", "1", "--concurrency", "1"],
                             log_path=log) as url:
        yield url


def test_auth_is_required_for_the_page_and_the_api(server):
    with pytest.raises(AuthenticationError):
        Client(server, verbose=False)  # no credentials: not even the API description
    with pytest.raises(ValueError, match="Could not login"):
        Client(server, auth=("ann", "wrong"), verbose=False)
    assert httpx.get(server + "gradio_api/info").status_code == 401  # the raw API too
    client = Client(server, auth=AUTH, verbose=False)
    args = denoise_args(SAMPLES / "clothes_gaussian.png", SAMPLES / "clothes_clean.png")
    _, _, report, png = client.predict(*args, api_name="/denoise")
    assert report["denoised_psnr"] > report["noisy_psnr"] + 2.0
    with Image.open(png) as im:
        assert (im.mode, im.size) == ("L", (140, 56))


def test_requests_beyond_the_queue_size_are_refused_with_a_message(server, tmp_path):
    # The one engine slot is held by a run far longer than the test: the photo model with its
    # 8-fold self-ensemble over 1 megapixel (half a minute on 2 cores), so the requests sent
    # meanwhile meet a busy slot; were it over first, `assert not blocker.done()` below fails.
    yy, xx = np.mgrid[:1000, :1000] / 200.0
    smooth = np.stack([np.sin(xx), np.cos(yy), np.sin(xx + yy)], -1) * 127 + 128
    Image.fromarray(smooth.astype(np.uint8)).save(tmp_path / "big.png")  # small file, no noise
    small = denoise_args(SAMPLES / "clothes_gaussian.png", SAMPLES / "clothes_clean.png")
    client = Client(server, auth=AUTH, verbose=False)
    blocker = client.submit(handle_file(str(tmp_path / "big.png")), "photo", 1.0, "gaussian", 0.1, 0,
                            None, ensemble=8, api_name="/denoise")
    wait_for(blocker, (Status.PROCESSING, Status.PROGRESS), "the blocking run never started")
    # The slot busy: one more request may wait in the queue ...
    waiting = client.submit(*small, api_name="/denoise")
    wait_for(waiting, (Status.IN_QUEUE,), "the second request was not queued")
    # ... and the next ones are refused at once, with a message.
    for seed in (1, 2):
        refused = client.submit(*denoise_args(SAMPLES / "clothes_gaussian.png", corruption="gaussian",
                                              level=0.1, seed=seed), api_name="/denoise")
        with pytest.raises(QueueError) as err:
            refused.result(timeout=60)
        assert str(err.value) == "Queue is full! Please try again."
    assert not blocker.done(), "the blocking run ended during the test: the refusals prove nothing"
    assert waiting.status().code == Status.IN_QUEUE  # still waiting, not refused
    # Nothing accepted is lost: once the blocking run is cancelled (the slot freed), the
    # waiting request runs and answers.
    blocker.cancel()
    try:
        report = waiting.result(timeout=300)[2]
    except cf.TimeoutError:
        pytest.fail(f"the waiting request neither finished nor failed: {waiting.status()}")
    assert (report["width"], report["height"]) == (140, 56)
    assert report["denoised_psnr"] > report["noisy_psnr"] + 2.0


def wait_for(job, codes, message: str, timeout_s: float = 120.0) -> None:
    """Waits until ``job``'s status is one of ``codes``; fails with ``message`` if it is not in time."""
    deadline = time.monotonic() + timeout_s
    while job.status().code not in codes:
        assert not job.done(), f"{message}: it ended ({job.status()})"
        assert time.monotonic() < deadline, f"{message} in {timeout_s:.0f} s: {job.status()}"
        time.sleep(0.05)
