"""The demo's logic without a browser: input checks, the prompt token cap, strip and GIF making,
model loading errors, timed generation, CLIP refinement, interpolation."""

import os
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch

import galip_core.runtime
from galip_core.packaged import DEFAULT_MODEL
from galip_diffusers.demo import (
    MAX_IMAGES,
    DemoBackend,
    DemoInputError,
    DemoModelError,
    cap_prompt,
    load_pipeline,
    make_gif,
    make_strip,
    upscale,
    validate_generation,
    validate_interpolation,
)
from galip_cli import demo as demo_launch
from galip_diffusers.pipelines.pipeline_galip import GALIPPipeline
from galip_diffusers.testing_utils import byte_level_clip_tokenizer, tiny_components, tiny_pipeline, tiny_scorer

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "src")


@pytest.fixture(scope="module")
def tokenizer():
    return byte_level_clip_tokenizer()


@pytest.fixture(scope="module")
def scorer_model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo") / "tiny-with-scorer"
    GALIPPipeline(**{**tiny_components(), "scorer": tiny_scorer()}).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def backend(model_dir, one_thread):
    backend = DemoBackend.from_model(model_dir)
    yield backend
    backend.close()


def _num_tokens(tokenizer, text):
    return len(tokenizer(text).input_ids)  # start and end tokens included


# ----------------------------------------------------------------------------------------------------- token cap
def test_a_prompt_that_fits_is_unchanged(tokenizer):
    capped = cap_prompt("A large red circle", tokenizer)
    assert capped.text == "A large red circle" and not capped.truncated and capped.warning is None
    assert capped.num_tokens == _num_tokens(tokenizer, "a large red circle") and capped.limit == 77


def test_a_long_prompt_is_cut_to_77_tokens_with_a_warning(tokenizer):
    prompt = "a large red circle on a white background " * 10  # a token per non-space character here: 330 + 2
    capped = cap_prompt(prompt, tokenizer)
    assert capped.truncated and capped.num_tokens == _num_tokens(tokenizer, prompt) == 332 and capped.limit == 77
    assert _num_tokens(tokenizer, capped.text) == 77 and prompt.startswith(capped.text)
    assert "332 tokens" in capped.warning and "at most 77" in capped.warning and capped.text in capped.warning


@pytest.mark.parametrize("prompt", ["😀" * 100, "東京の夜景" * 40, "ä" * 200], ids=["emoji", "cjk", "umlaut"])
def test_a_cut_never_splits_a_character_and_really_fits(prompt):
    from galip_diffusers.pretrained import PRETRAINED_MODELS
    from transformers import CLIPTokenizer

    for tokenizer in (byte_level_clip_tokenizer(), CLIPTokenizer.from_pretrained(PRETRAINED_MODELS["galip-emoji"],
                                                                                  subfolder="tokenizer")):
        capped = cap_prompt(prompt, tokenizer)
        assert capped.truncated and capped.text and "\ufffd" not in capped.text
        assert _num_tokens(tokenizer, capped.text) <= 77 and prompt.startswith(capped.text)


def test_the_tokenizer_limit_applies_when_smaller_than_77():
    short = byte_level_clip_tokenizer(model_max_length=16)
    capped = cap_prompt("a large red circle on a white background", short)
    assert capped.limit == 16 and _num_tokens(short, capped.text) == 16 and capped.text == "a large red circl"
    huge = byte_level_clip_tokenizer(model_max_length=int(1e30))  # "no limit" sentinel of some tokenizers
    assert cap_prompt("x" * 100, huge).limit == 77


# ---------------------------------------------------------------------------------------------------- validation
def test_valid_requests_are_normalised(tokenizer):
    request = validate_generation("  a red circle ", 3.0, "4", 0, False, 0, tokenizer=tokenizer)
    assert (request.prompt, request.seed, request.num_images, request.truncation, request.refine) == (
        "a red circle", 3, 4, None, False)
    assert validate_generation("x", 0, MAX_IMAGES, 1.25, tokenizer=tokenizer).truncation == 1.25
    assert validate_generation("x", 0, 1, None, True, 5.0, tokenizer=tokenizer, can_refine=True).refine_steps == 5
    interp = validate_interpolation("a", "b", 1, 2, 8.0, tokenizer=tokenizer)
    assert interp.prompts == ("a", "b") and interp.seeds == (1, 2) and interp.num_frames == 8


