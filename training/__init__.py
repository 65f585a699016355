"""Training machinery of Grad-SVC used by ``gvc_trainer.py`` (which holds the command line and the loop itself).

Modules: ``state`` (what a run holds, and building it: datasets, model, optimizer, fine-tuning, frozen parts),
``checkpoints`` (exact resume: training checkpoint files, RNG and sampler positions, rotation, refusing another
run's folder), ``checks`` (feature files, speaker encoder and pretrained files checked before any work),
``validation`` (validation losses and preview synthesis into TensorBoard).
Multi-process helpers are in ``common.distributed``, the figures in ``common.plots``.
"""
