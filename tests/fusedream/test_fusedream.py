"""GALIPFuseDreamPipeline: initialisation, over-parameterisation, search, composition, seeding and bad input."""

import pytest
import torch

from galip_diffusers.fusedream import augclip
from galip_diffusers.fusedream.masks import default_masks, fill_outside, outside_spread, prepare_masks
from galip_diffusers.fusedream.latent_search import OverparameterizedLatent, dynamic_barrier_direction, top_k_indices
from galip_diffusers.pipelines import GALIPFuseDreamPipeline, GALIPPipeline
from galip_diffusers.testing_utils import tiny_components, tiny_fusedream_pipeline, tiny_scorer

SMALL = dict(num_candidates=6, top_k=3, num_steps=3, num_augmentations=2, num_measure_augmentations=4)
OBJECTS = ["a red circle", "a blue square"]


pytestmark = pytest.mark.usefixtures("one_thread")


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def test_overparameterized_latent_starts_at_the_basis_mix():
    basis = torch.randn(2, 4, 8, generator=seeded())
    latent = OverparameterizedLatent(basis, clamp=2.0)
    torch.testing.assert_close(latent(), basis.mean(1))  # zero logits: uniform weights
    logits = torch.randn(2, 4, 8, generator=seeded(1))
    latent = OverparameterizedLatent(basis, init_logits=logits)
    weights = torch.softmax(logits, dim=1)
    torch.testing.assert_close(latent.weights.sum(1), torch.ones(2, 8))
    torch.testing.assert_close(latent(), (weights * basis).sum(1))
    latent.clamp = 0.5
    latent.project_()
    assert latent.basis.abs().max() <= 0.5


def test_dynamic_barrier_direction_decreases_the_constraint():
    grad_f, grad_g = [torch.tensor([[1.0, 0.0], [0.0, 1.0]])], [torch.tensor([[-1.0, 0.0], [1.0, 1.0]])]
    (v,) = dynamic_barrier_direction(grad_f, grad_g, alpha=0.5)
    assert (v * grad_g[0]).sum(1)[0] == pytest.approx(0.5)  # conflicting sample: lambda makes <v, grad_g> = alpha |g|^2
    torch.testing.assert_close(v[1], grad_f[0][1])  # already aligned sample: untouched


def test_initialisation_keeps_the_top_k_by_clip_score(pipe):
    embeds = pipe.encode_prompt(OBJECTS)
    score_text = pipe.encode_scorer_text(OBJECTS)
    z_basis, t_basis, scores, idx = pipe.select_candidates(embeds, score_text, 8, 3, seeded(), max_batch_size=5)
    assert z_basis.shape == (2, 3, 8) and t_basis.shape == (2, 3, 16) and scores.shape == (2, 8)
    assert torch.equal(idx, scores.argsort(dim=1, descending=True)[:, :3])
    with torch.no_grad():  # the kept conditions really have those scores
        rescored = augclip.clip_score(pipe.scorer, pipe._render(z_basis.flatten(0, 1), t_basis.flatten(0, 1)),
                                      score_text.repeat_interleave(3, 0)).view(2, 3)
    torch.testing.assert_close(rescored, scores.gather(1, idx), atol=1e-5, rtol=0)
    assert (rescored[:, 0] >= scores.max(1).values - 1e-5).all()
    # candidate 0 is the plain one-step sample of the same seed
    plain = GALIPPipeline.__call__(pipe, OBJECTS, generator=seeded(), output_type="latent").images
    torch.testing.assert_close(augclip.clip_score(pipe.scorer, plain, score_text), scores[:, 0], atol=1e-5, rtol=0)
    assert torch.equal(top_k_indices(torch.tensor([[0.1, 0.9, 0.5, 0.9]]), 2), torch.tensor([[1, 3]]))


def test_search_output_and_same_seed_same_result(pipe):
    a = pipe(OBJECTS, generator=seeded(3), output_type="pt", **SMALL)
    b = pipe(OBJECTS, generator=seeded(3), output_type="pt", **SMALL)
    c = pipe(OBJECTS, generator=seeded(4), output_type="pt", **SMALL)
    assert a.images.shape == (2, 3, 32, 32) and a.latents.shape == (2, 8) and a.text_embeds.shape == (2, 16)
    assert a.scores_before.shape == a.scores_after.shape == (2,) and a.score_history.shape == (3, 2)
    torch.testing.assert_close(a.images, b.images, atol=0, rtol=0)
    torch.testing.assert_close(a.scores_after, b.scores_after, atol=0, rtol=0)
    assert not torch.allclose(a.images, c.images)
    # the returned condition reproduces the image
    torch.testing.assert_close(pipe._render(a.latents, a.text_embeds), a.images * 2 - 1, atol=1e-5, rtol=0)


