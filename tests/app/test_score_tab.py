import dataclasses

import gradio as gr
import pytest
from PIL import Image

from app import score_tab


def test_tab_builds_inside_blocks():
    with gr.Blocks() as demo:
        with gr.Tab("Score"):
            parts = score_tab.build_score_tab()
    assert parts["dataset"].choices == [(name, name) for name in ("mixture", "spiral", "circle")]
    assert parts["sigma"].value == 0.1
    assert any(dep.get("api_name") == "score_field" for dep in demo.config["dependencies"])


def test_bad_choices_are_clear_errors():
    with pytest.raises(gr.Error, match=r"unknown dataset 'moons'"):
        score_tab.show_score("moons", 0.1)
    with pytest.raises(gr.Error, match=r"σ must be one of 0.05, 0.1, 0.2, 0.5, got 0.3"):
        score_tab.show_score("spiral", 0.3)
    with pytest.raises(gr.Error, match=r"got 'a lot'"):
        score_tab.show_score("spiral", "a lot")
    with pytest.raises(gr.Error, match=r"unknown dataset \['spiral'\]"):  # a list, as the API lets in
        score_tab.show_score(["spiral"], 0.1)


def test_cache_folder_follows_the_settings():
    a, b = score_tab.score_config("spiral", 0.1), score_tab.score_config("spiral", "0.1")
    assert a == b and a.out.startswith(str(score_tab.CACHE_DIR / "spiral-sigma0.1-"))
    assert score_tab.score_config("spiral", 0.2).out != a.out


@pytest.mark.slow
def test_show_score_trains_once_then_reads_the_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(score_tab, "CACHE_DIR", tmp_path)
    monkeypatch.setattr(score_tab, "UI_CONFIG", dataclasses.replace(
        score_tab.UI_CONFIG, steps=100, eval_points=300, chain_steps=10, chain_points=200))
    quiver, chain, markdown = score_tab.show_score("circle", 0.2, progress=lambda *a, **k: None)
    assert quiver.startswith(str(tmp_path))
    for path in (quiver, chain):
        with Image.open(path) as image:
            assert image.size[0] > 300
    assert "| true blurred score σ²∇log p_σ |" in markdown and "Markov chain" in markdown
    stamp = (tmp_path.glob("circle-sigma0.2-*/model.keras").__next__()).stat().st_mtime_ns
    assert score_tab.show_score("circle", 0.2, progress=lambda *a, **k: None) == (quiver, chain, markdown)
    assert next(tmp_path.glob("circle-sigma0.2-*/model.keras")).stat().st_mtime_ns == stamp


def test_every_offered_sigma_is_one_a_run_takes():
    # ScoreConfig refuses σ outside data.toy2d.SIGMA_RANGE; the radio must offer none of those.
    for sigma in score_tab.SIGMAS:
        assert score_tab.score_config("mixture", sigma).sigma == sigma
