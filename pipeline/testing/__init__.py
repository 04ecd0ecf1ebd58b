"""Synthetic data builders for tests (no licensed files, no downloads).

    from pipeline.testing import make_synthetic_smpl, make_mean_params, make_checkpoint

May import: torch, numpy and `pipeline.models`. Used by tests and tools only.
"""
from pipeline.testing.smpl_files import make_mean_params, make_synthetic_smpl
from pipeline.testing.checkpoints import build_random_model, make_checkpoint, official_state_dict

__all__ = ["make_synthetic_smpl", "make_mean_params", "make_checkpoint", "build_random_model",
           "official_state_dict"]
