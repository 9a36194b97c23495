"""flywheel: a robot-learning data flywheel (corpus -> retrain -> refine -> deploy)."""

__version__ = "0.1.0"
