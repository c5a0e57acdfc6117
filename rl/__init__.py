"""rftkit.rl: the compact PPO trainer (rollout -> grade -> advantages -> update).

Not built yet: the trainer, the ``train`` command and the RL demo are the next
milestone. This package is the only one that will import torch; ``graders`` and
``schemas`` never do.
"""

__all__: list[str] = []
