"""Per-model recommended settings (galip_settings.json): parsing, defaults, explicit arguments, saving, the shipped
model's file, and the commands that read it."""

import json
import os

import pytest
import torch

from galip_diffusers import GALIPFuseDreamPipeline, GALIPPipeline
from galip_diffusers.pretrained import PRETRAINED_MODELS
from galip_diffusers.testing_utils import tiny_fusedream_pipeline, tiny_pipeline
from galip_core.settings import BUILTIN_DEFAULTS, SETTINGS_NAME, GALIPSettings, load_settings

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(num_augmentations=2, num_measure_augmentations=2)
OBJECTS = ["a red circle", "a blue square"]


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------------- the file
def test_defaults_resolve_model_values_over_builtin_and_explicit_over_both():
    settings = GALIPSettings({"composition": {"truncation": 0.5, "layer": 4}, "_comment": "a note"})
    assert settings.defaults("composition") == {**BUILTIN_DEFAULTS["composition"], "truncation": 0.5, "layer": 4}
    assert settings.defaults("refinement") == BUILTIN_DEFAULTS["refinement"]
    resolved = settings.resolve("composition", truncation=None, layer=2, top_k=None)
    assert resolved["truncation"] == 0.5 and resolved["layer"] == 2 and resolved["top_k"] == 5
    assert settings.resolve("composition", truncation=0)["truncation"] is None  # 0 turns the model's truncation off
    assert GALIPSettings().resolve("sampling", truncation=0.7) == {"truncation": 0.7}
    with pytest.raises(TypeError, match="lr"):
        settings.resolve("sampling", lr=1.0)


@pytest.mark.parametrize("content, match", [
    ({"generation": {}}, "unknown section 'generation'.*sampling"),
    ({"sampling": {"steps": 3}}, "unknown sampling setting 'steps'.*truncation"),
    ({"composition": {"top_k": "one"}}, "composition.top_k"),
    ({"composition": {"layer": -1}}, "composition.layer"),
    ({"refinement": [1, 2]}, "must be an object"),
    ({"prompts": {"examples": "dog face"}}, r"prompts.examples.*expected null or a list of at least two"),
    ({"prompts": {"examples": ["dog face"]}}, r"prompts.examples"),
    ({"prompts": {"examples": ["dog face", " "]}}, r"prompts.examples"),
    ({"refinement": {"num_steps": None}}, r"refinement.num_steps.*expected an integer >= 0"),
    ({"sampling": {"truncation": float("inf")}}, r"sampling.truncation .*inf.*expected null or a finite number >= 0"),
    ({"refinement": {"num_candidates": 0}}, r"refinement.num_candidates .*expected an integer >= 1"),
    ({"composition": {"top_k": 0}}, r"composition.top_k .*expected an integer >= 1"),
    ({"composition": {"num_candidates": 3}}, r"composition.top_k \(5\) cannot exceed composition.num_candidates \(3"),
])  # fmt: skip
def test_bad_settings_name_the_problem(content, match):
    with pytest.raises(ValueError, match=match):
        GALIPSettings(content)


def test_files_round_trip_and_a_folder_without_one_keeps_the_builtin_defaults(tmp_path):
    assert load_settings(str(tmp_path)).is_empty() and load_settings("user/some-hub-id").is_empty()
    settings = GALIPSettings({"refinement": {"num_steps": 5}, "_comment": "measured"})
    settings.save(str(tmp_path))
    assert GALIPSettings.from_folder(str(tmp_path)) == settings
    (tmp_path / SETTINGS_NAME).write_text("{not json")
    with pytest.raises(ValueError, match=SETTINGS_NAME):
        GALIPSettings.from_folder(str(tmp_path))
    (tmp_path / SETTINGS_NAME).write_bytes('{"_comment": "caf\u00e9"}'.encode("latin-1"))
    with pytest.raises(ValueError, match=rf"{tmp_path}.*{SETTINGS_NAME} is not UTF-8 text"):
        GALIPSettings.from_folder(str(tmp_path))
    (tmp_path / SETTINGS_NAME).write_text('{"sampling": {"truncation": -1}}')
    with pytest.raises(ValueError, match=rf"^{tmp_path}.*{SETTINGS_NAME}: sampling.truncation"):  # names the folder
        GALIPSettings.from_folder(str(tmp_path))


def test_the_shipped_model_carries_its_measured_settings():
    settings = GALIPSettings.from_folder(PRETRAINED_MODELS["galip-shapes"])
    assert settings.defaults("composition") == {"num_candidates": 256, "top_k": 1, "num_steps": 0, "truncation": 0.5,
                                                "layer": 4, "containment_weight": 0.0}
    assert settings.defaults("refinement") == {"num_candidates": 256, "top_k": 5, "num_steps": 5, "truncation": None}
    assert settings.defaults("sampling") == {"truncation": None}


