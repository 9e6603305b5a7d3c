"""GALIPFuseDreamPipeline refuses bad numbers (naming the argument and its allowed range), oversized calls (before
allocating anything) and never returns a NaN image: corrupt weights and a diverged search each say so."""

import math
import re

import pytest
import torch

from galip_diffusers.fusedream.checks import SearchDivergedError, check_callback
from galip_diffusers.fusedream.latent_search import OverparameterizedLatent
from galip_diffusers.fusedream.options import SearchOptions
from galip_diffusers.testing_utils import tiny_fusedream_pipeline

SMALL = dict(num_candidates=4, top_k=2, num_steps=2, num_augmentations=2, num_measure_augmentations=2)
OBJECTS = ["a red circle", "a blue square"]
NAN, INF = math.nan, math.inf

pytestmark = pytest.mark.usefixtures("one_thread")

#: (option, bad value) of the search settings, shared by `__call__`, `compose` and `SearchOptions.check`
BAD_SEARCH_OPTIONS = [
    ("lr", INF), ("lr", NAN), ("lr", -INF), ("lr", 0.0), ("lr", -1e-3), ("lr", "0.01"), ("lr", True), ("lr", None),
    ("latent_noise", NAN), ("latent_noise", INF), ("latent_noise", -0.1),
    ("noise_clamp", NAN), ("noise_clamp", INF), ("noise_clamp", -1.0), ("noise_clamp", 0.0),
    ("candidate_text_noise", NAN), ("candidate_text_noise", INF), ("candidate_text_noise", -0.5),
    ("num_candidates", 0), ("num_candidates", 4.0), ("num_candidates", True), ("num_candidates", NAN),
    ("top_k", 0), ("top_k", 2.5), ("top_k", 5),
    ("num_steps", -1), ("num_steps", 1.5), ("num_steps", INF),
    ("num_augmentations", 0), ("num_augmentations", 2.0),
    ("num_measure_augmentations", 0), ("num_measure_augmentations", NAN),
    ("max_batch_size", 0), ("max_batch_size", None), ("max_batch_size", 1.5),
    ("truncation", NAN), ("truncation", -1.0), ("truncation", INF),
]


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def _id(case):
    return f"{case[0]}={case[1]!r}"


@pytest.mark.parametrize("case", BAD_SEARCH_OPTIONS, ids=_id)
def test_bad_search_option_is_refused_naming_it(pipe, case):
    name, value = case
    with pytest.raises(ValueError, match=rf"`{name}`.*(must|cannot)"):
        pipe("a red circle", generator=seeded(), output_type="pt", **{**SMALL, name: value})
    with pytest.raises(ValueError, match=rf"`{name}`.*(must|cannot)"):
        SearchOptions(**{**SMALL, name: value}).check()


@pytest.mark.parametrize("case", [c for c in BAD_SEARCH_OPTIONS if c[0] in ("lr", "noise_clamp", "latent_noise")
                                  and isinstance(c[1], float) and not math.isfinite(c[1])], ids=_id)
def test_compose_refuses_the_same_bad_search_options(pipe, case):
    name, value = case
    with pytest.raises(ValueError, match=rf"`{name}`.* must"):
        pipe.compose(OBJECTS, layer=1, generator=seeded(), output_type="pt", **{**SMALL, name: value})


@pytest.mark.parametrize("case", [
    ("barrier_alpha", NAN), ("barrier_alpha", INF), ("barrier_alpha", -0.5),
    ("closeness_weight", NAN), ("closeness_weight", INF), ("closeness_weight", -1.0), ("closeness_weight", "1"),
    ("containment_weight", NAN), ("containment_weight", INF), ("containment_weight", -1.0),
    ("object_weight", NAN), ("object_weight", INF), ("object_weight", -0.5),
    ("mask_layout", "diagonal"),
], ids=_id)
def test_bad_compose_argument_is_refused_naming_it(pipe, case):
    name, value = case
    masks = torch.stack([torch.ones(8, 8), torch.zeros(8, 8)])  # given masks: `mask_layout` is still checked
    with pytest.raises(ValueError, match=rf"`{name}` must"):
        pipe.compose(OBJECTS, masks=masks, layer=1, generator=seeded(), output_type="pt", **{**SMALL, name: value})


