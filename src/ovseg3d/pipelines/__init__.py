"""The offline pipelines as library functions: what `ovseg3d extract / infer / query / eval / replay`
run, callable directly by the demo, the benchmarks and other programs (no argv in between).

``context`` builds the one thing every student-facing step needs (student, text encoder, label
set, vocabulary, with their dimensions checked); each other module is one step. The commands in
``ovseg3d.commands`` only parse arguments and print.
"""
