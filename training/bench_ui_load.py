"""Load benchmark of the web UI: N concurrent ``gradio_client`` users, M requests each.

Every request denoises the same clean image after adding Gaussian noise with its own seed,
through the real ``/denoise`` endpoint. Each answer is checked against its own request: the
"before" image must equal the noise that seed draws (so no answer went to the wrong user), the
PNG must have the input's size, and the PSNR must have gone up. The bar is zero errors and no
lost request (every request submitted is answered and checked).

Prints, per number of users: requests, answered, errors, lost, wall time, throughput, and
p50/p95/max latency (seconds from submission to answer, queueing included).

Examples::

    python -m training.bench_ui_load                       # starts the UI itself, 1/2/4/8 users x 8
    python -m training.bench_ui_load --users 4 --requests 20 --concurrency 2
    python -m training.bench_ui_load --url http://127.0.0.1:7860/ --json runs/ui_load.json
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import platform
import tempfile
import threading
import time
from dataclasses import field
from pathlib import Path

import numpy as np

from models.registry import cpu_description
from training.cli import parse_config

ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class UiLoadConfig:
    """Who talks to which server, how much, with what."""

    url: str = field(default="", metadata={
        "help": "a running UI to load; empty: start `python -m app.ui` on a free port for the run"})
    users: tuple[int, ...] = field(default=(1, 2, 4, 8), metadata={
        "help": "numbers of concurrent users to try, one round each"})
    requests: int = field(default=8, metadata={"help": "requests per user per round"})
    image: str = field(default=str(ROOT / "data" / "samples" / "photo_clean.png"), metadata={
        "help": "clean image each request corrupts (its own seed) and denoises"})
    level: float = field(default=0.1, metadata={"help": "Gaussian noise std added per request"})
    model: str = field(default="", metadata={"help": "model name for /denoise; empty: the UI's first"})
    concurrency: int = field(default=1, metadata={
        "help": "--concurrency of the UI started here (requests denoised at once)"})
    queue_size: int = field(default=64, metadata={
        "help": "--queue-size of the UI started here; must hold every user's request"})
    timeout: float = field(default=600.0, metadata={
        "help": "seconds one request may take before it counts as lost"})
    json: str = field(default="", metadata={"help": "also write the results here as JSON"})

    def __post_init__(self):
        if not self.users or min(self.users) < 1:
            raise ValueError(f"users must be positive counts, got {self.users}")
        if self.requests < 1:
            raise ValueError(f"requests must be >= 1, got {self.requests}")
        if not Path(self.image).is_file():
            raise ValueError(f"image {self.image} does not exist")


@dataclasses.dataclass
class Outcome:
    """One request: its latency, or the error it got."""

    user: int
    seed: int
    seconds: float | None = None
    error: str | None = None


def expected_noisy(clean: np.ndarray, level: float, seed: int) -> np.ndarray:
    """The 8-bit "before" image the UI must show for this seed (same code path as the UI)."""
    from data.corruption import corrupt
    from data.images import from_model, to_model

    out = from_model(corrupt(to_model(clean), "gaussian", level, seed=seed), clean.dtype).reshape(clean.shape)
    return out[..., 0] if out.shape[-1] == 1 else out


def check_answer(answer, clean: np.ndarray, level: float, seed: int) -> None:
    """Raises ``AssertionError`` unless ``answer`` is this seed's correct, complete result."""
    from PIL import Image

    (before, _after), _residual, report, png = answer
    with Image.open(before) as im:
        shown = np.asarray(im)
    if not np.array_equal(shown, expected_noisy(clean, level, seed)):
        raise AssertionError(f"seed {seed}: the answer's input is not this request's noisy image")
    with Image.open(png) as im:
        if im.size != (clean.shape[1], clean.shape[0]):
            raise AssertionError(
                f"seed {seed}: result is {im.size}, input {clean.shape[1]} x {clean.shape[0]}")
    if not report.get("denoised_psnr", 0) > report.get("noisy_psnr", np.inf):
        raise AssertionError(f"seed {seed}: PSNR did not go up: {report}")


