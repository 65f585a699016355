"""Acoustic model of Grad-SVC: units + F0 + speaker -> prior encoder -> U-Net decoder -> 100-band log-mel (100 Hz).

Modules: ``model`` (``GradSVC``), ``encoder`` (prior encoder with the adversarial speaker classifier),
``estimator`` (the reference U-Net), ``estimator_cpu`` (its CPU inference forward), ``diffusion`` (V2 score
decoder), ``flow`` (V3 flow matching / rectified flow), ``samplers`` (every sampler, chosen by name), ``noise``
(sampling noise tied to frame positions, for windowed synthesis), ``checkpoint`` (official / training / our
checkpoints), ``ssim`` (the mel SSIM loss), ``utils`` (coarse F0, padding, masks), ``data`` (dataset and batches).
"""
