"""Settings that keep the real inference worker cheap in multi-process tests on a busy 2-core box.

The real POCO, not a stand-in: the lighter PARE variant on eager torch (named: the default on
a CPU is onnx, whose export would go into the data dir), one thread, no SMPL, random weights
without BatchNorm calibration (fp32 on CPU does not need it), and a data dir that does not
exist so a user's weights in data/ never change what a test runs.
"""
INFERENCE_FAST = ("{backend: torch, model: poco-pare, smpl: 'off', threads: 1, data_dir: /nonexistent-posepipe-data, "
                  "backend_options: {calibrate_bn: false, seed: 0}}")