def run_round(url: str, users: int, config: UiLoadConfig, clean: np.ndarray, first_seed: int) -> dict:
    """``users`` threads, each with its own client, send ``config.requests`` requests in turn."""
    from gradio_client import Client, handle_file

    from models.registry import bundled_models

    clients = [Client(url, verbose=False, download_files=tempfile.mkdtemp(prefix="ui-load-"))
               for _ in range(users)]
    model = config.model or next(iter(bundled_models()))  # what the UI lists first
    start_line = threading.Barrier(users)
    image = handle_file(config.image)

    def user(index: int) -> list[Outcome]:
        outcomes = []
        start_line.wait()
        for r in range(config.requests):
            seed = first_seed + index * config.requests + r
            outcome = Outcome(index, seed)
            started = time.perf_counter()
            try:
                job = clients[index].submit(image, model, 1.0, "gaussian", config.level, seed, None,
                                            api_name="/denoise")
                answer = job.result(timeout=config.timeout)
                outcome.seconds = time.perf_counter() - started
                check_answer(answer, clean, config.level, seed)
            except concurrent.futures.TimeoutError:
                outcome.error = f"no answer within {config.timeout:g} s"
            except Exception as err:  # noqa: BLE001 - every failure is counted and reported
                outcome.error = f"{type(err).__name__}: {err}"
            outcomes.append(outcome)
        return outcomes

    wall = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(users) as pool:
        futures = [pool.submit(user, i) for i in range(users)]
        outcomes = [o for f in futures for o in f.result()]
    wall = time.perf_counter() - wall
    for client in clients:
        with contextlib.suppress(Exception):
            client.close()
    return summarise(users, config.requests, outcomes, wall)


def summarise(users: int, per_user: int, outcomes: list[Outcome], wall: float) -> dict:
    """The round's numbers; ``lost`` counts requests that got neither an answer nor an error."""
    answered = [o.seconds for o in outcomes if o.seconds is not None]
    errors = [o for o in outcomes if o.error is not None]
    timed_out = [o for o in errors if o.error.startswith("no answer")]
    latencies = np.asarray(answered) if answered else np.asarray([np.nan])
    return {
        "users": users, "requests": users * per_user, "answered": len(answered),
        "errors": len(errors), "lost": users * per_user - len(outcomes) + len(timed_out),
        "wall_s": round(wall, 2), "throughput_rps": round(len(answered) / wall, 3),
        "p50_s": round(float(np.percentile(latencies, 50)), 3),
        "p95_s": round(float(np.percentile(latencies, 95)), 3),
        "max_s": round(float(np.max(latencies)), 3),
        "error_messages": sorted({o.error for o in errors})[:5],
    }


def print_table(rows: list[dict]) -> None:
    cols = ["users", "requests", "answered", "errors", "lost", "wall_s", "throughput_rps", "p50_s", "p95_s",
            "max_s"]
    print(" | ".join(f"{c:>14}" for c in cols))
    for row in rows:
        print(" | ".join(f"{row[c]:>14}" for c in cols))
        for message in row["error_messages"]:
            print(f"    error: {message}")


def benchmark(config: UiLoadConfig) -> list[dict]:
    """Runs one round per entry of ``config.users`` against ``config.url`` or a server started here."""
    from data.images import load_image

    clean = load_image(config.image).pixels
    print(f"image {config.image}: {clean.shape[1]} x {clean.shape[0]} x {clean.shape[2]}, "
          f"{clean.dtype}; gaussian {config.level}; {config.requests} requests per user")
    with contextlib.ExitStack() as stack:
        url = config.url
        if not url:
            log = Path(tempfile.mkdtemp(prefix="ui-load-")) / "server.log"
            args = ["--concurrency", config.concurrency, "--queue-size", config.queue_size]
            url = stack.enter_context(_serve(args, log))
            print(f"started python -m app.ui --concurrency {config.concurrency} at {url} (log {log})")
        rows, seed = [], 1000
        for users in config.users:
            rows.append(run_round(url, users, config, clean, seed))
            seed += users * config.requests
            print_table(rows[-1:])
    return rows


def _serve(args, log):
    from app.ui import serve_in_subprocess

    return serve_in_subprocess(args, log_path=log)


def main(argv=None) -> None:
    config = parse_config(UiLoadConfig, __doc__.splitlines()[0], argv)
    rows = benchmark(config)
    print(f"\nmachine: {platform.machine()}, {cpu_description()}; server concurrency "
          f"{config.concurrency if not config.url else '(external)'}")
    print_table(rows)
    bad = sum(r["errors"] + r["lost"] for r in rows)
    print("PASS: zero errors, no lost request" if not bad else f"FAIL: {bad} failed or lost requests")
    if config.json:
        Path(config.json).parent.mkdir(parents=True, exist_ok=True)
        results = {"config": dataclasses.asdict(config), "rounds": rows}
        Path(config.json).write_text(json.dumps(results, indent=2) + "\n")
    raise SystemExit(1 if bad else 0)


if __name__ == "__main__":
    main()
