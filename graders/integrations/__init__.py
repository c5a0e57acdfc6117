"""Graders as other trainers' reward functions: TRL (``_trl``), verl (``_verl``), OpenRLHF (``_openrlhf``).

``_common`` holds what they share: building a grader from a config or the
``RFTKIT_GRADER`` file, a trainer row's reference and item, per-field scores.
Each adapter calls the grader's row-level call; none imports torch or the
trainer. The public face is :mod:`graders.adapters` (a file verl and OpenRLHF can
load by path); a new integration is one module here and its names there.
"""
