"""Active prompt learning: choose which images to label, then prompt-tune on them (PCB, CVPR 2024).

* :mod:`.samplers`: random, entropy, coreset (k-centre greedy) and BADGE (k-means++ on gradient
  embeddings), on faiss, registered by name;
* :mod:`.pcb`: PCB's class-balanced filling of the labelled set from a sampler's candidates;
* :mod:`.loop`: the rounds (random round 0, selection, training from scratch through the engine,
  evaluation), resumable after the last finished round.

``tools/active.py CONFIG`` runs strategies x seeds and writes the table and the plot.
"""

from .loop import STATE_FILE, ActiveSettings, labelled_indices, read_state, run_active, score_pool
from .pcb import balance_entropy, class_histogram, pcb_select
from .samplers import SAMPLERS, Pool, register_sampler, sampler

__all__ = ["SAMPLERS", "STATE_FILE", "ActiveSettings", "Pool", "balance_entropy", "class_histogram",
           "labelled_indices", "pcb_select", "read_state", "register_sampler", "run_active", "sampler",
           "score_pool"]
