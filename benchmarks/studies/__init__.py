"""Finished studies: their figures are recorded and the alternative they measured was not adopted.

Kept runnable, from the repository root, as `python -m benchmarks.studies.<name>`:

- separable_resize: a Pillow-exact separable resize then a nearest gather, against the training warp in use.
  10% faster on AVX2, 40% slower on AVX-512, so the warp stayed (benchmarks/README.md, 2026-12-07).
- pairing_batching: RCM and pairing per example or per batch. Both cost little, and per batch cost more at
  448 px, so the pipeline stays per example (benchmarks/README.md, 2026-12-07).
- demo_tail: is the demo's tail hard to see or hard to find? The tiny backbone tells fan from fork from a crop
  about the tail (0.986) and not from the whole image (chance): hard to find, not hard to see. The demo's
  classes were kept as they are (docs/experiments.md).
"""