class NoWork:
    """Put on `select_candidates`: the call must be refused before any candidate is drawn."""

    def __call__(self, *args, **kwargs):
        raise AssertionError("the search started before the bad argument was refused")


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(callback_on_step_end=True), TypeError, r"`callback_on_step_end` must be None or a callable .*got bool"),
    (dict(callback_on_step_end_tensor_inputs="latents"), TypeError,
     r"`callback_on_step_end_tensor_inputs` must be a list of names among \['latents', .*got str 'latents' \(for one "
     r"name, pass \['latents'\]\)"),
    (dict(callback_on_step_end_tensor_inputs=["latents", "noise"]), ValueError,
     r"`callback_on_step_end_tensor_inputs` must be in \[.*\], got \['noise'\]"),
    (dict(prompts=["a red circle", None]), ValueError, r"`prompts` must be a list of >= 2 object prompts \(str\)"),
])  # fmt: skip
def test_compose_refuses_a_bad_callback_or_prompt_before_any_work(pipe, monkeypatch, kwargs, error, message):
    monkeypatch.setattr(pipe, "select_candidates", NoWork())
    call = {"prompts": OBJECTS, "layer": 1, "generator": seeded(), "output_type": "pt", **SMALL, **kwargs}
    with pytest.raises(error, match=message):
        pipe.compose(**call)


def test_compose_takes_a_numpy_integer_layer_as_the_int_it_is(pipe):
    import numpy as np

    small = {**SMALL, "num_steps": 0}
    as_int = pipe.compose(OBJECTS, layer=1, generator=seeded(), output_type="pt", **small)
    as_numpy = pipe.compose(OBJECTS, layer=np.int64(1), generator=seeded(), output_type="pt", **small)
    torch.testing.assert_close(as_numpy.images, as_int.images)
    too_deep = r"`layer` \(the G-block .*\) must be an integer >= 0 and <= 3, got (np\.int64\()?4"
    with pytest.raises(ValueError, match=too_deep):
        pipe.compose(OBJECTS, layer=np.int64(4), generator=seeded(), output_type="pt", **small)


def test_a_recommended_layer_the_model_lacks_names_the_settings_file(pipe, monkeypatch, tmp_path):
    from galip_core.settings import SETTINGS_NAME, GALIPSettings

    (tmp_path / SETTINGS_NAME).write_text('{"composition": {"layer": 999}}')
    monkeypatch.setattr(pipe, "settings", GALIPSettings.from_folder(tmp_path))
    monkeypatch.setattr(pipe, "select_candidates", NoWork())
    path = re.escape(str(tmp_path / SETTINGS_NAME))
    with pytest.raises(ValueError, match=rf"^composition.layer of {path} \(the model's recommended `layer`.*pass "
                                         r"`layer` to override it\) must be an integer >= 0 and <= 3, got 999"):
        pipe.compose(OBJECTS, generator=seeded(), output_type="pt", **SMALL)
    with pytest.raises(ValueError, match=r"^`layer` \(the G-block"):  # an explicit argument is named as such
        pipe.compose(OBJECTS, layer=5, generator=seeded(), output_type="pt", **SMALL)


def test_a_recommended_top_k_above_an_explicit_num_candidates_names_the_settings_file(pipe, monkeypatch, tmp_path):
    from galip_core.settings import SETTINGS_NAME, GALIPSettings

    (tmp_path / SETTINGS_NAME).write_text('{"refinement": {"num_candidates": 16, "top_k": 5}}')
    monkeypatch.setattr(pipe, "settings", GALIPSettings.from_folder(tmp_path))
    monkeypatch.setattr(pipe, "select_candidates", NoWork())
    with pytest.raises(ValueError, match=r"`num_candidates`=3 is below the model's recommended `top_k`=5 "
                                         r"\(refinement.top_k of .*galip_settings.json\)"):
        pipe("a red circle", num_candidates=3, num_steps=2, generator=seeded(), output_type="pt")


def test_callback_check_refuses_non_callables_and_bare_strings():
    allowed = ["latents", "scores"]
    check_callback(None, ("latents",), allowed)
    check_callback(print, ["latents", "scores"], allowed)
    with pytest.raises(TypeError, match="`callback_on_step_end` must be None or a callable"):
        check_callback("print", [], allowed)
    with pytest.raises(TypeError, match=r"for one name, pass \['scores'\]"):
        check_callback(None, "scores", allowed)
    with pytest.raises(TypeError, match="`callback_on_step_end_tensor_inputs` must be a list of names"):
        check_callback(None, None, allowed)


def test_top_k_above_num_candidates_names_both(pipe):
    with pytest.raises(ValueError, match=r"`top_k` \(5\) cannot exceed `num_candidates` \(4\)"):
        pipe("a red circle", **{**SMALL, "top_k": 5})


def test_allowed_edge_values_still_run(pipe):
    edges = dict(lr=1, latent_noise=0, candidate_text_noise=0.0, noise_clamp=None, truncation=0, max_batch_size=1,
                 num_steps=0, top_k=4)
    out = pipe("a red circle", generator=seeded(), output_type="pt", **{**SMALL, **edges})
    assert torch.isfinite(out.images).all()
    out = pipe.compose(OBJECTS, layer=1, barrier_alpha=0, closeness_weight=0, containment_weight=0, object_weight=0,
                       generator=seeded(), output_type="pt", **SMALL)
    assert torch.isfinite(out.images).all()


