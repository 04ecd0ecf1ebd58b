"""Pose maths shared by sinks, metrics and models: the published frame (`frame.PosesFrame`,
one `Person` per detected body, smplx field names), rotation conversions (`rotations`), the
SMPL kinematic tree and forward kinematics on a rest skeleton (`skeleton`), and One-Euro
smoothing on rotations (`smoothing`).

May import: numpy and `pipeline.runtime.records` (the ring layout a frame is read from).
Nothing here opens a socket, a file or a device.
"""
