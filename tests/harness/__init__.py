"""What the tests and the benches share, and the only part of `tests` a bench imports.

servers      processes and in-process servers on free ports, waited on until ready
sim_model    the simulated model server (a batch takes a set time): `python -m` it
open_loop    an open-loop load generator, every answer recorded: `python -m` it
connections  thousands of client connections held on one proxy
simulation   the proxy's batching on a fake clock; the simulated models and their floor
stores       SeaweedFS (a real S3 server) and Azurite, started on free ports
repos        real Git repositories, commits, stored versions
models       tiny real models (TorchScript, ONNX, a CNN) made in place
faults       a model-server handler that can be told to fail, slow down or stall
browser      Debian's chromium under Selenium, headless and offline

It imports nothing else from `tests` and nothing from `bench` (lint-imports holds both).
"""
