"""budgetseg: budget-aware semi-supervised semantic and instance segmentation."""

__version__ = "0.1.0"
