"""Server options that need a server of their own: ``--auth`` and ``--queue-size``."""

from __future__ import annotations

import concurrent.futures as cf
import time

import httpx
import numpy as np
import pytest
from gradio_client import Client
from gradio_client.exceptions import AuthenticationError
from gradio_client.utils import QueueError, Status
from PIL import Image

from app.ui import serve_in_subprocess
from tests.e2e.test_ui_api import SAMPLES, denoise_args

pytestmark = pytest.mark.e2e

def test_auth_is_required_for_the_page_and_the_api(tmp_path):
    with serve_in_subprocess(["--auth", "ann:pw"], log_path=tmp_path / "server.log") as url:
        with pytest.raises(AuthenticationError):
            Client(url, verbose=False)  # no credentials: not even the API description
        with pytest.raises(ValueError, match="Could not login"):
            Client(url, auth=("ann", "wrong"), verbose=False)
        assert httpx.get(url + "gradio_api/info").status_code == 401  # the raw API too
        client = Client(url, auth=("ann", "pw"), verbose=False)
        args = denoise_args(SAMPLES / "clothes_gaussian.png", SAMPLES / "clothes_clean.png")
        _, _, report, png = client.predict(*args, api_name="/denoise")
        assert report["denoised_psnr"] > report["noisy_psnr"] + 2.0
        with Image.open(png) as im:
            assert (im.mode, im.size) == ("L", (140, 56))


def test_requests_beyond_the_queue_size_are_refused_with_a_message(tmp_path):
    # Big enough that one request keeps the single engine slot busy for seconds (three grey-model
    # passes over 528 x 528 colour pixels) while the others arrive.
    photo = np.asarray(Image.open(SAMPLES / "photo_clean.png"))
    Image.fromarray(np.tile(photo, (3, 3, 1))).save(tmp_path / "big.png")
    with serve_in_subprocess(["--queue-size", "1", "--concurrency", "1"],
                             log_path=tmp_path / "server.log") as url:
        client = Client(url, verbose=False)
        first = client.submit(*denoise_args(tmp_path / "big.png", corruption="gaussian", level=0.1),
                              api_name="/denoise")
        deadline = time.monotonic() + 120
        while first.status().code != Status.PROCESSING and not first.done():
            assert time.monotonic() < deadline, f"the first request never started: {first.status()}"
            time.sleep(0.05)
        # One slot busy: one more request may wait, the rest must be refused at once.
        others = [client.submit(*denoise_args(tmp_path / "big.png", corruption="gaussian", level=0.1, seed=s),
                                api_name="/denoise") for s in (1, 2, 3)]
        refused, reports = [], []
        for job in [first, *others]:
            try:
                reports.append(job.result(timeout=600)[2])
            except QueueError as err:
                refused.append(str(err))
            except cf.TimeoutError:
                pytest.fail("a request neither finished nor was refused")
    assert refused, "no request was refused with --queue-size 1"
    assert all(message == "Queue is full! Please try again." for message in refused), refused
    # The running and the waiting request always finish; a later one may too if a slot freed up
    # before it arrived (timing), but nothing is lost: each request either finished or was refused.
    assert len(reports) >= 2 and len(reports) + len(refused) == 4, (len(reports), len(refused))
    for report in reports:
        assert (report["width"], report["height"]) == (528, 528)
        assert report["denoised_psnr"] > report["noisy_psnr"] + 2.0
