"""The numbered preprocessing commands of the original's README, each a script run from the repository root:
``preprocess_a`` (resample, peak 0.6), ``preprocess_f0`` (F0), ``preprocess_spec`` (mel), ``preprocess_hubert``
(content units), ``preprocess_speaker`` (speaker embeddings), ``preprocess_speaker_ave`` (each singer's mean embedding
and F0 statistics), ``preprocess_train`` (the train / valid file lists) and ``preprocess_zzz`` (the dataset check)."""
