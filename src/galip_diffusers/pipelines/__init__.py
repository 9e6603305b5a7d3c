from galip_diffusers.pipelines.pipeline_galip import GALIPPipeline
from galip_diffusers.pipelines.pipeline_galip_fusedream import GALIPFuseDreamPipeline, GALIPFuseDreamPipelineOutput

__all__ = ["GALIPFuseDreamPipeline", "GALIPFuseDreamPipelineOutput", "GALIPPipeline"]
