"""Settings that keep the real inference worker cheap in multi-process tests on a busy 2-core box.

The real POCO, not a stand-in: the lighter PARE variant on eager torch (named: the default on
a CPU is onnx, whose export would go into the data dir), one thread, no SMPL, random weights
without BatchNorm calibration (fp32 on CPU does not need it). A user's weights in data/ never
change what a test runs: tests/conftest.py points POSEPIPE_DATA_DIR at a folder of the test.
"""
INFERENCE_FAST = ("{backend: torch, model: poco-pare, smpl: 'off', threads: 1, "
                  "backend_options: {calibrate_bn: false, seed: 0}}")