@pytest.mark.parametrize("kwargs, message", [
    ({"prompt": "   "}, "Enter a prompt"),
    ({"prompt": None}, "Enter a prompt"),
    ({"prompt": "\x00\x00"}, "Enter a prompt"),  # CLIP's text cleaning leaves nothing: an unconditioned image
    ({"num_images": 0}, "number of images must be an integer from 1 to 16, got 0"),
    ({"num_images": MAX_IMAGES + 1}, "number of images must be an integer from 1 to 16, got 17"),
    ({"num_images": 2.5}, "number of images must be an integer"),
    ({"num_images": "many"}, "number of images must be an integer"),
    ({"num_images": True}, "number of images must be an integer"),
    ({"seed": -1}, "seed must be an integer from 0 to 4294967295"),
    ({"seed": float("nan")}, "seed must be an integer"),
    ({"truncation": -0.5}, "truncation must be 0 (off) or a number in (0, 10]"),
    ({"truncation": float("inf")}, "truncation must be 0 (off)"),
    ({"refine": True}, "CLIP refinement is not available for this model"),
    ({"refine": "false"}, "refine must be true or false, got 'false'"),
    ({"refine": 1}, "refine must be true or false"),
])
def test_bad_generation_inputs_name_the_field_and_its_allowed_values(tokenizer, kwargs, message):
    values = {"prompt": "a red circle", "seed": 0, "num_images": 1, "truncation": 0, "refine": False, **kwargs}
    with pytest.raises(DemoInputError) as info:
        validate_generation(values["prompt"], values["seed"], values["num_images"], values["truncation"],
                            values["refine"], 10, tokenizer=tokenizer)
    assert message in str(info.value)


def test_refinement_steps_and_interpolation_limits(tokenizer):
    with pytest.raises(DemoInputError, match="refinement steps must be an integer from 1 to 200"):
        validate_generation("x", 0, 1, 0, True, 0, tokenizer=tokenizer, can_refine=True)
    with pytest.raises(DemoInputError, match="number of images must be an integer from 1 to 4"):
        validate_generation("x", 0, 5, tokenizer=tokenizer, max_images=4)
    with pytest.raises(DemoInputError, match="Enter a second prompt"):
        validate_interpolation("a", "", 0, 1, 8, tokenizer=tokenizer)
    with pytest.raises(DemoInputError, match="number of frames must be an integer from 2 to 32, got 1"):
        validate_interpolation("a", "b", 0, 1, 1, tokenizer=tokenizer)
    long = validate_interpolation("a", "b" * 100, 0, 1, 4, tokenizer=tokenizer)
    assert len(long.warnings) == 1 and long.warnings[0].startswith("Second prompt: The prompt has 102 tokens")


def test_refinement_work_per_request_is_capped(tokenizer):
    with pytest.raises(DemoInputError, match=r"number of images x refinement steps must be at most 320 per request, "
                                             r"got 16 x 200 = 3200: fewer images or fewer steps \(e.g. 16 x 20\)"):
        validate_generation("x", 0, 16, 0, True, 200, tokenizer=tokenizer, can_refine=True)
    assert validate_generation("x", 0, 4, 0, True, 80, tokenizer=tokenizer, can_refine=True).refine_steps == 80
    with pytest.raises(DemoInputError, match="at most 40 per request, got 4 x 11 = 44"):
        validate_generation("x", 0, 4, 0, True, 11, tokenizer=tokenizer, can_refine=True, max_refine_work=40)
    with pytest.raises(SystemExit) as info:
        demo_launch.main(["--help"])
    help_text = " ".join(demo_launch.build_parser().format_help().split())
    assert info.value.code == 0 and "--max_refine_work" in help_text and "images x steps per request" in help_text


# ------------------------------------------------------------------------------------------------ strip and GIF
def _solid(color, size=(4, 3)):
    return PIL.Image.new("RGB", size, color)


def test_strip_places_frames_in_order_with_gaps():
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (9, 9, 9), (200, 100, 0)]
    strip = make_strip([_solid(c) for c in colors], columns=3, gap=2, background=(255, 255, 255))
    assert strip.size == (3 * 4 + 2 * 2, 2 * 3 + 2)
    pixels = np.asarray(strip)
    assert tuple(pixels[0, 0]) == colors[0] and tuple(pixels[0, 6]) == colors[1] and tuple(pixels[2, 12]) == colors[2]
    assert tuple(pixels[5, 0]) == colors[3] and tuple(pixels[5, 6]) == colors[4]
    assert tuple(pixels[0, 4]) == (255, 255, 255) and tuple(pixels[5, 12]) == (255, 255, 255)  # gap, empty cell
    assert make_strip([_solid(c) for c in colors]).size == (5 * 4 + 4 * 2, 3)  # one row by default
    with pytest.raises(ValueError, match="must have the size of the first, 4x3"):
        make_strip([_solid((0, 0, 0)), _solid((0, 0, 0), (5, 5))])
    with pytest.raises(ValueError, match="empty"):
        make_strip([])


