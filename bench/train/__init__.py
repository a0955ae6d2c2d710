"""The training kit plug-ins build on: batches, the resumable training loop, supervised
training, devices and precision, checkpoints, SIGTERM handling, image grids. Below `nn`
and the run orchestration (`bench.engine`), so a method never depends on the runner."""