@pytest.mark.parametrize("name, value", [("num_candidates", 10**9), ("num_augmentations", 10**9),
                                         ("num_images_per_prompt", 10**9)])
def test_oversized_call_is_refused_up_front(pipe, known_memory, name, value):
    with pytest.raises(ValueError, match=rf"`{name}`={value} asks for .* GiB"):
        pipe("a red circle", generator=seeded(), output_type="pt", **{**SMALL, name: value})


@pytest.mark.parametrize("name", ["num_candidates", "num_augmentations"])
def test_oversized_composition_is_refused_up_front(pipe, known_memory, name):
    with pytest.raises(ValueError, match=rf"`{name}`={10**9} asks for"):
        pipe.compose(OBJECTS, layer=1, generator=seeded(), output_type="pt", **{**SMALL, name: 10**9})


def test_no_augmentation_check_without_search_steps(pipe, known_memory):
    """`num_augmentations` only matters to the search: with `num_steps=0` a large value costs nothing."""
    out = pipe("a red circle", generator=seeded(), output_type="pt", **{**SMALL, "num_steps": 0,
                                                                          "num_augmentations": 10**9})
    assert torch.isfinite(out.images).all()


@pytest.mark.parametrize("output_type", ["pt", "pil"])
def test_a_diverged_search_says_so_and_suggests_a_lower_lr(pipe, output_type):
    """A finite but far too large `lr` is accepted, the search runs away to NaN, and the error says so (the weights
    are fine: the initial images were finite) instead of returning black images."""
    with pytest.raises(SearchDivergedError, match=r"diverged after 1 of 2 step.*`lr`=1e\+30.*lower `lr`"):
        pipe("a red circle", lr=1e30, generator=seeded(), output_type=output_type, **SMALL)


def test_divergence_after_the_last_step_is_caught(pipe, monkeypatch):
    """NaN that only appears with the last update (no further step renders it) is caught on the final image."""
    real = OverparameterizedLatent.project_

    def blow_up(self):
        real(self)
        self.basis.data.fill_(math.nan)

    monkeypatch.setattr(OverparameterizedLatent, "project_", blow_up)
    with pytest.raises(SearchDivergedError, match=r"after 1 of 1 step"):
        pipe("a red circle", generator=seeded(), output_type="pt", **{**SMALL, "num_steps": 1})
    with pytest.raises(SearchDivergedError, match=r"after 1 of 1 step"):
        pipe.compose(OBJECTS, layer=1, generator=seeded(), output_type="pt", **{**SMALL, "num_steps": 1})
    assert issubclass(SearchDivergedError, RuntimeError)


@pytest.mark.parametrize("component", ["generator", "scorer", "text_encoder"])
def test_corrupt_weights_are_named_not_blamed_on_the_search(component, monkeypatch):
    """NaN weights (from finite inputs, before any step) give the weights error naming the component."""
    broken = tiny_fusedream_pipeline()
    module = getattr(broken, component)
    with torch.no_grad():
        next(p for p in module.parameters() if p.ndim == 2).fill_(math.nan)
    words = component.replace("_", " ")
    with pytest.raises(RuntimeError, match=rf"The {words}.*non-finite.*corrupt") as error:
        broken("a red circle", generator=seeded(), output_type="pt", **SMALL)
    assert not isinstance(error.value, SearchDivergedError)
    with pytest.raises(RuntimeError, match=rf"The {words}.*non-finite.*corrupt"):
        broken.compose(OBJECTS, layer=1, generator=seeded(), output_type="pt", **SMALL)


def test_a_perturbation_that_blows_up_names_latent_noise(pipe):
    with pytest.raises(SearchDivergedError, match=r"after 0 of 2 step.*smaller `latent_noise`"):
        pipe("a red circle", latent_noise=1e30, generator=seeded(), output_type="pt", **SMALL)


def test_far_out_candidate_inputs_are_reported_with_their_size(pipe):
    """A finite but huge `candidate_text_noise` makes the generator overflow: the error reports the inputs' size."""
    with pytest.raises(RuntimeError, match=r"generator.*non-finite.*\|text_embeddings\| 1\.\d+e\+30"):
        pipe("a red circle", candidate_text_noise=1e30, generator=seeded(), output_type="pt", **SMALL)


@pytest.mark.parametrize("kwargs", [dict(callback_on_step_end=True), dict(callback_on_step_end_tensor_inputs="latents")])
def test_call_refuses_a_bad_callback_before_any_work(pipe, monkeypatch, kwargs):
    monkeypatch.setattr(pipe, "select_candidates", NoWork())
    with pytest.raises(TypeError, match="callback_on_step_end"):
        pipe("a red circle", generator=seeded(), output_type="pt", **SMALL, **kwargs)
