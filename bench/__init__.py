"""darch's benchmark suite: one script per figure, results in ``bench/results/<name>.json``.

Run them all with ``python -m bench [--quick] [NAME ...]``, which also regenerates the results table in
``bench/README.md``. Each script also runs on its own: ``python bench/<name>.py [--quick]``.

Benchmarks never affect test pass/fail; they record figures against goals and anchors.
"""