def test_gif_loops_forward_and_back(tmp_path):
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (250, 250, 0)]
    path = make_gif([_solid(c, (8, 8)) for c in colors], tmp_path / "a.gif", duration_ms=50)
    with PIL.Image.open(path) as gif:
        assert gif.is_animated and gif.n_frames == 2 * len(colors) - 2 and gif.info["loop"] == 0
        seen = []
        for index in range(gif.n_frames):
            gif.seek(index)
            seen.append(tuple(np.asarray(gif.convert("RGB"))[4, 4]))
            assert gif.info["duration"] == 50
    assert seen == colors + colors[-2:0:-1]
    with PIL.Image.open(make_gif([_solid(c) for c in colors[:2]], tmp_path / "b.gif", boomerang=False)) as gif:
        assert gif.n_frames == 2
    with pytest.raises(ValueError, match="at least 2 frames"):
        make_gif([_solid((0, 0, 0))], tmp_path / "c.gif")


def test_upscale_uses_the_smallest_integer_factor():
    big = upscale([_solid((1, 2, 3), (32, 30))], min_size=100)[0]
    assert big.size == (128, 120) and np.all(np.asarray(big) == (1, 2, 3))
    same = _solid((0, 0, 0), (300, 300))
    assert upscale([same], min_size=256)[0] is same


# ----------------------------------------------------------------------------------------------- model loading
def test_a_missing_default_model_is_a_clear_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(galip_core.runtime, "packaged_models_dir", lambda: str(tmp_path / "not-installed"))
    with pytest.raises(DemoModelError, match=r"'galip-shapes' is not part of this installation.*Pass --model PATH"):
        load_pipeline("galip-shapes")
    # gradio ([demo], in [dev]) is installed, so galip-demo gets as far as loading the model; without gradio it says
    # so first (test_the_demo_needs_gradio_only_to_serve).
    assert demo_launch.main([]) == 1  # the default --model, DEFAULT_MODEL
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"galip-demo: error: The packaged model '{DEFAULT_MODEL}' is not part of this installation")
    assert "--model PATH" in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_a_folder_that_is_not_a_pipeline_is_a_clear_error(tmp_path):
    with pytest.raises(DemoModelError, match="could not be loaded as a GALIP pipeline: FileNotFoundError"):
        load_pipeline(str(tmp_path))
    with pytest.raises(DemoModelError, match="neither a folder nor a Hub repo id"):
        load_pipeline(str(tmp_path / "missing" / "folder"))


def test_the_demo_needs_gradio_only_to_serve(monkeypatch, capsys, model_dir):
    done = subprocess.run(
        [sys.executable, "-c", "import sys, galip_diffusers.demo, galip_cli.common; "
         "sys.exit('gradio' in sys.modules)"],
        env={**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}, timeout=120,
    )
    assert done.returncode == 0  # importing the demo package does not import gradio
    monkeypatch.setattr(demo_launch.importlib.util, "find_spec", lambda name: None)
    assert demo_launch.main(["--model", model_dir]) == 1
    assert 'galip-demo: error: the demo needs gradio: pip install "galip-diffusers[demo]"' in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--max-images", "17"], "--max_images must be from 1 to 16"), (["--port", "70000"], "--port must be"),
    (["--concurrency-limit", "0"], "--concurrency_limit must be >= 1"),
    (["--max-images", "4", "--max-refine-work", "3"], "--max_refine_work must be from --max_images (4) to 800"),
])
def test_bad_demo_arguments_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        demo_launch.main(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_host_and_port_are_checked_before_the_model_loads(capsys):
    import socket

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        cases = [(["--port", "0"], "--port must be from 1 to 65535"), (["--host", ""], "--host is empty"),
                 (["--host", "nonexistent.invalid"], "--host 'nonexistent.invalid' is not an address"),
                 (["--port", str(busy.getsockname()[1])], "cannot listen on --host 127.0.0.1 --port")]
        for argv, message in cases:
            with pytest.raises(SystemExit) as info:
                demo_launch.main(["--model", "/nope/not/loaded", *argv])
            assert info.value.code == 2 and message in capsys.readouterr().err, argv
    finally:
        busy.close()


# ---------------------------------------------------------------------------------------------------- requests
def test_generate_is_timed_and_reproducible(backend):
    assert not backend.can_refine and "has none" in backend.refine_note
    result = backend.generate("a red circle", 5, 3, 0)
    assert len(result.images) == 3 and result.images[0].size == (256, 256)  # 32 px, shown x8
    assert 0 < result.seconds < 60 and f"in **{result.seconds:.3f} s** (wall time; model " in result.status
    assert "3 image(s) of 32x32 px" in result.status and "ms per image" in result.status
    model_seconds = float(result.status.split("model ")[1].split(" s,")[0])
    assert model_seconds <= result.seconds  # the wall time includes the prompt handling and the enlarging
    again = backend.generate("a red circle", 5, 3, 0)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(result.images, again.images))
    expected = backend.pipe("a red circle", num_images_per_prompt=3, generator=torch.Generator().manual_seed(5)).images
    assert upscale(expected, 256)[2].tobytes() == result.images[2].tobytes()
    other = backend.generate("a red circle", 6, 1, 0)
    assert other.images[0].tobytes() != result.images[0].tobytes()