def test_score_rises_on_average_over_steps(pipe):
    text = pipe.encode_scorer_text(OBJECTS)
    measured = []

    def measure(p, step, timestep, kwargs):
        measured.append(augclip.measure_augclip(p.scorer, kwargs["images"], text, 32, seed=0))
        return {}

    out = pipe(OBJECTS, num_candidates=8, top_k=3, num_steps=15, num_augmentations=8, lr=0.05,
               num_measure_augmentations=32, generator=seeded(), output_type="pt",
               callback_on_step_end=measure, callback_on_step_end_tensor_inputs=["images"])
    measured = torch.stack(measured)  # (steps, B): fixed views, images before each update
    assert len(measured) == 15
    assert ((measured[1:] - measured[:-1]).mean(0) > 0).all()
    assert (measured[-5:].mean(0) > measured[:5].mean(0)).all()
    assert (out.scores_after > out.scores_before).all()


def test_truncation_bounds_every_candidate_noise(pipe):
    """`truncation` reaches the candidates of the search and of `compose`: every kept noise lies within +-t, and the
    basis mix (the starting latent) does too, while the untruncated draw of the same seed does not."""
    options = {**SMALL, "num_candidates": 32, "num_steps": 0}
    plain = pipe(OBJECTS, generator=seeded(), output_type="pt", **options)
    cut = pipe(OBJECTS, truncation=0.5, generator=seeded(), output_type="pt", **options)
    assert plain.latents.abs().max() > 0.5 and cut.latents.abs().max() <= 0.5
    scene = pipe.compose(OBJECTS, truncation=0.5, layer=1, generator=seeded(), output_type="pt", **options)
    assert scene.latents.shape == (1, 2, 8) and scene.latents.abs().max() <= 0.5


@pytest.mark.parametrize("optimize", ["noise", "text"])
def test_optimize_only_one_part(pipe, optimize):
    out = pipe(OBJECTS[0], optimize=optimize, lr=0.05, generator=seeded(), output_type="pt", **SMALL)
    init = pipe(OBJECTS[0], optimize=optimize, lr=0.05, generator=seeded(), output_type="pt", **{**SMALL, "num_steps": 0})
    frozen, moved = ("text_embeds", "latents") if optimize == "noise" else ("latents", "text_embeds")
    torch.testing.assert_close(getattr(out, frozen), getattr(init, frozen))
    assert not torch.allclose(getattr(out, moved), getattr(init, moved))
    torch.testing.assert_close(init.scores_before, init.scores_after)


