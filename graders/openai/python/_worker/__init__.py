"""The python grader's sandbox, seen from inside: the program the grading process starts, standard library only.

Run by path (``python -I -B .../_worker/__main__.py REQ CTL LIFE SOCK MODE``, see
:mod:`.__main__`). Nothing here imports :mod:`graders` or anything outside the
standard library: the sandbox sees none of the grading process. This file imports
nothing either, so the grading process can import :mod:`._procs` cheaply.

Three kinds of process, each with one job:

* the **supervisor** (:mod:`._supervisor`, the program as started) enters new
  user, network, PID and IPC namespaces, forks the template, reports its exit,
  and kills everything if the grading process dies;
* the **template** (:mod:`._template`, the namespace's PID 1) confines itself
  once: every mount read-only but its private temp dir, a fresh ``/proc`` and a
  minimal ``/dev``, no capability, non-dumpable, the audit hook and the resource
  limits; then it runs the source's top level once and hands each request to a
  grade child forked and confined ahead;
* a **grade child** (:mod:`._grade`) takes a fresh private temp dir, forbids new
  processes and ``exec`` with a seccomp filter unless subprocesses are allowed,
  grades its samples, writes one reply frame per sample, and exits.

The other modules are what they share: the Linux confinement steps
(:mod:`._confine`), the audit hook (:mod:`._audit`), the frame format on the pipes
(:mod:`._frames`) and process trees (:mod:`._procs`).

The reply pipe of a grade is held by that grade's child alone (the template keeps
a copy only to report the exit status), so whatever user code does to its own
process (replacing ``float``, ``json.dumps``, this package's functions, or writing
frames on the pipe) reaches that grade's replies and no other; the grading process
validates every frame. See docs/graders/python.md for what is and is not confined.
"""