def test_generate_warns_about_a_long_prompt_and_refuses_refinement_without_scorer(backend):
    result = backend.generate("a red circle " * 10, 0, 1, 1.5)
    assert len(result.warnings) == 1 and "102 tokens" in result.warnings[0] and "truncation 1.5" in result.status
    with pytest.raises(DemoInputError, match="not available"):
        backend.generate("a red circle", 0, 1, 0, True, 5)


def test_refine_with_clip_when_the_model_has_a_scorer(scorer_model_dir, one_thread):
    backend = DemoBackend.from_model(scorer_model_dir)
    try:
        assert backend.can_refine and "FuseDream" in backend.refine_note
        result = backend.generate("a red circle", 0, 2, 0, True, 3)
        assert len(result.images) == 2 and "Refined with CLIP (3 steps): mean scorer AugCLIP" in result.status
        plain = backend.generate("a red circle", 0, 2, 0, False, 3)
        assert "Refined" not in plain.status
        assert backend.refiner.generator is backend.pipe.generator  # the refiner shares the modules
        from galip_diffusers.demo import build_demo  # the page's toggle can be ticked

        blocks = build_demo(backend).blocks.values()
        refine = next(b for b in blocks if getattr(b, "elem_id", None) == "refine")
        assert refine.interactive is True and "FuseDream" in refine.info
    finally:
        backend.close()


def test_interpolate_makes_a_strip_and_a_gif_whose_ends_are_the_seeded_images(backend):
    result = backend.interpolate("a red circle", "a blue square", 3, 4, 5)
    assert len(result.frames) == 5 and "5 frames of 32x32 px" in result.status and "ms per frame" in result.status
    assert result.strip.size == (5 * 96 + 4 * 2, 96)  # 32 px frames shown x3
    with PIL.Image.open(result.gif_path) as gif:
        assert gif.n_frames == 8 and gif.size == (256, 256)
    for frame, (prompt, seed) in zip((result.frames[0], result.frames[-1]), (("a red circle", 3), ("a blue square", 4))):
        single = backend.pipe(prompt, generator=torch.Generator().manual_seed(seed), output_type="np").images[0]
        assert np.abs(np.asarray(frame, dtype=np.float32) / 255 - single).max() <= 1 / 255 + 1e-6
    assert not np.array_equal(np.asarray(result.frames[1]), np.asarray(result.frames[0]))


def test_old_gifs_are_deleted(backend, monkeypatch):
    from galip_diffusers.demo import backend as backend_module

    monkeypatch.setattr(backend_module, "KEEP_GIFS", 2)
    paths = [backend.interpolate("a", "b", 0, 1, 2).gif_path for _ in range(3)]
    assert not os.path.exists(paths[0]) and all(os.path.exists(p) for p in paths[1:])


