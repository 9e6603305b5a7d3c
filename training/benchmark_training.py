#!/usr/bin/env python
"""Training throughput and peak memory of one GALIP step (``galip_train_step``, the step train_galip.py runs).

Random weights and random data (no data loading), fp32 unless --mixed_precision. Reports the median step time and
images/s over the timed steps (after warm-up) and the process's peak memory: CPU RSS (``ru_maxrss``) and, on CUDA,
peak allocated memory.

    python training/benchmark_training.py --config full --batch_size 16 --steps 3
    python training/benchmark_training.py --config small --batch_size 64 --steps 10
    # the reconstruction anchor's cost, timed in one run: an extra G(0, s) pass, half the batch in the G pass, none
    python training/benchmark_training.py --config emoji --batch_size 32 --steps 5 --reconstruction separate in_batch off
"""

import argparse
import json
import os
import resource
import statistics
import time

import torch
from accelerate import Accelerator
from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPVisionConfig, CLIPVisionModelWithProjection

from galip_core.machine import cpu_name
from galip_diffusers import GALIPDiscriminator, GALIPGenerator
from galip_diffusers.models.clip_bridge import VIT_B_32_VISION_CONFIG
from galip_diffusers.training.setup import discriminator_config_from_clip, load_vision_weights_into_generator
from galip_diffusers.training.step import GALIPLossConfig, galip_train_step

#: "full": the official GALIP (NetG default config, CLIP ViT-B/32 text and vision towers, 256 px real images).
#: "small": a 64 px model of the size one would train on the captioned-shapes data set.
CONFIGS = {
    "full": {
        "vision": dict(VIT_B_32_VISION_CONFIG),
        "text": dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
                     projection_dim=512, vocab_size=49408),
        "generator": {},
        "resolution": 256,
    },
    "small": {
        "vision": dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                       image_size=64, patch_size=8, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=128),
        "text": dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                     projection_dim=128, vocab_size=1000),
        "generator": dict(z_dim=32, ngf=16, output_size=64, code_channels=32, mapping_mid_channels=16,
                          num_mapping_blocks=2, prompt_layers=[1, 2]),
        "resolution": 64,
    },
}
#: the generator config of the galip-emoji recipe (training/README.md), read here so that the benchmark times it
EMOJI_GENERATOR_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs",
                                      "galip-emoji-generator.json")
with open(EMOJI_GENERATOR_CONFIG) as _f:
    #: "emoji": the galip-emoji run (that generator config on the emoji bridge CLIP's sizes)
    CONFIGS["emoji"] = {
        **CONFIGS["small"],
        "text": {**CONFIGS["small"]["text"], "num_hidden_layers": 3, "vocab_size": 4132},
        "generator": json.load(_f),
    }

#: the reconstruction anchor (``--reconstruction_weight 10``) as timed by ``--reconstruction``: off, an extra
#: ``G(0, s)`` pass over the batch, or half the batch anchored inside the one G pass (``--reconstruction_fraction``)
RECONSTRUCTION = {
    "off": GALIPLossConfig(),
    "separate": GALIPLossConfig(reconstruction_weight=10.0),
    "in_batch": GALIPLossConfig(reconstruction_weight=10.0, reconstruction_fraction=0.5),
}


def build(config_name: str):
    config = CONFIGS[config_name]
    vision = CLIPVisionModelWithProjection(CLIPVisionConfig(**config["vision"])).eval().requires_grad_(False)
    vocab = config["text"]["vocab_size"]
    text_config = CLIPTextConfig(hidden_act="quick_gelu", layer_norm_eps=1e-5, max_position_embeddings=77,
                                 bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1,
                                 **config["text"])
    text = CLIPTextModelWithProjection(text_config).eval().requires_grad_(False)
    generator = GALIPGenerator(cond_dim=config["text"]["projection_dim"], vision_config=config["vision"],
                               **config["generator"])
    load_vision_weights_into_generator(generator, vision)
    discriminator = GALIPDiscriminator(**discriminator_config_from_clip(vision.config, config["text"]["projection_dim"]))
    return generator, discriminator, vision, text, config["resolution"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="small")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3, help="Timed steps per setting (after --warmup).")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default="no")
    parser.add_argument("--reconstruction", nargs="+", choices=list(RECONSTRUCTION), default=["off"],
                        help="reconstruction-anchor settings to time, one after the other in this run (ratios are "
                        "against the first): off, separate (an extra G(0, s) pass) or in_batch (fraction 0.5)")
    parser.add_argument("--output", default=None, help="Append each result as a JSON line to this file.")
    args = parser.parse_args()

    accelerator = Accelerator(mixed_precision=args.mixed_precision)
    torch.manual_seed(0)
    generator, discriminator, vision, text, resolution = build(args.config)
    opt_g = torch.optim.Adam(generator.learnable_parameters(), lr=1e-4, betas=(0.0, 0.9))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=4e-4, betas=(0.0, 0.9))
    generator, discriminator, opt_g, opt_d = accelerator.prepare(generator, discriminator, opt_g, opt_d)
    vision.to(accelerator.device)
    text.to(accelerator.device)
    device, batch = accelerator.device, args.batch_size
    z_dim = accelerator.unwrap_model(generator).config.z_dim
    images = torch.rand(batch, 3, resolution, resolution, device=device) * 2 - 1
    input_ids = torch.randint(0, text.config.vocab_size - 2, (batch, 77), device=device)

    def step(loss_config: GALIPLossConfig):
        galip_train_step(accelerator, generator, discriminator, vision, text, opt_g, opt_d, images, input_ids,
                         torch.randn(batch, z_dim, device=device), loss_config)
        if device.type == "cuda":
            torch.cuda.synchronize()

    # Settings are timed step by step in turn (round robin), and each reports its median step: on a shared or
    # throttled machine, a slow minute then hits every setting alike instead of skewing one.
    for reconstruction in args.reconstruction:
        for _ in range(args.warmup):
            step(RECONSTRUCTION[reconstruction])
    seconds = {name: [] for name in args.reconstruction}
    for _ in range(args.steps):
        for reconstruction in args.reconstruction:
            start = time.perf_counter()
            step(RECONSTRUCTION[reconstruction])
            seconds[reconstruction].append(time.perf_counter() - start)
    first = statistics.median(seconds[args.reconstruction[0]])
    for reconstruction in args.reconstruction:
        per_step = statistics.median(seconds[reconstruction])
        result = {
            "config": args.config,
            "batch_size": batch,
            "reconstruction": reconstruction,
            "mixed_precision": args.mixed_precision,
            "device": str(device),
            "torch_threads": torch.get_num_threads(),
            "cpu": cpu_name(),
            "cpu_count": os.cpu_count(),
            "seconds_per_step": round(per_step, 3),
            "time_vs_first": round(per_step / first, 3),
            "images_per_second": round(batch / per_step, 3),
            "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
            "generator_learnable_params": sum(
                p.numel() for p in accelerator.unwrap_model(generator).learnable_parameters()),
        }
        if device.type == "cuda":
            result["peak_cuda_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        print(json.dumps(result))
        if args.output:
            with open(args.output, "a") as f:
                f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
