"""NSF-BigVGAN vocoder: log-mel (100 x T, 10 ms frames) + F0 (Hz) -> 32 kHz audio.

``bigvgan.model``: ``Generator``, ``load_bigvgan`` (official ``nsf_bigvgan_pretrain_32K.pth``), ``vocode``
(bounded-memory chunked synthesis), ``to_int16``; ``bigvgan.generator_cpu``: the generator's CPU inference path;
``bigvgan.weightnorm``: the weight-normed convolutions; ``bigvgan.alias``: the anti-aliased SnakeBeta.
``bigvgan.griffinlim``: a preview-quality fallback without
weights. ``bigvgan/inference.py``: the command line.
"""