def test_build_demo_without_a_browser(backend):
    """The page builds (gradio 4 to 6), its queue is on, and refinement is disabled for a model without scorer."""
    from galip_diffusers.demo import build_demo

    demo = build_demo(backend, concurrency_limit=2, max_queue=5)
    components = {getattr(block, "elem_id", None): block for block in demo.blocks.values()}
    assert {"prompt", "seed", "num-images", "truncation", "refine", "gallery", "status", "strip", "gif"} <= set(components)
    assert components["refine"].interactive is False and "has none" in components["refine"].info
    assert components["num-images"].maximum == MAX_IMAGES
    assert demo._queue.max_size == 5
    with pytest.raises(ValueError, match="concurrency_limit must be >= 1"):
        build_demo(backend, concurrency_limit=0)


def test_sliders_hold_one_image_caps_and_truncations_above_the_usual_range(backend, monkeypatch):
    """--max_images 1 (gradio needs min < max) and a model truncation above 3 build a page whose sliders hold them."""
    from galip_diffusers.demo import build_demo
    from galip_diffusers.demo.app import UI_MAX_TRUNCATION

    monkeypatch.setattr(backend, "max_images", 1)
    monkeypatch.setattr(type(backend), "default_truncation", property(lambda self: 5.0))
    components = {getattr(b, "elem_id", None): b for b in build_demo(backend).blocks.values()}
    assert components["num-images"].value == 1 and components["num-images"].interactive is False
    assert components["truncation"].value == 5.0 and components["truncation"].maximum == 5.0 > UI_MAX_TRUNCATION


def test_event_handlers_turn_errors_into_messages(backend, monkeypatch):
    import gradio as gr

    from galip_diffusers.demo import build_demo

    demo = build_demo(backend)
    fns = demo.fns.values() if isinstance(demo.fns, dict) else demo.fns
    handlers = {f.fn.__name__: f for f in fns if f.fn is not None}
    assert handlers["generate"].concurrency_limit == 1 and handlers["generate"].concurrency_id == "galip-model"
    assert handlers["interpolate"].concurrency_id == "galip-model"  # both tabs share one limit on the model
    generate, interpolate = handlers["generate"].fn, handlers["interpolate"].fn
    images, status = generate("a red circle", 0, 2, 0, False, 5)
    assert len(images) == 2 and "2 image(s)" in status
    with pytest.warns(UserWarning, match="Enter a prompt"):  # gr.Warning outside a request: a Python warning
        gallery, status = generate("", 0, 2, 0, False, 5)
    assert gallery == gr.update() and status == "**Not run:** Enter a prompt: it is empty."
    with pytest.warns(UserWarning, match="102 tokens"):
        _, status = generate("a " * 100, 0, 1, 0, False, 5)
    assert "⚠️ The prompt has 102 tokens" in status
    strip, gif, status = interpolate("a", "b", 0, 1, 3)
    assert strip.size == (3 * 96 + 2 * 2, 96) and gif.endswith(".gif") and "3 frames" in status
    monkeypatch.setattr(backend, "_interpolate", lambda request: 1 / 0)
    with pytest.raises(gr.Error, match="Interpolation failed: ZeroDivisionError: division by zero"):
        interpolate("a", "b", 0, 1, 3)


def test_the_sliders_start_from_the_models_settings_and_zero_turns_truncation_off(tmp_path, one_thread):
    from galip_core.settings import GALIPSettings
    from galip_diffusers.demo.backend import DISPLAY_SIZE

    pipe = tiny_pipeline()
    pipe.settings = GALIPSettings({"sampling": {"truncation": 0.3}, "refinement": {"num_steps": 5}})
    pipe.save_pretrained(tmp_path / "with-settings")
    backend = DemoBackend.from_model(str(tmp_path / "with-settings"))
    try:
        assert backend.default_truncation == 0.3 and backend.default_refine_steps(40) == 5
        off = backend.generate("a red circle", 0, 1, truncation=0).images[0]
        cut = backend.generate("a red circle", 0, 1, truncation=0.3).images[0]
        plain = tiny_pipeline()("a red circle", generator=torch.Generator().manual_seed(0)).images[0]
        assert np.array_equal(np.asarray(off), np.asarray(upscale([plain], DISPLAY_SIZE)[0]))  # the slider 0 wins
        assert not np.array_equal(np.asarray(off), np.asarray(cut))
    finally:
        backend.close()
    plain_backend = DemoBackend.from_model(str(tmp_path / "with-settings"))
    plain_backend.pipe.settings = GALIPSettings()
    try:
        assert plain_backend.default_truncation == 0.0 and plain_backend.default_refine_steps(40) == 20
    finally:
        plain_backend.close()
