"""What the converted-model card says beyond the conversion itself: how the official checkpoints were trained, their
published evaluation figures, and speed figures (measured at conversion, or the package's reference measurement of the
official architecture).

The figures are the GALIP paper's (Tao et al., CVPR 2023) and those of the released checkpoints as the authors report
them; they are facts about the source weights, which the conversion reproduces to float precision.
"""

from __future__ import annotations

import os
from typing import Any, Optional

#: Training recipe of the released checkpoints (official code).
OFFICIAL_TRAINING = (
    "Trained by the GALIP authors with their official code: 8 GPUs x batch 64, Adam with betas (0.0, 0.9), learning "
    "rates 1e-4 (generator) and 4e-4 (discriminator); hinge loss on real, generated and mismatched pairs, MA-GP on the "
    "discriminator, and a CLIP similarity term (weight 4) for the generator; the CLIP ViT-B/32 inside the generator "
    "and the discriminator stays frozen; real images resized to 256x76/64, randomly cropped to 256 and flipped."
)

#: The released checkpoints, by their exact file names (https://github.com/tobran/GALIP; no CUB checkpoint was
#: released): training data and published figures. Only these files get the authors' recipe and figures in the card.
RELEASED_CHECKPOINTS: dict[str, dict[str, Any]] = {
    "pre_coco.pth": {
        "dataset": "MS-COCO 2014 (train split, about 83k images with 5 captions each)",
        "eval_results": [
            ("FID (COCO val, 30k)", "5.85", "paper"),
            ("FID (COCO val, 30k)", "5.01", "released checkpoint, as reported by the authors"),
            ("CLIP score (cosine, ViT-B/32)", "0.3338", "paper"),
            ("CLIP score (cosine, ViT-B/32)", "0.3379", "released checkpoint, as reported by the authors"),
        ],
    },
    "pre_cc12m.pth": {
        "dataset": "Conceptual 12M (CC12M)",
        "eval_results": [("FID, zero-shot on COCO val (30k)", "12.54", "paper and released checkpoint")],
    },
}
_RELEASED_NAMES = " or ".join(f"`{name}`" for name in RELEASED_CHECKPOINTS)
UNKNOWN_DATASET = f"unknown: not one of the released checkpoints ({_RELEASED_NAMES})"
UNKNOWN_TRAINING = (
    f"Not one of the released GALIP checkpoints ({_RELEASED_NAMES}, recognised by their exact file names), so how "
    "it was trained, and on what, is not recorded here; add it to this card if you know it."
)

#: The package's reference timing of the official architecture (README "Speed"): `galip-benchmark`, random weights
#: of the same geometry (speed does not depend on weight values), 224 px, batch 1.
REFERENCE_SPEED_MACHINE = (
    "a 2-core Intel Xeon CPU (AVX512), one torch thread, shared machine, torch 2.13 (measured with `galip benchmark` "
    "on random weights of this architecture, 2026-11-23)"
)
REFERENCE_SPEED = [
    {"setting": "float32, default forward", "batch_size": 1, "seconds_per_image": "0.79", "images_per_second": "1.27"},
    {"setting": "float32, `enable_fast_inference`", "batch_size": 1, "seconds_per_image": "0.51",
     "images_per_second": "1.96"},
    {"setting": "bfloat16, default forward", "batch_size": 1, "seconds_per_image": "0.41", "images_per_second": "2.44"},
    {"setting": "bfloat16, `enable_fast_inference`", "batch_size": 1, "seconds_per_image": "0.19",
     "images_per_second": "5.26"},
]  # fmt: skip


def released_checkpoint(checkpoint_path: str) -> Optional[str]:
    """The file name of ``checkpoint_path`` if it is exactly that of a released checkpoint (``pre_coco.pth``), else
    ``None``. Not a substring: ``my_galip_finetuned_on_coco.pth`` may hold anything, and a card meant for publishing
    must not give it the authors' training and figures."""
    name = os.path.basename(checkpoint_path)
    return name if name in RELEASED_CHECKPOINTS else None


def converted_card_fields(
    checkpoint_path: str, official_geometry: bool, speed_rows: Optional[list[dict[str, Any]]] = None,
    speed_machine: Optional[str] = None,
) -> dict[str, Any]:
    """Template fields of the training, evaluation and speed sections of ``galip_converted.md``.

    ``speed_rows``/``speed_machine``: figures measured at conversion; without them, the reference figures are used
    when the checkpoint has the official architecture (``official_geometry``)."""
    released = released_checkpoint(checkpoint_path)
    facts = RELEASED_CHECKPOINTS.get(released, {}) if released else {}
    if speed_rows:
        speed_note = "Measured at conversion on the converted weights (`galip convert --measure_speed`)."
    elif official_geometry:
        speed_rows, speed_machine = REFERENCE_SPEED, REFERENCE_SPEED_MACHINE
        speed_note = "Reference figures of this architecture; `galip convert --measure_speed` or `galip benchmark` " \
                     "measures your machine."
    else:
        speed_rows, speed_machine, speed_note = [], None, ""
    return {
        "training_dataset": facts.get("dataset", UNKNOWN_DATASET),
        "training_notes": f"{OFFICIAL_TRAINING} (Recognised as the released `{released}` by its file name: compare "
                          "the checkpoint sha256 above with your download.)" if released else UNKNOWN_TRAINING,
        "eval_results": facts.get("eval_results", []),
        "speed_results": speed_rows,
        "speed_machine": speed_machine,
        "speed_note": speed_note,
    }
