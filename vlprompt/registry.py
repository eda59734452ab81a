"""vlprompt's registries, children of mmengine's roots so that configs can name vlprompt classes.

Each registry imports its ``locations`` the first time it is searched, so a config never needs an
import list to fill it.
"""

import mmengine.registry
from mmengine.registry import Registry

# Benchmark readers and the generic split-file reader (``vlprompt.datasets``).
DATASETS = Registry('dataset', parent=mmengine.registry.DATASETS, locations=['vlprompt.datasets'])

# Prompt learners (``vlprompt.learners``): CoOp, CoCoOp, MaPLe, ... built by name from configs.
LEARNERS = Registry('learner', parent=mmengine.registry.MODELS, locations=['vlprompt.learners'])
