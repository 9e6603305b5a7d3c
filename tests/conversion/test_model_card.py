"""Model card templates: rendered with huggingface_hub's ModelCard, metadata parsed back, every section present, and
the card's usage code run against a tiny saved pipeline folder."""

import os
import re

import pytest
from helpers.card_helpers import section_code
from huggingface_hub import ModelCard

from galip_diffusers.conversion.card import converted_card_fields
from galip_diffusers.conversion.model_card import find_template, render_model_card, template_variables
from galip_diffusers.benchmark.speed_figures import SpeedRow, machine_description, measure_pipeline_speed
from galip_diffusers.testing_utils import tiny_pipeline

REPO_ID = "someone/galip-shapes"
SECTIONS = ("## Usage", "## Training", "## Evaluation", "## Speed", "## Limitations", "## License")
SPEED = [SpeedRow("float32, cpu", 1, 0.0123, 81.3, 3).as_card_row(), SpeedRow("float32, cpu", 8, 0.004, 250, 3).as_card_row()]


def trained_fields(**overrides):
    """Every field of galip_trained.md, as train_galip.py (or whoever renders the shipped model's card) passes them."""
    fields = dict(
        model_name="galip-shapes", repo_path=REPO_ID, example_prompt="a large red circle on a white background",
        init_description="Trained from scratch on two small CLIPs trained on the shapes captions.",
        dataset="`galip_diffusers.data.shapes` (100,000 images)", num_examples=100_000, steps=20_000, epochs=13,
        images_seen=1_280_000, skipped_images=0, effective_batch_size=64, train_batch_size=64, num_processes=1,
        gradient_accumulation_steps=1, resolution=64, output_size=64, mixed_precision="no",
        augmentation="resize the shorter side, centre crop, random flip",
        hyperparameters=[("learning_rate_g", 1e-4), ("learning_rate_d", 4e-4)], training_time="2 h on 1 x cpu",
        throughput="170 images/s", sim_weight=4.0, magp_weight=2.0, magp_power=6.0, adam_beta1=0.0, adam_beta2=0.9,
        validation_samples=[{"prompt": "a red circle", "path": "validation/step_0020000.png"}],
        eval_results=[("shape accuracy (pixel evaluator)", "0.97", "2,000 images")],
        speed_results=SPEED, speed_machine="CPU: Intel Xeon (2 cores, 1 torch thread), torch 2.13.0, Linux",
        max_prompt_tokens=77, limitations=["Held-out pairs (purple triangles, orange circles) are harder."],
        license_note="`apache-2.0`.",
    )  # fmt: skip
    return {**fields, **overrides}


def converted_fields(**overrides):
    fields = dict(
        model_name="GALIP (pre_coco), diffusers format", converter="galip-diffusers 0.1.0 (galip-convert)",
        source_checkpoint="pre_coco.pth", source_sha256="0" * 64, source_notes="Official GALIP weights.",
        clip_source="OpenAI ViT-B-32.pt", clip_sha256=None, dtype="float32", clip_preprocess="official",
        include_discriminator=True, components=[("generator", "`GALIPGenerator`")], repo_path=REPO_ID,
        example_prompt="a photo of a red bus", license_text="CC BY-NC-SA 4.0",
        **converted_card_fields("pre_coco.pth", official_geometry=True),
    )  # fmt: skip
    return {**fields, **overrides}


def shapes_fields(**overrides):
    """Every field of galip_shapes.md, as training/package_shapes_model.py passes them."""
    speed = "| setting | batch size | ms per image |\n| --- | --- | --- |\n| float32, cpu, fast path | 1 | 5.1 |\n\nCPU: Intel Xeon"
    fields = dict(
        model_name="galip-shapes", repo_path=REPO_ID, source="`checkpoint-6000` (EMA weights)", steps=6000,
        training_summary={"steps": 6000, "images_per_second": 30.1}, evaluation_table="| split | shape |\n| --- | --- |\n| seen | 90% |",
        speed_table=speed, num_images=1000, size_mb="12.30", limitations=["Shape is the weakest attribute."],
        history=["4,000 steps from scratch.", "2,000 more steps with a new discriminator."],
    )  # fmt: skip
    return {**fields, **overrides}


FIELDS = {"galip_trained": trained_fields, "galip_converted": converted_fields, "galip_shapes": shapes_fields}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("card") / "tiny"
    tiny_pipeline().save_pretrained(folder)
    return str(folder)


@pytest.mark.parametrize("template", sorted(FIELDS))
def test_the_example_fields_cover_every_template_variable(template):
    assert template_variables(template) == set(FIELDS[template]())


@pytest.mark.parametrize("template", sorted(FIELDS))
def test_render_and_parse_the_metadata_back(template, tmp_path):
    card = render_model_card(template, license="apache-2.0", tags=["gan"], datasets=["someone/shapes", "./local/data"],
                             base_model="openai/clip-vit-base-patch32", **FIELDS[template]())
    path = tmp_path / "README.md"
    card.save(path)
    loaded = ModelCard.load(path)
    data = loaded.data
    assert data.library_name == "diffusers" and data.pipeline_tag == "text-to-image" and data.license == "apache-2.0"
    assert data.tags == ["galip", "text-to-image", "diffusers", "gan"]
    assert data.datasets == ["someone/shapes"]  # the local path stays out of the metadata
    assert data.base_model == "openai/clip-vit-base-patch32"
    text = loaded.text
    positions = [text.index(section) for section in SECTIONS]
    assert positions == sorted(positions)  # every section, in reading order
    speed = text.split("## Speed", 1)[1].split("\n## ", 1)[0]
    assert re.search(r"\| float32.* \| 1 \| \d", speed) and ("CPU: " in speed or "Intel Xeon" in speed)
    assert "- " in text.split("## Limitations", 1)[1].split("\n## ", 1)[0]