def test_compose_with_one_hot_masks_reduces_to_single_latent(pipe):
    masks = torch.stack([torch.ones(8, 8), torch.zeros(8, 8)])
    out = pipe.compose(OBJECTS, masks=masks, layer=1, lr=0.05, generator=seeded(), output_type="pt", **SMALL)
    assert out.latents.shape == (1, 2, 8) and out.text_embeds.shape == (1, 2, 16) and out.masks.shape == (1, 2, 32, 32)
    single = pipe._render(out.latents[:, 0], out.text_embeds[:, 0])
    torch.testing.assert_close(out.images * 2 - 1, single, atol=1e-5, rtol=0)
    flipped = pipe.compose(OBJECTS, masks=masks.flip(0), layer=3, num_steps=0, generator=seeded(), output_type="pt",
                           **{k: v for k, v in SMALL.items() if k != "num_steps"})
    torch.testing.assert_close(flipped.images * 2 - 1, pipe._render(flipped.latents[:, 1], flipped.text_embeds[:, 1]),
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("options", [dict(closeness="generator", constraint="penalty", decode_condition="joint"),
                                     dict(closeness="scorer", constraint="barrier", mask_layout="center", layer=0)])
def test_compose_variants_blend_both_objects(pipe, options):
    out = pipe.compose(OBJECTS, num_images_per_prompt=2, generator=seeded(1), output_type="pt", lr=0.05,
                       **SMALL, **options)
    assert out.images.shape == (2, 3, 32, 32) and out.scores_after.shape == (2,)
    for j in range(2):  # the composite is not either object alone
        assert not torch.allclose(out.images * 2 - 1, pipe._render(out.latents[:, j], out.text_embeds[:, j]), atol=1e-3)
    torch.testing.assert_close(out.masks.sum(1), torch.ones(2, 32, 32))


def test_default_and_user_masks():
    split = default_masks(2, 16)
    torch.testing.assert_close(split.sum(0), torch.ones(16, 16))
    assert split[0, :, 0].min() > 0.99 and split[1, :, -1].min() > 0.99 and split[0, 0, 7] > 0.5 > split[0, 0, 8]
    center = default_masks(2, 16, "center")
    assert center[1, 8, 8] > 0.9 and center[1, 0, 0] < 0.2
    weights = prepare_masks(torch.zeros(2, 4, 4), 2, 3)  # all-zero: equal weights
    assert weights.shape == (3, 2, 4, 4) and torch.all(weights == 0.5)


def test_outside_spread_measures_what_spills_over_the_region():
    region = default_masks(2, 16)[:1].unsqueeze(0)  # (1, 1, 16, 16): the left half
    inside = torch.full((1, 3, 16, 16), -1.0)
    inside[:, :, 4:8, 2:6] = 1.0  # an object wholly in the left half
    spilling = torch.full((1, 3, 16, 16), -1.0)
    spilling[:, :, 4:8, 6:10] = 1.0  # the same object across the boundary
    assert outside_spread(inside, region).item() < 1e-3 < outside_spread(spilling, region).item()
    assert outside_spread(torch.rand(1, 3, 16, 16), torch.ones(1, 1, 16, 16)).item() == 0  # no outside at all


def test_candidate_scores_subtract_the_containment_penalty(pipe):
    embeds, score_text = pipe.encode_prompt(OBJECTS[:1]), pipe.encode_scorer_text(OBJECTS[:1])
    region = default_masks(2, 32)[:1].unsqueeze(0)
    _, _, plain, _ = pipe.select_candidates(embeds, score_text, 6, 2, seeded(), region=region)
    _, _, penalised, idx = pipe.select_candidates(embeds, score_text, 6, 2, seeded(), region=region,
                                                  containment_weight=2.0)
    with torch.no_grad():  # top_k = all 6: every candidate, in the order of its plain score
        z_all, t_all, _, _ = pipe.select_candidates(embeds, score_text, 6, 6, seeded(), region=region)
        order = plain.argsort(dim=1, descending=True)[0]
        images = pipe._render(z_all[0], t_all[0])
        spread = outside_spread(images, region.expand(6, -1, -1, -1))
        rescored = augclip.clip_score(pipe.scorer, fill_outside(images, region.expand(6, -1, -1, -1)),
                                      score_text.expand(6, -1))
    torch.testing.assert_close(rescored, plain[0, order], atol=1e-5, rtol=0)
    torch.testing.assert_close(penalised[0, order], rescored - 2.0 * spread, atol=1e-5, rtol=0)
    assert torch.equal(idx, penalised.argsort(dim=1, descending=True)[:, :2])


def test_compose_objective_adds_the_object_prompts_on_their_regions(pipe):
    region = default_masks(2, 32)[1:].unsqueeze(0)
    images = torch.rand(1, 3, 32, 32, generator=seeded(5)) * 2 - 1
    text = pipe.encode_scorer_text(OBJECTS[1:])
    with torch.no_grad():
        got = pipe._augclip_objective(text, 3, seeded(2), region=region)(images)
        want = augclip.augclip_score(pipe.scorer, fill_outside(images, region), text, 3, seeded(2))
    torch.testing.assert_close(got, want)
    joint = pipe.compose(OBJECTS, object_weight=0.0, generator=seeded(1), output_type="pt", **SMALL)
    both = pipe.compose(OBJECTS, object_weight=1.0, generator=seeded(1), output_type="pt", **SMALL)
    torch.testing.assert_close(joint.scores_before, both.scores_before)  # same start, same joint-prompt report
    assert not torch.allclose(joint.score_history, both.score_history)  # but another objective is climbed


def test_bad_input_gives_clear_errors(pipe):
    components = tiny_components()
    with pytest.raises(ValueError, match="requires a `scorer`"):
        GALIPFuseDreamPipeline(**components)
    same = tiny_scorer()
    same.vision_model = type(same.vision_model)(type(same.config.vision_config)(**{
        **same.config.vision_config.to_dict(), **components["generator"].config.vision_config}))
    same.vision_model.load_state_dict(components["generator"].vision_model.state_dict(), strict=False)
    with pytest.raises(ValueError, match="same vision weights"):
        GALIPFuseDreamPipeline(**{**components, "scorer": same})
    with pytest.raises(ValueError, match=r"`top_k` \(7\) cannot exceed `num_candidates` \(6\)"):
        pipe("a red circle", num_candidates=6, top_k=7)
    with pytest.raises(ValueError, match=r"`layer` \(the G-block .*\) must be an integer >= 0 and <= 3, got 4"):
        pipe.compose(OBJECTS, layer=4, **SMALL)
    with pytest.raises(ValueError, match=r"`masks` must have shape \(2, H, W\)"):
        pipe.compose(OBJECTS, masks=torch.ones(3, 8, 8), **SMALL)
    with pytest.raises(ValueError, match="non-negative"):
        pipe.compose(OBJECTS, masks=-torch.ones(2, 8, 8), **SMALL)
    with pytest.raises(ValueError, match="`containment_weight` must be a finite number >= 0"):
        pipe.compose(OBJECTS, containment_weight=-1.0, **SMALL)
    with pytest.raises(ValueError, match="`object_weight` must be a finite number >= 0"):
        pipe.compose(OBJECTS, object_weight=-0.5, **SMALL)
    with pytest.raises(ValueError, match="`optimize` must be one of"):
        pipe("a red circle", optimize="everything", **SMALL)
    with pytest.raises(ValueError, match="at least 2|>= 2 object prompts"):
        pipe.compose(["a red circle"], **SMALL)
    with pytest.raises(ValueError, match="single `torch.Generator`"):
        pipe("a red circle", generator=[seeded()], **SMALL)


def test_save_load_round_trip_and_plain_folder_with_scorer(pipe, tmp_path):
    from diffusers import DiffusionPipeline

    from galip_diffusers.testing_utils import tiny_pipeline

    pipe.save_pretrained(tmp_path / "fuse")
    loaded = DiffusionPipeline.from_pretrained(tmp_path / "fuse")
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded, GALIPFuseDreamPipeline) and loaded.scorer_tokenizer is None
    a = pipe("a red circle", generator=seeded(), output_type="pt", **SMALL)
    b = loaded("a red circle", generator=seeded(), output_type="pt", **SMALL)
    torch.testing.assert_close(a.images, b.images, atol=1e-6, rtol=0)
    tiny_pipeline().save_pretrained(tmp_path / "plain")  # a GALIP folder without scorer + a scorer passed in
    upgraded = GALIPFuseDreamPipeline.from_pretrained(tmp_path / "plain", scorer=tiny_scorer())
    assert isinstance(upgraded, GALIPFuseDreamPipeline)
    with pytest.raises(ValueError, match="scorer"):  # diffusers names the missing component
        GALIPFuseDreamPipeline.from_pretrained(tmp_path / "plain")


