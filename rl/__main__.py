"""``python -m rl``: the ``rftkit`` command line, so that ``torchrun --nproc_per_node 2 -m rl train CONFIG`` starts it.

``python -m rl train CONFIG`` is ``rftkit train CONFIG``; torchrun runs a module by name
(``-m``), not a console script, unless it is given the script's path (``$(which rftkit)``).
"""

from graders._cli import main

if __name__ == "__main__":
    main()
