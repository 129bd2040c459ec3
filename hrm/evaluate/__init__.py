"""Evaluation: batched inference over checkpoints x perturbations, voting, a verifier, calibration, tiers.

Pure library (arrays and tensors in and out); ``hrm evaluate`` (pipelines/evaluate.py) reads
checkpoints and datasets and writes the files. docs/reference-semantics.md §2, §6 and §9.

The pieces
----------
- :class:`Perturbations`: P input perturbations, each applied to input and label alike
  (the same P for every puzzle; pass 0 is always the identity):
  ``shift`` the fork's 9 cyclic digit shifts (token t -> ((t - 2 + p) mod 9) + 2; the fork =
  the Augmented HRM paper's code, README "Reference code"),
  ``relabel`` random digit relabellings, ``symmetry`` random full Sudoku symmetries
  (relabelling + transpose + band/row + stack/column orders). Seeded.
- :class:`Engine`: K models -> per pass the final answer, the halting decision, Q values,
  per-cell confidences and the exact correctness after every ACT segment. Each checkpoint
  sees all P perturbed copies of a batch of puzzles as one batch (``max_rows`` caps the rows
  per forward). Paper semantics: every row runs halt_max_steps segments and ``halted`` is
  the model's own decision at the last one (its architecture's halt signal,
  hrm.model.act.ACTModel.halt_signal: HRM q_halt > q_continue, TRM q_halt > 0). ``early_stop=True`` is a
  different setting: a row stops at the first segment where the model halts (its answer
  is that segment's), rows that never halt stop at halt_max_steps with ``halted`` False.
- :func:`evaluate_puzzles`: streams puzzles through the engine in batches and collects an
  :class:`EvalResult`, from which :meth:`EvalResult.summary` and :meth:`EvalResult.tables`
  give the numbers.

Exact definitions (N puzzles, K checkpoints in the given order, P passes)
-----------------------------------------------------------------------
- A pass is *correct* when its final prediction equals the label on every labelled cell
  (all 81 for Sudoku). Compared in the perturbed space, which is the same as comparing the
  answer mapped back to original digits and cells (perturbations are bijections).
- *baseline*: the primary checkpoint (the last of the K) on pass 0 (unperturbed): the
  plain single-model number (exact accuracy, official ``accuracy`` = mean per-puzzle
  fraction of labelled cells right, blank-cell accuracy = right blank cells / blank cells,
  halting rate, ``q_halt_accuracy`` = mean of (q_halt >= 0) == correct as the official metric,
  i.e. sigmoid(q_halt) >= 0.5).
- ``paper_vote`` (the fork's rule, reads the labels): for checkpoint k, count the passes
  that are correct AND halted; k solves the puzzle when 2 x counted > number of halted
  passes of k (strictly more than half; no halted pass -> not solved). The puzzle is solved
  when ANY checkpoint solves it.
- ``label_free`` (reads no label): every pass's answer is mapped back to original digits
  and cells. Pool = the passes that halted; if none halted, all passes. Within the pool,
  if some answer passes the verifier (a valid complete grid that agrees with the givens),
  only verified answers stay eligible. Among eligible answers pick the one given by the most
  pool passes; ties -> the highest mean sigmoid(q_halt) over the pool passes that gave it;
  remaining ties -> the answer of the first pass in (checkpoint, pass) order. Accuracy of
  that single answer against the label.
- ``first_to_halt`` (reads no label, no verifier; after "Speed is Confidence", arXiv 2601.19085):
  a pass's halting segment = the first segment s = 1..S whose halt signal fires (the engine's
  ``segment_halted``, its architecture's rule), its answer = the argmax of that segment's logits
  (what ``early_stop=True`` returns). Choose the pass with the smallest halting segment, a pass that
  never halts ranking after one that halts at S and read at S; ties -> the highest sigmoid(q_halt)
  at that segment (the engine's ``segment_q_halt``; compared as q_halt: the same order, no float
  saturation; NaN lowest); remaining ties -> the first pass in (checkpoint, pass) order. No pass
  halts: all tie at S, the highest final sigmoid(q_halt) wins. Exactness of that answer against the
  label (the early-stop view's ``es_correct`` of the chosen pass). Unlike the early-stop view, which
  reports each pass read at its own halt, this selects one pass of the ensemble per puzzle.
- ``verified_any``: fraction of puzzles for which at least one pass (halted or not) produced
  a verified answer. For puzzles with a unique solution (all of Sudoku-Extreme) a verified
  answer IS the solution, so this is the ceiling of any verifier-based selection.
- Curves: subset (k', p') = the LAST k' checkpoints (k' = 1 is the primary one) and the
  FIRST p' passes (p' = 1 is the unperturbed input); every k' x p' is computed.
- Early-stop view (``summary()["early_stop_view"]``): the same passes read at the first
  segment where the model halts (else the last), i.e. what ``early_stop=True`` returns,
  at no extra cost; reported apart from the paper's numbers.
- Per segment: exact accuracy of the answer after segment s = 1..S (argmax of that
  segment's logits; frozen after an early stop). ``stable_from``: the first segment from
  which the answer is right and stays right to the end (0 = never): the "critical step"
  (:func:`critical_step`, which hrm.analysis uses too).
- Calibration: sigmoid(q_halt) at the final segment vs exact correctness, and per-cell
  max-softmax probability at the final segment vs cell correctness over blank cells:
  equal-width bins on [0, 1], ECE = sum_b n_b / n * |acc_b - conf_b|, Pearson r, Brier score.

Mazes (hrm.tasks ``MAZE.rules``; Sudoku's are ``SUDOKU.rules``, one code path; the task is always
passed): the
``swap`` perturbation (at most 2 passes, pass 1 exchanges S and G in input and label, the fork's);
``paper_vote`` is the fork's maze rule (any pass of any checkpoint exactly right, halting not
required); the verifier is ``hrm.maze.verify_paths`` (an optimal S-G path, no label read); the
"blank" cells are the open cells; easy tiers leave k path cells unmarked; the analysis' error
measure is ``hrm.maze.broken_path_cells``.

The modules (one concern each; import each name from its module: this package imports none, so that
a task module can take the generic pieces without a cycle)
---------------------------------------------------------------------
``perturbations`` (Perturbations: each task draws its own kinds, Task.make_perturbations, and
hrm.tasks.make_perturbations finds the task of a kind), ``engine`` (Engine, EngineOutput, Runner,
segment_flops, auto_max_rows), ``selection`` (paper_vote, any_pass_solves, label_free_select,
first_to_halt), ``tiers`` (parse_tiers, reveal_tier, reveal_tier_rows), ``calibration`` (Histogram,
calibration, critical_step), ``results`` (EvalResult, EvalTotals), ``run`` (evaluate_puzzles). What knows a task
(its verifier, vote, error measure, tiers' cells, perturbations) is the task's: Task.rules
(hrm/tasks/).
"""
