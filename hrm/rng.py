"""The random streams of the project: one id per use of the run's seed.

Every seeded draw is ``numpy.random.default_rng([STREAM_ID, seed, ...])``: the id keeps
the draws of one use independent of every other use of the same ``seed`` (the test cap
does not shift when the subsample size changes, the training order does not depend on
how many augmentations were drawn, ...). Reusing an id would correlate two uses, and
changing one changes every output drawn from it, so the values are fixed.

| id | name        | draws                                          | drawn in |
| -- | ----------- | ---------------------------------------------- | -------- |
| 1  | SUBSAMPLE   | the train puzzles kept                         | the subsample stage |
| 2  | TEST_CAP    | the test puzzles kept under ``--test-size``    | the subsample stage |
| 3  | AUGMENT     | the symmetries of the augmented examples       | the augment stage |
| 4  | HINTS       | the cells a hint example reveals               | the hints stage |
| 5  | TRAIN_ORDER | each epoch's group order and example per group | hrm/data.py (training stream) |
| 6  | EVAL_SAMPLE | the ``limit`` sample of an evaluation          | hrm/data.py (evaluation stream) |
| 7  | PERTURB     | evaluate's relabellings and symmetries         | hrm/evaluate/perturbations.py (``PERTURB_STREAM``) |
| 8  | TIER        | the cells left blank in evaluate's easy tiers  | the evaluate stage (``hrm.evaluate.TIER_STREAM``) |
| 9  | (unused)    |                                                |  |
| 10 | EASY_PROBE  | the cells left blank in the easy-puzzle probe  | hrm/analysis/easy.py (``EASY_STREAM``) |
| 11 | NOISE       | the initial-state noise of the analysis        | hrm/analysis/fixed_points.py (``NOISE_STREAM``) |
| 12 | VANILLA_SUBSAMPLE | the train puzzles of an independent vanilla draw (``data.vanilla_draw``) | the subsample stage |
| 13 | VANILLA_AUGMENT   | the symmetries of an independent vanilla draw  | the augment stage |

Not stream ids: the raw stage's builtin split seeds (``SeedSequence(seed).spawn``,
pipelines/raw.py) and torch's own seeds (hrm/train.py, hrm/analysis/traces.py).
"""

from __future__ import annotations

SUBSAMPLE = 1
TEST_CAP = 2
AUGMENT = 3
HINTS = 4
TRAIN_ORDER = 5
EVAL_SAMPLE = 6
PERTURB = 7
TIER = 8
EASY_PROBE = 10
NOISE = 11
VANILLA_SUBSAMPLE = 12
VANILLA_AUGMENT = 13