def test_trained_card_sections(tmp_path):
    text = render_model_card("galip_trained", license="apache-2.0", **trained_fields()).text
    assert "| float32, cpu | 8 | 0.004 | 250 |" in text and "median of 3 calls" in text
    assert "- Held-out pairs (purple triangles, orange circles) are harder." in text
    assert "| shape accuracy (pixel evaluator) | 0.97 | 2,000 images |" in text
    assert "| real-image resolution | 64 (resize the shorter side, centre crop, random flip) |" in text
    empty = render_model_card("galip_trained", **trained_fields(speed_results=None, eval_results=None)).text
    assert "Not measured at the end of training. `galip benchmark --galip someone/galip-shapes" in empty
    assert "Not evaluated at the end of training" in empty


def test_shapes_card_lists_the_training_history():
    text = render_model_card("galip_shapes", **shapes_fields()).text
    assert "Training history:\n\n- 4,000 steps from scratch.\n- 2,000 more steps with a new discriminator.\n" in text
    assert "Training history" not in render_model_card("galip_shapes", **shapes_fields(history=None)).text


def test_converted_card_states_the_published_and_reference_figures():
    text = render_model_card("galip_converted", **converted_fields()).text
    assert "| FID (COCO val, 30k) | 5.85 | paper |" in text and "MS-COCO 2014" in text
    assert "| float32, `enable_fast_inference` | 1 | 0.51 |" in text and "2-core Intel Xeon CPU" in text
    unknown = render_model_card("galip_converted", **converted_fields(**converted_card_fields("mine.pth", False))).text
    assert "No published figures are recorded" in unknown and "Not measured; `galip benchmark" in unknown


@pytest.mark.parametrize("name", ["my_galip_finetuned_on_coco_epoch3.pth", "pre_cocoa.pth", "pre_coco.pth.bak",
                                  "PRE_COCO.pth", "pre_cub.pth", "cc12m_ft.pth"])
def test_only_the_released_files_get_the_authors_training_and_figures(name):
    """A file is recognised by its exact released name, not by a word in it: a fine-tuned "..._coco_..." checkpoint
    must not be published with the authors' recipe, data set and FID."""
    text = render_model_card("galip_converted", **converted_fields(**converted_card_fields(f"/x/{name}", True))).text
    assert "Trained by the GALIP authors" not in text and "MS-COCO" not in text and "CC12M" not in text
    assert "5.01" not in text and "12.54" not in text and "No published figures are recorded" in text
    assert "Not one of the released GALIP checkpoints (`pre_coco.pth` or `pre_cc12m.pth`" in text
    assert "| training data | unknown: not one of the released checkpoints" in text
    released = render_model_card("galip_converted", **converted_fields(**converted_card_fields("/x/pre_cc12m.pth",
                                                                                                True))).text
    assert "Trained by the GALIP authors" in released and "| training data | Conceptual 12M (CC12M) |" in released
    assert "| FID, zero-shot on COCO val (30k) | 12.54 |" in released and "released `pre_cc12m.pth`" in released


def test_the_discriminator_preprocessing_row_only_with_a_discriminator():
    text = render_model_card("galip_converted", **converted_fields(clip_preprocess="standard")).text
    assert "| discriminator CLIP preprocessing | `standard` |" in text
    text = render_model_card("galip_converted", **converted_fields(include_discriminator=False)).text
    assert "| discriminator included | no |" in text and "CLIP preprocessing" not in text


def test_a_missing_field_is_named():
    fields = trained_fields()
    del fields["speed_machine"], fields["limitations"]
    with pytest.raises(ValueError, match=r"'galip_trained.md' needs the fields \['limitations', 'speed_machine'\]"):
        render_model_card("galip_trained", **fields)
    with pytest.raises(FileNotFoundError, match="not_a_template.md"):
        find_template("not_a_template")


@pytest.mark.parametrize("template", sorted(FIELDS))
def test_the_usage_code_runs_against_a_saved_pipeline(template, model_dir, tmp_path, monkeypatch, one_thread):
    code = section_code(render_model_card(template, **FIELDS[template]()).text, "## Usage")
    assert f'"{REPO_ID}"' in code
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code.replace(REPO_ID, model_dir), f"<{template} usage>", "exec"), namespace)  # noqa: S102
    assert len(namespace["images"]) == 4 and namespace["images"][0].size == (32, 32)
    assert os.path.isfile(tmp_path / "galip_sample.png")


def test_measured_speed_rows_and_machine(one_thread):
    pipe = tiny_pipeline()
    rows = measure_pipeline_speed(pipe, batch_sizes=(1, 4), repeats=2, warmup=0)
    assert [r.batch_size for r in rows] == [1, 4] and all(r.seconds_per_image > 0 for r in rows)
    assert rows[1].images_per_second == pytest.approx(1 / rows[1].seconds_per_image)
    assert rows[0].setting == "float32, cpu" and rows[0].as_card_row()["repeats"] == 2
    assert machine_description("cpu").startswith("CPU: ") and "torch " in machine_description("cpu")
    with pytest.raises(ValueError, match="batch_sizes must be integers >= 1"):
        measure_pipeline_speed(pipe, batch_sizes=(0,))