# ---------------------------------------------------------------------------------------------------- pipelines
def test_sampling_truncation_comes_from_the_settings_and_explicit_wins():
    pipe = tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    plain = pipe("a red circle", generator=seeded(), output_type="pt").images
    cut = pipe("a red circle", generator=seeded(), truncation=0.3, output_type="pt").images
    assert not torch.equal(plain, cut)
    pipe.settings = GALIPSettings({"sampling": {"truncation": 0.3}})
    torch.testing.assert_close(pipe("a red circle", generator=seeded(), output_type="pt").images, cut)
    torch.testing.assert_close(pipe("a red circle", generator=seeded(), truncation=0, output_type="pt").images, plain)


def test_the_lite_runtime_reads_the_same_settings_as_the_pipeline(tmp_path):
    import numpy as np

    from galip_core.runtime import LitePipeline

    pipe = tiny_pipeline()
    pipe.settings = GALIPSettings({"sampling": {"truncation": 0.3}})
    pipe.save_pretrained(tmp_path / "m")
    lite, full = LitePipeline.from_pretrained(str(tmp_path / "m")), GALIPPipeline.from_pretrained(str(tmp_path / "m"))
    full.set_progress_bar_config(disable=True)
    assert lite.settings == full.settings
    seeded = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    for truncation in (None, 0, 1.5):
        expected = np.asarray(full("a red circle", generator=seeded(), truncation=truncation).images[0], np.int16)
        got = np.asarray(lite(["a red circle"], generator=seeded(), truncation=truncation)[0], np.int16)
        assert np.abs(got - expected).max() <= 1, truncation
    plain = np.asarray(lite(["a red circle"], generator=seeded(), truncation=0)[0], np.int16)
    assert np.abs(plain - np.asarray(lite(["a red circle"], generator=seeded())[0], np.int16)).max() > 1  # 0.3 used
    with pytest.raises(ValueError, match="used as they are"):
        lite(["a red circle"], latents=torch.zeros(1, 8), truncation=0.5)


def test_refinement_and_composition_defaults_equal_the_explicit_settings():
    pipe = tiny_fusedream_pipeline()
    pipe.set_progress_bar_config(disable=True)
    recommended = {"refinement": {"num_candidates": 4, "top_k": 2, "num_steps": 1, "truncation": 0.5},
                   "composition": {"num_candidates": 3, "top_k": 1, "num_steps": 0, "truncation": 0.5, "layer": 1,
                                   "containment_weight": 0.0}}
    explicit_refined = pipe("a red circle", generator=seeded(), output_type="pt", **SMALL, **recommended["refinement"])
    explicit_scene = pipe.compose(OBJECTS, generator=seeded(), output_type="pt", **SMALL, **recommended["composition"])
    pipe.settings = GALIPSettings(recommended)
    refined = pipe("a red circle", generator=seeded(), output_type="pt", **SMALL)
    scene = pipe.compose(OBJECTS, generator=seeded(), output_type="pt", **SMALL)
    torch.testing.assert_close(refined.images, explicit_refined.images)
    assert refined.score_history.shape[0] == 1
    torch.testing.assert_close(scene.images, explicit_scene.images)
    assert scene.score_history.shape[0] == 0  # num_steps=0 from the settings
    other = pipe.compose(OBJECTS, generator=seeded(), output_type="pt", layer=2, **SMALL)  # explicit wins
    assert not torch.equal(other.images, scene.images)


def test_save_pretrained_carries_the_settings_and_from_pipe_keeps_them(tmp_path):
    pipe = tiny_fusedream_pipeline()
    pipe.settings = GALIPSettings({"composition": {"layer": 1, "truncation": 0.5}})
    pipe.save_pretrained(str(tmp_path / "a"))
    assert json.loads((tmp_path / "a" / SETTINGS_NAME).read_text())["composition"] == {"layer": 1, "truncation": 0.5}
    loaded = GALIPFuseDreamPipeline.from_pretrained(str(tmp_path / "a"))
    assert loaded.settings == pipe.settings
    assert GALIPPipeline.from_pipe(loaded).settings == pipe.settings
    plain = tiny_pipeline()  # no settings: no file, and a stale one is removed
    plain.save_pretrained(str(tmp_path / "a"))
    assert not os.path.exists(tmp_path / "a" / SETTINGS_NAME)
    assert GALIPPipeline.from_pretrained(str(tmp_path / "a")).settings.is_empty()


