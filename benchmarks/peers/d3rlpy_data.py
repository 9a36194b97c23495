"""What both d3rlpy peer scripts share: our exported transitions as an MDPDataset, and the
[256, 256] encoder every network uses. Runs in ./.venv-peers, imported from the scripts' folder."""

import numpy as np


def load_dataset(path: str):
    """The `peers.to_d3rlpy_npz` arrays at `path` as a d3rlpy MDPDataset."""
    import d3rlpy

    d = np.load(path)
    return d3rlpy.dataset.MDPDataset(
        observations=d["observations"], actions=d["actions"], rewards=d["rewards"],
        terminals=d["terminals"], timeouts=d["timeouts"],
    )  # fmt: skip


def encoder():
    """Plain [256, 256] MLP encoders, the same sizes as ours."""
    import d3rlpy

    return d3rlpy.models.VectorEncoderFactory(hidden_units=[256, 256])