def test_eval_script_runs_end_to_end_on_a_tiny_pipeline(pipe, tmp_path):
    import json
    from collections import Counter

    from helpers.training_helpers import training_script

    module = training_script("eval_fusedream")
    pipe.save_pretrained(tmp_path / "model")
    report = module.main([
        "--model", str(tmp_path / "model"), "--num_prompts", "2", "--seeds", "0", "1", "--num_candidates", "3",
        "--top_k", "2", "--num_steps", "1", "--num_augmentations", "1", "--num_measure_augmentations", "2",
        "--compose_pairs", "1", "--output_dir", str(tmp_path / "results"),
    ])
    saved = json.loads((tmp_path / "results" / "fusedream.json").read_text())
    assert saved["text_following"]["held_out"]["accuracy"]["refined"]["n"] == 4
    assert set(saved["text_following"]["train"]["accuracy"]) == {"one_step", "selection", "refined"}
    assert 0 <= report["composition"]["success_rate"]["composed"]["both_objects"] <= 1
    assert "| held_out | refined |" in (tmp_path / "results" / "fusedream.md").read_text()
    # composition only, with another scorer folder and the composition options
    other = tiny_scorer(seed=7)
    other.save_pretrained(tmp_path / "other_scorer")
    only = module.main([
        "--model", str(tmp_path / "model"), "--scorer", str(tmp_path / "other_scorer"), "--splits", "--seeds", "0",
        "--num_candidates", "3", "--top_k", "2", "--num_steps", "1", "--num_augmentations", "1",
        "--num_measure_augmentations", "2", "--compose_pairs", "1", "--containment_weight", "2", "--object_weight",
        "0.5", "--compose_top_k", "1", "--compose_steps", "0", "--truncation", "0.5",
        "--output_dir", str(tmp_path / "only"),
    ])
    rates = only["composition"]["success_rate"]
    assert rates["composed"] == rates["composed_init"] and only["composition"]["num_steps"] == 0
    assert only["text_following"] == {} and only["scorer"].endswith("other_scorer")
    assert only["settings"]["truncation"] == 0.5 and report["settings"]["truncation"] is None
    assert only["composition"]["top_k"] == 1 and report["composition"]["top_k"] == 2  # --compose_top_k, else --top_k
    assert len(only["composition"]["per_image"]) == 1
    assert "| held_out |" not in (tmp_path / "only" / "fusedream.md").read_text()
    # the prompts cover the shapes evenly (an evaluation must not miss the weakest one) and are deterministic
    for split, n in (("train", 6), ("train", 9), ("held_out", 6)):
        prompts = module.pick_prompts(split, n)
        counts = Counter(module.shapes.parse_caption(p)["shape"] for p in prompts)
        assert len(set(prompts)) == n and max(counts.values()) - min(counts.values()) <= 1
        assert prompts == module.pick_prompts(split, n) and all(module.shapes.is_held_out(p) == (split == "held_out")
                                                                 for p in prompts)
    assert set(Counter(module.shapes.parse_caption(p)["shape"] for p in module.pick_prompts("train", 6))) == set(
        module.shapes.SHAPES)
    # the two-object check reads a synthetic two-object image correctly
    canvas = module.shapes.render_shape(16, "red", "circle", "white", center=(16, 32), as_array=True)
    canvas[:, 32:] = module.shapes.render_shape(16, "blue", "square", "white", center=(48, 32), as_array=True)[:, 32:]
    assert module.two_object_check(canvas, ("red", "circle"), ("blue", "square"))["both_objects"]
    assert not module.two_object_check(canvas, ("blue", "square"), ("red", "circle"))["both_colors"]


