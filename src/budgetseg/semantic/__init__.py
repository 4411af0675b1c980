"""The semantic segmentation wing: its task (task.py, DeepLabv3+ through smp), its metrics (metrics.py: mIoU and
the confusion matrix), its pseudo-label folder (pseudo.py: the only code that writes and reads them) and what
`budgetseg predict` writes for it (outputs.py)."""
