"""galip-diffusers: GALIP (Generative Adversarial CLIPs, CVPR 2023) as a Hugging Face diffusers plugin.

Importing the package registers its model and pipeline classes in the ``diffusers`` namespace, so that
``DiffusionPipeline.from_pretrained(folder)`` resolves a GALIP folder to :class:`GALIPPipeline` and loads its
``["diffusers", "GALIPGenerator"]`` components (diffusers only looks classes up in its own namespace). The pipelines
are also registered in ``diffusers.pipelines`` and the models in ``diffusers.models``.
"""

import diffusers as _diffusers
from diffusers import ConfigMixin, DiffusionPipeline, ModelMixin  # noqa: F401  (base-class names, see above)

from galip_core import __version__  # one version for both packages

from galip_diffusers.models import GALIPDiscriminator, GALIPGenerator
from galip_diffusers.pipelines import GALIPFuseDreamPipeline, GALIPFuseDreamPipelineOutput, GALIPPipeline

_REGISTERED = (GALIPGenerator, GALIPDiscriminator, GALIPPipeline, GALIPFuseDreamPipeline)
for _cls in _REGISTERED:
    setattr(_diffusers, _cls.__name__, _cls)
# diffusers' own tooling also looks classes up in its subpackages (e.g. the `ReturnNameVisitor` of its generic
# `test_encode_prompt_works_in_isolation` reads `diffusers.pipelines.<name>`)
for _cls in (GALIPPipeline, GALIPFuseDreamPipeline):
    setattr(_diffusers.pipelines, _cls.__name__, _cls)
for _cls in (GALIPGenerator, GALIPDiscriminator):
    setattr(_diffusers.models, _cls.__name__, _cls)

__all__ = [
    "GALIPDiscriminator",
    "GALIPFuseDreamPipeline",
    "GALIPFuseDreamPipelineOutput",
    "GALIPGenerator",
    "GALIPPipeline",
    "__version__",
]
