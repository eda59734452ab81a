"""Meta-learning over prompt learners: GRAM (Li et al., ICCV 2023), reimplemented from the paper.

* :mod:`.tasks`: cached pair embeddings, the cross-modal hierarchical clustering, N-way K-shot tasks;
* :mod:`.regulator`: the gradient regulators (``gate``, ``identity``);
* :mod:`.gram`: the bi-level meta-training and the ``gram.safetensors`` file;
* :mod:`.model`: ``GRAMModel``, any learner trained downstream from a GRAM file (``tools/train.py``).
"""

from .features import PairFeatures, encode_pairs
from .gram import (
    GRAM_FILE,
    GRAMFile,
    MetaLearner,
    MetaSettings,
    apply_init,
    check_gram_fits,
    read_gram_file,
    save_gram_file,
)
from .model import GRAMModel
from .regulator import REGULATORS, GateRegulator, GradientRegulator, IdentityRegulator, build_regulator
from .tasks import ClusterSettings, TaskSampler, TaskSettings, cross_modal_hierarchy

__all__ = [
    "GRAM_FILE", "REGULATORS", "ClusterSettings", "GRAMFile", "GRAMModel", "GateRegulator", "GradientRegulator",
    "IdentityRegulator", "MetaLearner", "MetaSettings", "PairFeatures", "TaskSampler", "TaskSettings",
    "apply_init", "build_regulator", "check_gram_fits", "cross_modal_hierarchy", "encode_pairs", "read_gram_file",
    "save_gram_file",
]