def test_compose_says_when_its_default_joint_prompt_is_cut():
    """galip-shapes: two captions joined with " and " make 20 tokens, over its tokenizer's 16. Here the objects
    (12 and 13 tokens) fit in 16 and their joint prompt (26) does not."""
    from diffusers.utils import logging
    from diffusers.utils.testing_utils import CaptureLogger

    pipe = tiny_fusedream_pipeline()
    pipe.tokenizer.model_max_length = 16
    options = {**SMALL, "num_candidates": 2, "top_k": 1, "num_steps": 0}
    loggers = {name: logging.get_logger(f"galip_diffusers.{name}")
               for name in ("fusedream.composition", "fusedream.augclip", "pipelines.pipeline_galip")}
    note, scorer, text = (CaptureLogger(loggers[name]) for name in loggers)
    with note, scorer, text:
        pipe.compose(OBJECTS, layer=1, generator=seeded(), output_type="pt", **options)
    assert "the default joint prompt" in note.out and "has 26 tokens, over the 16" in note.out
    assert "pass a shorter joint `prompt`" in note.out
    for out in (scorer.out, text.out):  # both text paths name the cut text of the joint prompt
        assert out.count("truncated") == 1 and "'a red circle and a blue square' has 26" in out
    with CaptureLogger(loggers["fusedream.composition"]) as note:
        pipe.compose(OBJECTS, prompt="red and blue", layer=1, generator=seeded(), output_type="pt", **options)
    assert note.out == ""


def test_fuse_dream_search_after_enabling_fast_inference_inside_inference_mode():
    """`enable_fast_inference()` inside `torch.inference_mode()` once made the generator's weights inference tensors:
    the search (autograd) then failed with "Inference tensors cannot be saved for backward"."""
    pipe = tiny_fusedream_pipeline()
    with torch.inference_mode():
        pipe.enable_fast_inference()
        pipe(OBJECTS[0], generator=seeded(), output_type="pt", **{**SMALL, "num_steps": 0})
    out = pipe(OBJECTS[0], lr=0.05, generator=seeded(), output_type="pt", **SMALL)
    assert torch.isfinite(out.images).all() and not any(p.is_inference() for p in pipe.generator.parameters())
