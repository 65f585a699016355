"""Shared utilities of Grad-SVC: config schema, audio I/O, the mel, checkpoint and file-loop helpers, figures,
multi-process helpers, the window planner of long inputs (``windows``).

Dependency direction: scripts -> conversion -> feature/model packages (hubert, pitch, speaker, grad, bigvgan) -> common.
Nothing in ``common`` imports from those packages.
"""
