"""Training of the MedPix CLIP model (run on a GPU device; a tiny config runs on CPU).

OpenMP's threads wait passively here: by default they spin between parallel regions, and
on a shared 2-core host (more runnable processes than cores) a spinning thread keeps its
core from the one the next barrier waits for. A Lite0 fine-tune step took 4.4 to 7.8 s
that way against 1.6 to 1.8 s passive (``bench/bench_train_step.py``). Set before torch is
imported (libgomp reads it when it loads); an explicit ``OMP_WAIT_POLICY`` is kept.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