def test_galip_generate_reads_the_sampling_truncation(tmp_path, capsys):
    from galip_cli.generate import main

    folder = tmp_path / "model"
    tiny_pipeline().save_pretrained(str(folder))

    def image(*extra):
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        assert main(["a red circle", "--model", str(folder), "--out", str(out), "--no_progress", *extra]) == 0
        return (out / "0000_00_seed0.png").read_bytes()

    plain, cut = image(), image("--truncation", "0.2")
    assert plain != cut
    GALIPSettings({"sampling": {"truncation": 0.2}}).save(str(folder))
    assert image() == cut and image("--engine", "diffusers", "--dtype", "fp32") == cut  # (auto: bf16 on AMX CPUs)
    assert image("--truncation", "0") == plain


def test_example_prompts_travel_with_the_model_to_the_demo(tmp_path):
    """``prompts.examples`` round-trips through a saved folder and becomes the demo's examples and starting prompts;
    a model without them gets the demo's built-in ones."""
    from galip_diffusers.demo.backend import BUILTIN_EXAMPLE_PROMPTS, DemoBackend
    from galip_diffusers.testing_utils import tiny_pipeline

    pipe = tiny_pipeline()
    assert DemoBackend(pipe).example_prompts == list(BUILTIN_EXAMPLE_PROMPTS)
    pipe.settings = GALIPSettings({"prompts": {"examples": ["dog face, noto style", "red heart"]}})
    pipe.save_pretrained(tmp_path)
    loaded = GALIPPipeline.from_pretrained(tmp_path)
    assert DemoBackend(loaded).example_prompts == ["dog face, noto style", "red heart"]


def test_builtin_defaults_are_the_pipelines_own():
    """galip_core cannot import the pipelines, so BUILTIN_DEFAULTS repeats their defaults: they must agree."""
    import inspect

    from galip_diffusers.fusedream.composition import COMPOSE_DEFAULTS, FuseDreamCompositionMixin
    from galip_diffusers.fusedream.options import SearchOptions

    search = SearchOptions()
    for key, value in BUILTIN_DEFAULTS["refinement"].items():
        assert getattr(search, key) == value, key
    compose = inspect.signature(FuseDreamCompositionMixin.compose).parameters
    for key, value in BUILTIN_DEFAULTS["composition"].items():
        expected = COMPOSE_DEFAULTS.get(key, getattr(search, key, None))
        if key in compose:  # layer, containment_weight: None in the signature means "the model's, else built-in"
            assert compose[key].default is None
            expected = {"layer": None, "containment_weight": 1.0}[key]
        assert value == expected, key
    assert inspect.signature(GALIPPipeline.__call__).parameters["truncation"].default is None


def test_the_shipped_settings_are_the_model_cards_recommended_calls():
    """The card's FuseDream snippet spells the recommended calls out; the settings file must say the same, so that the
    README's call with defaults is the card's call."""
    import ast
    import re

    with open(os.path.join(PRETRAINED_MODELS["galip-shapes"], "README.md"), encoding="utf-8") as f:
        card = f.read()
    code = re.search(r"## CLIP-guided refinement and composition.*?```python\n(.*?)```", card, flags=re.S).group(1)
    settings = GALIPSettings.from_folder(PRETRAINED_MODELS["galip-shapes"])
    calls = {}
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Call) and ast.unparse(node.func) in ("pipe", "pipe.compose"):
            section = "refinement" if ast.unparse(node.func) == "pipe" else "composition"
            calls[section] = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords
                              if kw.arg in BUILTIN_DEFAULTS[section]}
    assert set(calls) == {"refinement", "composition"}
    for section, keywords in calls.items():
        assert keywords == {k: settings.defaults(section)[k] for k in keywords}, section
    assert set(calls["composition"]) == set(BUILTIN_DEFAULTS["composition"])  # the card sets every one of them


def test_eval_fusedream_takes_unset_flags_from_the_settings():
    from helpers.training_helpers import training_script

    module = training_script("eval_fusedream")
    pipe = tiny_fusedream_pipeline()
    pipe.settings = GALIPSettings({"refinement": {"num_steps": 5}, "composition": {"truncation": 0.5, "layer": 1,
                                                                                    "top_k": 1, "num_steps": 0}})
    resolved = module.resolve_settings(pipe, module.parse_args(["--model", "m"]))
    assert resolved["refinement"] == {"num_candidates": 1000, "top_k": 5, "num_steps": 5, "truncation": None}
    assert resolved["composition"] == {"num_candidates": 256, "top_k": 1, "num_steps": 0, "truncation": 0.5, "layer": 1,
                                       "containment_weight": 1.0}
    explicit = module.resolve_settings(pipe, module.parse_args(["--model", "m", "--top_k", "3", "--truncation", "0"]))
    assert explicit["composition"]["top_k"] == 3 and explicit["composition"]["truncation"] is None
    assert module.search_options(module.parse_args(["--model", "m"]), explicit["composition"])["truncation"] == 0
