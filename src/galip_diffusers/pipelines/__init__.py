from .pipeline_galip import GALIPPipeline
from .pipeline_galip_fusedream import GALIPFuseDreamPipeline, GALIPFuseDreamPipelineOutput

__all__ = ["GALIPFuseDreamPipeline", "GALIPFuseDreamPipelineOutput", "GALIPPipeline"]
