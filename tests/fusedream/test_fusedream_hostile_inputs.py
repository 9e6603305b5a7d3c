"""compose() refuses, before any work and naming the argument, what it would otherwise accept and then get wrong: a
`decode_condition` that cannot act at the blend layer, and weights so large that a weighted term overflows to inf
(which used to surface as an error blaming the scorer's weights or `lr`)."""

import re

import pytest
import torch

from galip_diffusers.fusedream.checks import MAX_COMPOSE_WEIGHT, check_decode_condition

SMALL = dict(num_candidates=4, top_k=2, num_steps=2, num_augmentations=2, num_measure_augmentations=2)
OBJECTS = ["a red circle", "a blue square"]
WEIGHTS = ("barrier_alpha", "closeness_weight", "containment_weight", "object_weight")

pytestmark = pytest.mark.usefixtures("one_thread")


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


class NoWork:
    """Put on `select_candidates`: the call must be refused before any candidate is drawn."""

    def __call__(self, *args, **kwargs):
        raise AssertionError("the composition started before the bad argument was refused")


def test_joint_decoding_at_the_last_block_is_refused_naming_both_arguments(pipe, monkeypatch):
    last = pipe.generator.num_blocks
    monkeypatch.setattr(pipe, "select_candidates", NoWork())
    message = (rf"^`decode_condition`='joint' has no effect at `layer`={last}: .*no G-block runs after the blend .*"
               rf"pass a `layer` in \[0, {last - 1}\], or leave `decode_condition` at 'mix'\.$")
    with pytest.raises(ValueError, match=message):
        pipe.compose(OBJECTS, layer=last, decode_condition="joint", generator=seeded(), output_type="pt", **SMALL)


def test_joint_decoding_at_a_recommended_last_block_names_the_settings_file(pipe, monkeypatch, tmp_path):
    from galip_core.settings import SETTINGS_NAME, GALIPSettings

    last = pipe.generator.num_blocks
    (tmp_path / SETTINGS_NAME).write_text(f'{{"composition": {{"layer": {last}}}}}')
    monkeypatch.setattr(pipe, "settings", GALIPSettings.from_folder(tmp_path))
    monkeypatch.setattr(pipe, "select_candidates", NoWork())
    path = re.escape(str(tmp_path / SETTINGS_NAME))
    with pytest.raises(ValueError, match=rf"`decode_condition`='joint' has no effect at `layer`={last} \(composition"
                                         rf"\.layer of {path}, the model's recommended `layer`\)"):
        pipe.compose(OBJECTS, decode_condition="joint", generator=seeded(), output_type="pt", **SMALL)


def test_the_default_decode_condition_still_runs_at_the_last_block(pipe, monkeypatch):
    """The default ("mix") asks for nothing the layer cannot give, so callers that always pass it keep working; and
    at the last block it is the same image "joint" would have made (the reason "joint" is refused there)."""
    last = pipe.generator.num_blocks
    small = {**SMALL, "num_steps": 0}
    default = pipe.compose(OBJECTS, layer=last, generator=seeded(), output_type="pt", **small)
    explicit = pipe.compose(OBJECTS, layer=last, decode_condition="mix", generator=seeded(), output_type="pt", **small)
    torch.testing.assert_close(explicit.images, default.images)
    # the refused call, let through: the image "joint" would make
    monkeypatch.setattr("galip_diffusers.fusedream.composition.check_decode_condition", lambda *args: None)
    joint = pipe.compose(OBJECTS, layer=last, decode_condition="joint", generator=seeded(), output_type="pt", **small)
    torch.testing.assert_close(joint.images, default.images, atol=1e-5, rtol=0)


def test_joint_decoding_below_the_last_block_is_accepted_and_acts(pipe):
    layer, small = pipe.generator.num_blocks - 1, {**SMALL, "num_steps": 0}
    mix = pipe.compose(OBJECTS, layer=layer, generator=seeded(), output_type="pt", **small)
    joint = pipe.compose(OBJECTS, layer=layer, decode_condition="joint", generator=seeded(), output_type="pt", **small)
    assert not torch.allclose(mix.images, joint.images, atol=1e-4)


def test_decode_condition_check_lets_the_default_and_inner_layers_through():
    check_decode_condition("mix", 4, 4)
    check_decode_condition("joint", 3, 4)
    with pytest.raises(ValueError, match=r"`decode_condition`='joint' has no effect at `layer`=4"):
        check_decode_condition("joint", 4, 4)


@pytest.mark.parametrize("name", WEIGHTS)
@pytest.mark.parametrize("value", [1e308, MAX_COMPOSE_WEIGHT * 1.5])
def test_a_huge_weight_is_refused_naming_it_and_the_range(pipe, monkeypatch, name, value):
    monkeypatch.setattr(pipe, "select_candidates", NoWork())
    extra = {"constraint": "penalty"} if name == "closeness_weight" else {}
    message = rf"^`{name}` must be a finite number >= 0 and <= 1e\+06, got {re.escape(repr(value))}\.$"
    with pytest.raises(ValueError, match=message):
        pipe.compose(OBJECTS, layer=1, generator=seeded(), output_type="pt", **{**SMALL, **extra, name: value})


def test_the_largest_weights_still_make_finite_images(pipe):
    """The bound is not below what the search can take: every weight at the bound at once, both constraints."""
    top = {name: MAX_COMPOSE_WEIGHT for name in WEIGHTS}
    for constraint in ("barrier", "penalty"):
        out = pipe.compose(OBJECTS, layer=1, constraint=constraint, generator=seeded(), output_type="pt",
                           **SMALL, **top)
        assert torch.isfinite(out.images).all() and torch.isfinite(out.scores_after).all()
